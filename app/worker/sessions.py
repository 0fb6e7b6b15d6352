"""`SessionManager`: the durable record of one conversation.

Persistence never blocks the conversation: every write is an operation on a bounded
per-session queue, executed in order by one writer task. A failed write is retried
with capped backoff while later ones wait behind it (order matters: a turn must not
land before its session row). What still cannot be written when the session closes
(a store outage outlasting the call) is handed, in order, to the process's
`PendingWrites` buffer, which keeps retrying on the worker's own loop and flushes when
the store is back; only what overflows that bound, or is left at process exit, is
dropped — and then logged as an ERROR with the session id and the payload (turn text,
fields), so it can be recovered from the logs. Never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from app.domain import (
    Handoff,
    SessionRecord,
    SessionStatus,
    StoreUnavailable,
    Turn,
)
from app.domain.models import utcnow
from app.store.base import ConfigStore
from app.store.sql import deep_merge

log = logging.getLogger("app.sessions")

Op = Callable[[], Coroutine[Any, Any, Any]]
Caller = Callable[[Coroutine[Any, Any, Any]], Coroutine[Any, Any, Any]]
Item = tuple[str, Op, Any]
"""(name, operation, payload): the payload is what the write carries, for the logs."""
Spill = Callable[[str, list[Item]], None]
"""Takes a closing session's unwritten items, in order (`PendingWrites.adopt`)."""


