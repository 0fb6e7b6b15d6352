"""Voice checks: what a step did on the audio path, and the latency metrics stored.

Per step (`VoiceExpect`, always checked, offline and live):
- a user turn's speech was detected by the VAD: the session's user state went to
  "speaking" after the speech began, and back (`speech_segments`: exactly N such
  segments in the step, e.g. 1 when background noise must trigger nothing);
- the transcript reached the model: the committed user message is the turn's text, and
  a chat completion request of the step ends with it as the user's message;
- every assistant message of the step played audio (LiveKit stamps
  `metrics.started_speaking_at` on a message only when its first frame played) and
  the speaker recorded one playback segment per message;
- `interrupted`: a reply was cut by the user (its playback cleared before the end, the
  message marked interrupted) — or, with false, none was.

Per session (`VoiceSessionExpect`): `SessionRecord.metrics` (entry count, complete
figures for the entries that answer a user turn, interruptions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from livekit.agents.voice.run_result import ChatMessageEvent

from app.domain.loading import format_location
from sim.expect import short
from sim.fake_openai import CapturedRequest, _content_text
from sim.report import Checks, Loc
from sim.voice.spec import VoiceExpect, VoiceSessionExpect

if TYPE_CHECKING:
    from app.domain import SessionRecord
    from sim.llm import SessionLLM
    from sim.scenario import EndpointSpec, LatencyBudget
    from sim.voice.io import PlayedSegment, SpokenSegment
    from sim.voice.runner import StepState, VoiceDriver

def p95(values: Sequence[float]) -> float:
    """The 95th percentile by nearest rank (of 20 turns, the 19th fastest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def check_latency_budget(
    checks: Checks, budget: LatencyBudget, samples: Sequence[tuple[Loc, float]], endpoints: Mapping[str, EndpointSpec]
) -> None:
    """The scenario's `latency_budget` over every user turn's end-to-end latency (end of
    the user's speech to the agent's first audio, wall time). The scripted provider
    delays are listed with a failure: the rest of the time is ours (VAD end of turn,
    plugins, session, tools, record writes) and LiveKit's."""
    loc: Loc = ("latency_budget",)
    if len(samples) < budget.min_turns:
        checks.fail((*loc, "min_turns"), "too few user turns were measured for the latency budget",
                    expected=f">= {budget.min_turns}", actual=len(samples))
        return
    got = p95([ms for _, ms in samples])
    delays = [f"{name}: {d.chat:g} / {d.transcriptions:g} / {d.speech:g} ms"
              for name, spec in sorted(endpoints.items()) if (d := spec.delay_ms) and (d.chat or d.transcriptions or d.speech)]
    context = "\n".join(
        ["turns (end of speech -> first agent audio):"]
        + [f"  {format_location(at)}: {ms:.0f} ms" for at, ms in samples]
        + ["scripted provider delays (chat / transcriptions / speech):"]
        + [f"  {d}" for d in delays or ["none"]]
    )
    if got > budget.turn_p95_ms:
        checks.fail((*loc, "turn_p95_ms"), f"end-to-end turn latency p95 over the budget ({len(samples)} turns)",
                    expected=f"<= {budget.turn_p95_ms:g} ms", actual=f"{got:.0f} ms", context=context)


METRIC_FIELDS = ("eou_delay_ms", "tts_ttfb_ms", "total_ms")
"""What every entry answering a user turn has. `llm_ttft_ms` too when the model wrote the
reply; a greeting spoken right after a handoff (`say`) answers the turn without it."""


@dataclass
class StepWindow:
    """Where a step starts (and ends) in each of the session's growing records."""

    driver: VoiceDriver
    req_from: int
    out_from: int
    log_from: int
    tts_from: int
    stt_from: int
    mic_from: int
    req_to: int | None = None
    out_to: int | None = None
    log_to: int | None = None
    tts_to: int | None = None
    stt_to: int | None = None
    mic_to: int | None = None

    @classmethod
    def open(cls, d: VoiceDriver, llm: SessionLLM) -> StepWindow:
        return cls(d, len(llm.requests), len(d.output.segments), len(d.log.entries),
                   len(d.audio.speech_requests), len(d.audio.transcriptions), len(d.mic.played))

    def close(self, d: VoiceDriver, llm: SessionLLM) -> None:
        if self.req_to is not None:
            return
        self.req_to, self.out_to, self.log_to = len(llm.requests), len(d.output.segments), len(d.log.entries)
        self.tts_to, self.stt_to, self.mic_to = len(d.audio.speech_requests), len(d.audio.transcriptions), len(d.mic.played)

    def requests(self, llm: SessionLLM) -> list[CapturedRequest]:
        return llm.requests[self.req_from : self.req_to]

    def segments(self) -> list[SpokenSegment]:
        return self.driver.output.segments[self.out_from : self.out_to]

    def mic_segments(self) -> list[PlayedSegment]:
        return self.driver.mic.played[self.mic_from : self.mic_to]

    def speech_inputs(self) -> list[str]:
        return [str(r.get("input", "")) for r in self.driver.audio.speech_requests[self.tts_from : self.tts_to]]


def last_user_text(req: CapturedRequest) -> str | None:
    for m in reversed(req.messages):
        if m.get("role") == "user":
            return _content_text(m.get("content"))
    return None


def check_voice_step(
    checks: Checks, loc: Loc, expect: VoiceExpect, driver: VoiceDriver, st: StepState,
    requests: Sequence[CapturedRequest], *, live: bool,
) -> None:
    w = st.window
    entries = driver.log.window(w.log_from, w.log_to)
    timeline = driver.timeline(st)
    if st.user is not None:
        _check_turn_detected(checks, loc, expect, st, entries, timeline)
        _check_transcript(checks, loc, st.user, entries, requests, timeline)
    assistant = [ev.item for ev in (st.result.events if st.result is not None else [])
                 if isinstance(ev, ChatMessageEvent) and ev.item.role == "assistant" and (ev.item.text_content or "")]
    segments = w.segments()
    if expect.audio:
        for item in assistant:
            checks.check("started_speaking_at" in (item.metrics or {}), (*loc, "audio"),
                         "an assistant message played no audio", expected="audio played for the message",
                         actual=f"no audio for {short(item.text_content or '')}")
        if len(segments) != len(assistant):
            checks.fail((*loc, "audio"), "playback segments do not match the assistant messages of the step",
                        expected=f"{len(assistant)} segment(s), one per message",
                        actual=f"{len(segments)} segment(s)", context=timeline)
        if assistant and not w.speech_inputs():
            checks.fail((*loc, "audio"), "the TTS was never asked to speak in this step", context=timeline)
    if expect.interrupted is not None:
        cut_msgs = [m for m in assistant if m.interrupted]
        cut_segs = [s for s in segments if s.interrupted and s.played_s < s.pushed_s]
        if expect.interrupted:
            if not cut_msgs or not cut_segs:
                checks.fail((*loc, "interrupted"), "no agent reply of this step was interrupted",
                            expected="a reply cut by the user: playback cleared early, message marked interrupted",
                            actual=f"{len(cut_segs)} segment(s) cut, {len(cut_msgs)} message(s) marked interrupted",
                            context=timeline)
            else:
                seg = cut_segs[0]
                barge = [p for p in driver.mic.played if p.kind == "speech"
                         and seg.started <= p.start < (seg.finished if seg.finished is not None else float("inf"))]
                checks.check(bool(barge), (*loc, "interrupted"), "the reply was cut, but not while the user spoke over it",
                             expected="user speech starting during the cut reply", actual="none")
        else:
            checks.check(not cut_msgs and not cut_segs, (*loc, "interrupted"), "an agent reply was interrupted",
                         expected="no interruption",
                         actual=f"{len(cut_segs)} segment(s) cut, {len(cut_msgs)} message(s) marked interrupted")
    if expect.max_first_audio_ms is not None and not live:
        if st.speech_end_wall is None or not segments:
            checks.fail((*loc, "max_first_audio_ms"), "no agent audio after the user's speech in this step", context=timeline)
        else:
            ms = (segments[0].started_wall - st.speech_end_wall) * 1000
            checks.check(ms <= expect.max_first_audio_ms, (*loc, "max_first_audio_ms"),
                         "end of user speech -> first agent audio took too long",
                         expected=f"<= {expect.max_first_audio_ms:g} ms", actual=f"{ms:.0f} ms")


def _check_turn_detected(checks: Checks, loc: Loc, expect: VoiceExpect, st: StepState, entries: Sequence[Any], timeline: str) -> None:
    speech = [p for p in st.window.mic_segments() if p.kind == "speech"]
    states = [(e.t, e.text) for e in entries if e.kind == "user_state"]
    segments = 0
    detected = False
    for i, (t, state) in enumerate(states):
        if state != "speaking":
            continue
        segments += 1
        ended = any(s in ("listening", "away") for _t, s in states[i + 1 :])
        if ended and speech and t >= speech[0].start - 0.1:
            detected = True
    if not detected:
        checks.fail((*loc, "speech"), "the VAD did not detect the user's speech (no start and end of speech)",
                    expected="user state speaking, then listening", actual=" -> ".join(s for _t, s in states) or "(no change)",
                    context=timeline)
    if expect.speech_segments is not None:
        checks.check(segments == expect.speech_segments, (*loc, "speech_segments"),
                     "number of VAD speech segments in this step", expected=expect.speech_segments, actual=segments)


def _check_transcript(checks: Checks, loc: Loc, user: str, entries: Sequence[Any], requests: Sequence[CapturedRequest], timeline: str) -> None:
    said = [e.text for e in entries if e.kind == "user_message"]
    if not said:
        checks.fail((*loc, "transcript"), "no user message was committed", expected=repr(user), actual="none", context=timeline)
        return
    checks.check(said[-1].strip() == user.strip(), (*loc, "transcript"), "the committed user message differs from the transcript",
                 expected=repr(user), actual=repr(said[-1]))
    got = [last_user_text(r) for r in requests]
    if not any((g or "").strip() == user.strip() for g in got):
        checks.fail((*loc, "transcript"), "no LLM request of this step ends with the transcript as the user's message",
                    expected=repr(user), actual=short(list(got)) if got else "no LLM request", context=timeline)


def check_voice_session(checks: Checks, loc: Loc, expect: VoiceSessionExpect | None, record: SessionRecord | None,
                        *, live: bool, realtime_tail: bool = False) -> None:
    if record is None:
        return  # reported by `record:` checks when a record is expected
    e = expect or VoiceSessionExpect()
    complete = e.metrics_complete if e.metrics_complete is not None else realtime_tail
    metrics = record.metrics
    listing = "stored metrics:\n" + "\n".join(f"  {m}" for m in metrics) if metrics else "stored metrics: (none)"
    if e.metrics is not None and not live:
        if len(metrics) != e.metrics:
            checks.fail((*loc, "metrics"), "number of per-turn metrics entries stored", expected=e.metrics,
                        actual=len(metrics), context=listing)
    if complete:
        for i, m in enumerate(metrics):
            if m.get("user_seq") is None:
                continue
            bad = [f for f in METRIC_FIELDS if not isinstance(m.get(f), (int, float)) or m[f] < 0]
            if bad:
                checks.fail((*loc, "metrics_complete"), f"metrics entry {i} (answering user turn {m.get('user_seq')}) lacks {', '.join(bad)}",
                            expected=", ".join(METRIC_FIELDS), actual=short(m, 400), context=listing)
    if e.interruptions is not None:
        n = sum(1 for m in metrics if m.get("interrupted"))
        checks.check(n == e.interruptions, (*loc, "interruptions"), "number of interrupted agent turns in the metrics",
                     expected=e.interruptions, actual=n)
