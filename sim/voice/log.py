"""A timeline of a voice session: LiveKit's session events and the sim's audio, stamped
with wall and audio time. Voice checks read it; failures print the step's part of it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sim.voice.clock import SimClock

if TYPE_CHECKING:
    from sim.voice.expect import StepWindow
    from sim.voice.io import SimAudioOutput


@dataclass
class Entry:
    wall: float
    t: float
    kind: str
    text: str
    data: Any = None


class VoiceLog:
    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.entries: list[Entry] = []
        self._waiters: list[asyncio.Future[None]] = []

    def attach(self, session: Any) -> None:
        session.on("user_state_changed", lambda ev: self.add("user_state", ev.new_state))
        session.on("agent_state_changed", lambda ev: self.add("agent_state", ev.new_state))
        session.on("user_input_transcribed", lambda ev: self.add("transcript", ev.transcript) if ev.is_final else None)
        session.on("conversation_item_added", self._on_item)
        session.on("speech_created", lambda ev: self.add("speech_created", ev.source, ev.speech_handle))
        session.on("error", lambda ev: self.add("error", repr(getattr(ev, "error", ev))[:300]))

    def _on_item(self, ev: Any) -> None:
        item = ev.item
        if getattr(item, "type", None) == "message" and item.role in ("user", "assistant"):
            flag = " (interrupted)" if getattr(item, "interrupted", False) else ""
            self.add(f"{item.role}_message", (item.text_content or "") + flag, item)
        elif getattr(item, "type", None) == "agent_handoff":
            self.add("handoff", f"{item.old_agent_id} -> {item.new_agent_id}", item)

    def add(self, kind: str, text: str, data: Any = None) -> None:
        self.entries.append(Entry(time.perf_counter(), self.clock.now(), kind, str(text), data))
        waiters, self._waiters = self._waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until the next entry (or `timeout` wall seconds)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(fut, max(0.0, timeout))
        except TimeoutError:
            pass

    def has(self, kind: str, *, since: int = 0) -> bool:
        return any(e.kind == kind for e in self.entries[since:])

    def window(self, lo: int, hi: int | None) -> list[Entry]:
        return self.entries[lo:hi]

    def render(self, w: StepWindow, output: SimAudioOutput) -> str:
        entries = self.window(w.log_from, w.log_to)
        rows: list[tuple[float, str]] = [(e.t, f"{e.kind}: {e.text}") for e in entries if e.kind != "speech_created"]
        for seg in output.segments[w.out_from : w.out_to]:
            rows.append((seg.started, f"agent audio #{seg.index} starts"))
            if seg.finished is not None:
                how = "cut (interrupted)" if seg.interrupted else "played out"
                rows.append((seg.finished, f"agent audio #{seg.index} {how}: {seg.played_s:.2f}s of {seg.pushed_s:.2f}s"))
        for p in w.mic_segments():
            rows.append((p.start, f"mic {p.kind} starts: {p.label}"))
            rows.append((p.end, f"mic {p.kind} ends"))
        if not rows:
            return "voice timeline: (nothing)"
        rows.sort(key=lambda r: r[0])
        t0 = rows[0][0]
        return "voice timeline (audio seconds):\n" + "\n".join(f"  +{t - t0:6.2f}s  {text}" for t, text in rows)