def _payload_text(payload: Any, limit: int = 4000) -> str:
    try:
        text = json.dumps(payload, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(payload)
    return text if len(text) <= limit else text[:limit] + f"...(+{len(text) - limit} chars)"


def log_lost(session_id: str, items: list[Item], why: str) -> None:
    """The last resort: one ERROR line per write, with its payload."""
    for name, _op, payload in items:
        log.error("session %s: %s not stored (%s); payload: %s", session_id, name, why, _payload_text(payload))


async def _direct(coro: Coroutine[Any, Any, Any]) -> Any:
    return await coro


class SessionManager:
    """Implements `app.agents.context.SessionRecorder` on top of a `ConfigStore`."""

    def __init__(
        self,
        store: ConfigStore | None,
        record: SessionRecord,
        *,
        call: Caller = _direct,
        max_queue: int = 2000,
        retry_max_delay: float = 2.0,
        flush_timeout: float = 10.0,
        spill: Spill | None = None,
    ) -> None:
        self._store = store
        self.record = record
        self._call = call
        self._spill = spill
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=max_queue)
        self._retry_max_delay = retry_max_delay
        self._flush_timeout = flush_timeout
        self._writer: asyncio.Task[None] | None = None
        self._inflight: Item | None = None
        self._seq = len(record.turns)
        self._collected: dict[str, Any] = dict(record.collected)
        self._agent_id = record.agent_id
        self._finish: tuple[SessionStatus, str, str | None] | None = None
        self._user_metrics: tuple[int, dict[str, Any]] | None = None
        """The last user turn's seq and LiveKit metrics, until an assistant turn answers it."""
        self._closed = False
        self.failed_writes = 0
        self.dropped: list[str] = []
        self.spilled = 0
        """Writes handed to the process buffer at close (the store was down)."""

    # ------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        # A copy: later turns/handoffs mutate self.record and have their own writes.
        record = self.record.model_copy(deep=True)
        self._enqueue("start_session", lambda: self._store.start_session(record),  # type: ignore[union-attr]
                      {"session_id": record.session_id, "agent_id": record.agent_id, "room": record.room})
        self._writer = asyncio.create_task(self._write_loop(), name=f"session-writer-{record.session_id}")

    def attach(self, session: Any) -> None:
        """Subscribe to a LiveKit `AgentSession`'s events."""
        session.on("conversation_item_added", self._on_item)
        session.on("close", self._on_close)

    async def aclose(self, status: SessionStatus | None = None, reason: str | None = None) -> None:
        """Finish the record (unless already finished) and flush what is queued."""
        if self._closed:
            return
        if status is not None and self._finish is None:
            self._finish = (status, reason or status.value, None)
        status_, reason_, error = self._finish or (SessionStatus.completed, "closed", None)
        sid = self.record.session_id
        self._enqueue(
            "finish_session",
            lambda: self._store.finish_session(sid, status_, reason_, error),  # type: ignore[union-attr]
            {"status": str(status_.value if hasattr(status_, "value") else status_), "reason": reason_},
        )
        self._closed = True
        await self.flush(self._flush_timeout)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        left = [self._inflight] if self._inflight else []
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        if not left:
            return
        names = [name for name, _op, _payload in left]
        if self._spill is not None:
            self._spill(sid, left)
            self.spilled += len(left)
            log.warning(
                "session %s: %d record write(s) not stored by close (store unavailable or backed "
                "up); handed to the process buffer to retry: %s", sid, len(left), ", ".join(names),
            )
            return
        self.dropped.extend(names)
        log.error(
            "session %s: %d record write(s) could not be stored before close: %s",
            sid, len(left), ", ".join(names),
        )
        log_lost(sid, left, "session closed while the store was unavailable")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    # ------------------------------------------------- SessionRecorder protocol

    @property
    def collected(self) -> dict[str, Any]:
        return self._collected

    @property
    def agent_id(self) -> str:
        return self._agent_id

    def record_data(self, data: dict[str, Any]) -> None:
        self._collected = deep_merge(self._collected, data)
        sid, payload = self.record.session_id, dict(data)
        self._enqueue("record_data", lambda: self._store.record_data(sid, payload), payload)  # type: ignore[union-attr]

    def record_handoff(self, from_agent: str, to_agent: str, reason: str | None) -> None:
        handoff = Handoff(from_agent=from_agent, to_agent=to_agent, reason=reason)
        self.record.handoffs.append(handoff)
        sid = self.record.session_id
        self._enqueue("record_handoff", lambda: self._store.record_handoff(sid, handoff),  # type: ignore[union-attr]
                      handoff.model_dump(mode="json"))

    def set_agent(self, agent_id: str, version: int) -> None:
        self._agent_id = agent_id

    def finish(self, status: SessionStatus, reason: str) -> None:
        if self._finish is None:
            self._finish = (status, reason, None)

    # -------------------------------------------------------------- turns

    def add_turn(self, role: str, text: str) -> Turn:
        turn = Turn(seq=self._seq, role=role, text=text, at=utcnow(), agent_id=self._agent_id)  # type: ignore[arg-type]
        self._seq += 1
        self.record.turns.append(turn)
        sid = self.record.session_id
        self._enqueue("append_turn", lambda: self._store.append_turn(sid, turn),  # type: ignore[union-attr]
                      {"seq": turn.seq, "role": turn.role, "text": turn.text})
        return turn

    def _on_item(self, ev: Any) -> None:
        item = getattr(ev, "item", None)
        if getattr(item, "type", None) != "message":
            return
        role = getattr(item, "role", None)
        text = getattr(item, "text_content", None)
        if role in ("user", "assistant") and text:
            turn = self.add_turn(role, text)
            self._on_turn_metrics(turn, item)

    # ------------------------------------------------------------ metrics

    def _on_turn_metrics(self, turn: Turn, item: Any) -> None:
        """Per-turn voice latency, from LiveKit's `ChatMessage.metrics` (1.8: the
        `metrics_collected` event is deprecated in favour of these).

        A user message carries the end-of-turn figures; the assistant message that
        answers it carries the model/TTS figures and `e2e_latency` (end of user speech
        → first agent audio frame played). One entry per assistant message that played
        audio (voice sessions only: text sessions write nothing extra), appended to
        `SessionRecord.metrics` and stored by rewriting that list (`update_session`).
        """
        m = getattr(item, "metrics", None) or {}
        if turn.role == "user":
            self._user_metrics = (turn.seq, dict(m))
            return
        if "started_speaking_at" not in m and "e2e_latency" not in m:
            return  # no audio played: a text session, or interrupted before the first frame
        user_seq, um = self._user_metrics or (None, {})
        self._user_metrics = None
        entry = turn_metrics_entry(turn, m, um, user_seq=user_seq, interrupted=bool(getattr(item, "interrupted", False)))
        self.record.metrics.append(entry)
        sid, snapshot = self.record.session_id, [dict(e) for e in self.record.metrics]
        self._enqueue("update_metrics", lambda: self._store.update_session(sid, metrics=snapshot),  # type: ignore[union-attr]
                      entry)

    def _on_close(self, ev: Any) -> None:
        error = getattr(ev, "error", None)
        reason = getattr(getattr(ev, "reason", None), "value", None) or "closed"
        if self._finish is None:
            if error is not None:
                self._finish = (SessionStatus.failed, reason, str(error)[:1000])
            elif reason == "job_shutdown":
                # The worker ended the job under a live conversation (PROCESS-executor
                # shutdown, no goodbye possible): the caller did not finish.
                self._finish = (SessionStatus.abandoned, "server shutting down", None)
            else:
                self._finish = (SessionStatus.completed, reason, None)

    # -------------------------------------------------------------- writer

    def _enqueue(self, name: str, op: Op, payload: Any = None) -> None:
        if self._store is None:
            return
        if self._closed:
            self.dropped.append(name)
            log_lost(self.record.session_id, [(name, op, payload)], "written after the session closed")
            return
        try:
            self._queue.put_nowait((name, op, payload))
        except asyncio.QueueFull:
            # Bounded memory beats an unbounded backlog; say exactly what was lost.
            self.dropped.append(name)
            log.error(
                "session %s: write queue full (%d); %s not stored",
                self.record.session_id, self._queue.maxsize, name,
            )
            log_lost(self.record.session_id, [(name, op, payload)], "session write queue full")

    async def _write_loop(self) -> None:
        while True:
            item = await self._queue.get()
            self._inflight = item  # left set if we are cancelled mid-retry: aclose hands it on
            try:
                await self._run_with_retry(item[0], item[1])
                self._inflight = None
            finally:
                self._queue.task_done()

    async def _run_with_retry(self, name: str, op: Op) -> None:
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._call(op())
                return
            except StoreUnavailable as e:
                self.failed_writes += 1
                if attempt == 1 or attempt % 20 == 0:
                    log.warning(
                        "session %s: %s failed (%s); retrying", self.record.session_id, name, e.message
                    )
            except Exception:
                # Not an outage (a bug or a constraint): retrying will not help.
                self.failed_writes += 1
                self.dropped.append(name)
                log.exception("session %s: %s failed permanently", self.record.session_id, name)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max_delay)


def _ms(value: Any) -> float | None:
    return round(float(value) * 1000, 1) if isinstance(value, (int, float)) and value >= 0 else None


def turn_metrics_entry(
    turn: Turn, assistant: dict[str, Any], user: dict[str, Any], *, user_seq: int | None, interrupted: bool
) -> dict[str, Any]:
    """One `SessionRecord.metrics` entry (milliseconds; a figure LiveKit did not report
    is null, e.g. the end-of-turn ones for a greeting or a re-prompt, which answer no
    user turn):

    - `seq` / `user_seq`: the assistant turn and the user turn it answers;
    - `eou_delay_ms`: end of user speech (VAD) → turn committed (`end_of_turn_delay`);
    - `transcription_delay_ms`: end of user speech → final transcript;
    - `llm_ttft_ms`: LLM time to first token (`llm_node_ttft`);
    - `tts_ttfb_ms`: TTS time to first audio byte after its first text (`tts_node_ttfb`);
    - `total_ms`: end of user speech → first agent audio frame played (`e2e_latency`);
    - `speech_ms`: how long the agent's audio played; `interrupted`: cut by the user.
    """
    started, stopped = assistant.get("started_speaking_at"), assistant.get("stopped_speaking_at")
    return {
        "seq": turn.seq,
        "user_seq": user_seq,
        "agent_id": turn.agent_id,
        "at": turn.at.isoformat(),
        "eou_delay_ms": _ms(user.get("end_of_turn_delay")),
        "transcription_delay_ms": _ms(user.get("transcription_delay")),
        "llm_ttft_ms": _ms(assistant.get("llm_node_ttft")),
        "tts_ttfb_ms": _ms(assistant.get("tts_node_ttfb")),
        "total_ms": _ms(assistant.get("e2e_latency")),
        "speech_ms": _ms(stopped - started) if isinstance(started, float) and isinstance(stopped, float) else None,
        "interrupted": interrupted,
    }


class PendingWrites:
    """Process-wide, bounded buffer for session writes that outlived their session.

    Why: a store outage can outlast a call. The session's own writer dies with the
    session (in THREAD mode, with the job's event loop), so its unwritten turns and
    fields are handed over here, and one task on the worker's own loop (the store's)
    retries them in order, per session, until the store answers: buffered within a
    bound (`max_items`), flushed on recovery. Past the bound, and whatever is left when
    the process stops, is logged with its payload (`log_lost`) — never silently dropped.
    `adopt` may be called from any thread.
    """

    def __init__(self, *, max_items: int = 50_000, retry_max_delay: float = 5.0) -> None:
        self._max = max_items
        self._retry_max_delay = retry_max_delay
        self._lock = threading.Lock()
        self._batches: deque[tuple[str, deque[Item]]] = deque()
        self._count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.lost = 0
        self.last_error: str | None = None

    def __len__(self) -> int:
        return self._count

    def start(self) -> None:
        """Start the retry task on the running loop (the store's owner loop)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pending-session-writes")

    def adopt(self, session_id: str, items: list[Item]) -> None:
        """Take a closing session's unwritten items (in order); thread-safe."""
        overflow: list[Item] = []
        with self._lock:
            room = max(0, self._max - self._count)
            keep, overflow = items[:room], items[room:]
            if keep:
                self._batches.append((session_id, deque(keep)))
                self._count += len(keep)
        if overflow:
            self.lost += len(overflow)
            log_lost(session_id, overflow, f"process write buffer full ({self._max})")
        if keep and self._loop is not None and self._wake is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def flush(self, timeout: float) -> bool:
        """Wait until the buffer is empty; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._count:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        """Give the store `timeout` seconds, then log whatever is left with its payload."""
        if self._count and self._task is not None:
            await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with self._lock:
            batches, self._batches, self._count = list(self._batches), deque(), 0
        for sid, items in batches:
            self.lost += len(items)
            log_lost(sid, list(items), "process stopped while the store was unavailable")

    async def _run(self) -> None:
        assert self._wake is not None
        delay = 0.1
        while True:
            if not self._count:
                self._wake.clear()
                await self._wake.wait()
            with self._lock:
                sid, items = self._batches[0]
            name, op, payload = items[0]
            try:
                await op()
            except StoreUnavailable as e:
                self.last_error = e.message
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_delay)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a constraint or a bug: retrying will not help
                if not (name == "start_session" and type(e).__name__ == "AlreadyExists"):
                    self.lost += 1
                    log.exception("session %s: buffered %s failed permanently", sid, name)
                    log_lost(sid, [(name, op, payload)], f"{type(e).__name__}")
            else:
                self.written += 1
            delay = 0.1
            with self._lock:
                items.popleft()
                self._count -= 1
                if not items:
                    self._batches.popleft()
                    log.info("session %s: buffered record writes stored", sid)
