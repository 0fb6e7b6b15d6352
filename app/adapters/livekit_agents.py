"""livekit-agents: `stt.StreamAdapter` that segments on the session's primary VAD stream,
no chat-context JSON for a trace span that would drop it, the PII filter's key test
answered once per key, and LiveKit's tracer starting lean spans.

Written against livekit-agents 1.8.9: `_SegmentStream` subclasses the private
`livekit.agents.stt.stream_adapter.StreamAdapterWrapper` and uses its `_input_ch`,
`_event_ch`, `_FlushSentinel`, `_wrapped_stt` and `_wrapped_stt_conn_options`;
`_skip_dropped_chat_context` wraps `livekit.agents.telemetry.input_delta.compute` and
reads `telemetry.traces.tracer._tracer_provider`, `traces._cloud._trace_provider_attached`
and `pii._PIIFilteringSpanProcessor._allow_pii`; `_memoize_pii_keys` replaces
`telemetry.pii.is_pii_attribute`, which `pii._contains_pii` and `pii.filter_attributes`
call by that module-level name; `_lean_livekit_spans` wraps
`traces._DynamicTracer.set_provider` and sets its `_tracer`; `_direct_lean_calls` wraps its
`start_as_current_span`, `start_span` and `use_span` (and reads `traces._with_conversation_id`'s
rule: `job._JobContextVar`, `trace_types.ATTR_GEN_AI_CONVERSATION_ID`), and sets
`_recreate_cm` on the `_AgnosticContextManager` that LiveKit's tracer decorator left in the
closures of `voice.generation._llm_inference_task`, `_tts_inference_task` and
`voice.agent_activity.AgentActivity.drain`; `_pii_end_filter`
applies `pii._PIIFilteringSpanProcessor.on_end`'s rules through `pii._filter_events`,
`pii._contains_pii`, `pii.filter_attributes` and `telemetry.utils.redaction_enabled`;
`_attempt_spans_on_failure` replaces `llm.LLMStream._attempt_span` (its caller
`_main_task` only writes attributes to the span it yields) and reads the stream's
`_llm_attempt_span_name` and `_llm`, making a failed first attempt's span as
`_attempt_span` does (`gen_ai.set_request_attributes`, `telemetry.utils.record_exception`);
`_reuse_local_dataclasses` replaces the `dataclass` name `voice.agent_activity` imported,
which only the classes it defines inside functions still call after import.
`install()` checks the installed version; when it differs, `active()` is False, agents
get LiveKit's own `StreamAdapter` (`app.agents.audio.session_audio_models`) and the
telemetry functions and LiveKit's tracer are left alone.

`SegmentingSTT` is `stt.StreamAdapter` for the agent's STT whose stream runs no VAD of
its own: it cuts the utterance from the audio *it* was given (the STT pipeline's
frames, aligned with the primary VAD stream's sample positions through the frames both
received), at the primary's start/end of speech (`app.adapters.silero.SessionVAD`),
and sends it to the wrapped STT's `recognize()` exactly as `StreamAdapter` does. Where
LiveKit feeds the STT silence instead of the caller's audio (AEC warm-up,
uninterruptible speech), the segment is silence and is not transcribed, as
`StreamAdapter`'s own VAD would have heard nothing. With no primary stream (a session
without VAD turn detection), it falls back to its own stream, i.e. `StreamAdapter`'s
behaviour.

The chat context: while tracing, LiveKit serializes the whole chat context to JSON for
every `llm_node` span (`lk.pii.chat_ctx`, in `voice.generation._llm_inference_task`),
whether or not anything may receive it; with `TRACE_CONTENT` off the PII filter then
removes it before every exporter. That serialization grows with the conversation and was
the largest single CPU cost of tracing a text turn. Where the attribute is certain to be
dropped (the provider's PII filter strips `lk.pii.*`, no LiveKit Cloud exporter is
attached, which would get the unfiltered span, and no `input_delta` recording needs the
node's record), the node gets an empty chat context to serialize instead; everything
else the span records, and what the model receives, is unchanged.

The PII filter (`pii._PIIFilteringSpanProcessor.on_end`) asks `is_pii_attribute` about
every attribute of every span as it ends: a split of the key and three tests, on the
event loop, for the same few dozen keys all day. The answer depends on the key alone,
so it is kept per key (bounded: an unexpected stream of new keys only evicts).

LiveKit's tracer starts several spans per turn on the call's event loop; it gets
`app.adapters.opentelemetry_sdk.LeanTracer` (see there), with the PII filter registered
as the rule applied to what a lean span exports (on the export thread, as its batch is
encoded). LiveKit Cloud's exporter
needs the filter's stash of the raw attributes, which the lean path does not make: it
attaches processors of its own, and with them the provider's spans are the library's.
Around a lean tracer, LiveKit's tracer methods are called directly (`_direct_lean_calls`):
the same spans, attributes, statuses and exception events as its own wrapper, without
binding each call's arguments to the SDK's signature and three nested generator context
managers per span. One visible difference: a stack trace recorded for an exception (only
exported when PII may be) no longer shows the tracer's own `yield span` frame. And an LLM
request's first attempt gets a span of its own (`llm_request_run`) only when it fails
(`_attempt_spans_on_failure`): when it succeeds, that span would repeat the request's.

Not tracing: every reply (`AgentActivity._pipeline_reply_task_impl`) defined and processed
a dataclass anew, compiling three methods per turn; `_reuse_local_dataclasses` makes each
such definition once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import job, stt as lk_stt, utils, vad as lk_vad
from livekit.agents.llm import ChatContext, LLMStream
from livekit.agents.stt.stream_adapter import StreamAdapterWrapper
from livekit.agents.telemetry import (
    gen_ai as gen_ai_telemetry,
    input_delta,
    pii,
    trace_types,
    traces,
    utils as telemetry_utils,
)
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import aio
from opentelemetry import context as otel_context, trace
from opentelemetry.sdk.trace import Event, TracerProvider
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util import types as otel_types
from opentelemetry.util._decorator import _AgnosticContextManager
from opentelemetry.util.types import Attributes

from app.adapters import opentelemetry_sdk
from app.adapters.pins import matches
from app.adapters.silero import Fifo, SessionVAD, SileroStream, frame_samples

log = logging.getLogger(__name__)

DISTRIBUTION = "livekit-agents"
WRITTEN_AGAINST = "1.8.9"

ALIGN_FRAMES = 16
"""Frames each side remembers to align the STT's audio with the primary VAD's."""
KEEP_BEFORE_SPEECH_S = 1.5
"""Audio the segmenter keeps while nobody speaks (covers silero's 0.5 s prefix padding)."""
FALLBACK_AFTER_S = 1.0
"""Audio the segmenter waits for a primary VAD stream before running its own."""
PENDING_MAX_WAIT_S = 0.5
"""At most this long an end of speech waits for the STT's own frames to catch up."""

_Pending = tuple[int, int, float, bool]
"""An end of speech awaiting the STT's own frames: (start, end, speech_end_time, suppressed)."""

_active: bool | None = None


def install() -> bool:
    """Check the installed livekit-agents once; True when `SegmentingSTT` may be used
    and the chat-context skip is in place."""
    global _active
    if _active is None:
        _active = matches(DISTRIBUTION, WRITTEN_AGAINST, adapter=__name__)
        if _active:
            _skip_dropped_chat_context()
            _memoize_pii_keys()
            _lean_livekit_spans()
            _attempt_spans_on_failure()
            _reuse_local_dataclasses()
    return _active


def active() -> bool:
    """True once `install()` found the version this adapter was written against."""
    return bool(_active)


class SegmentingSTT(lk_stt.StreamAdapter):
    """`stt.StreamAdapter` segmenting on the session's primary VAD stream (module doc)."""

    def __init__(self, *, stt: lk_stt.STT[Any], vad: SessionVAD) -> None:
        super().__init__(stt=stt, vad=vad)
        self.session_vad = vad

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> lk_stt.RecognizeStream:
        return _SegmentStream(
            self, vad=self.session_vad, wrapped_stt=self._stt, language=language, conn_options=conn_options
        )


def _match(recent: dict[int, tuple[rtc.AudioFrame, deque[int]]], frame: rtc.AudioFrame) -> int | None:
    """The position at which the other side saw this frame object, matching occurrences in
    order (LiveKit pushes one silence frame object several times when it flushes the STT)."""
    hit = recent.get(id(frame))
    if hit is None or hit[0] is not frame:
        return None
    pos = hit[1].popleft()
    if not hit[1]:
        del recent[id(frame)]
    return pos


def _remember(recent: dict[int, tuple[rtc.AudioFrame, deque[int]]], frame: rtc.AudioFrame, pos: int) -> None:
    hit = recent.get(id(frame))
    if hit is not None and hit[0] is frame:
        hit[1].append(pos)
        return
    recent[id(frame)] = (frame, deque([pos]))  # holding the frame keeps its id from being reused
    if len(recent) > ALIGN_FRAMES:
        del recent[next(iter(recent))]

class _SegmentStream(StreamAdapterWrapper):
    def __init__(self, stt: SegmentingSTT, *, vad: SessionVAD, wrapped_stt: lk_stt.STT[Any],
                 language: NotGivenOr[str], conn_options: APIConnectOptions) -> None:
        super().__init__(stt, vad=vad, wrapped_stt=wrapped_stt, language=language, conn_options=conn_options)
        self._session_vad = vad
        self._audio = Fifo(16384)
        self._audio_pos = 0  # own position of self._audio's first sample
        self._own_pos = 0  # samples received
        self._orphan = 0  # samples received while no primary stream existed
        self._rate = 0
        self._offset: int | None = None  # primary position - own position, once aligned
        # frames one side has seen and the other not yet: id -> (frame, positions, oldest first)
        self._own_recent: dict[int, tuple[rtc.AudioFrame, deque[int]]] = {}
        self._primary_recent: dict[int, tuple[rtc.AudioFrame, deque[int]]] = {}
        self._seg_start: int | None = None  # own position where the current speech starts
        self._in_speech = False
        self._suppressed = False
        self._fallback: SileroStream | None = None
        self._fallback_base = 0  # own position of the fallback stream's first sample
        self._pending: _Pending | None = None  # an end of speech awaiting our frames
        self._out = aio.Chan[tuple[str, float, rtc.AudioFrame | None]]()

    # ---- alignment with the primary VAD stream (both see the same frame objects)

    def new_primary(self) -> None:
        self._offset = None
        self._primary_recent.clear()
        self._in_speech = False
        self._seg_start = None

    def primary_frame(self, frame: rtc.AudioFrame, pos: int) -> None:
        own = _match(self._own_recent, frame)
        if own is not None:
            self._offset = pos - own
        else:
            _remember(self._primary_recent, frame, pos)

    def _own_frame(self, frame: rtc.AudioFrame) -> None:
        if not self._rate:
            self._rate = frame.sample_rate
        self._own_pos += frame.samples_per_channel
        self._audio.push(frame_samples(frame))
        prim = _match(self._primary_recent, frame)
        if prim is not None:
            self._offset = prim - self._own_pos
        else:
            _remember(self._own_recent, frame, self._own_pos)
        primary = self._session_vad.primary
        if self._offset is None and primary is not None and abs(primary.pos - self._own_pos) <= self._rate // 2:
            # both started on the same frame of the same AudioRecognition (a session's or
            # agent's start): they count the same frames. Frames seen by both make the
            # offset exact (above), but substituted silence (AEC warm-up during the
            # greeting) is never seen by both
            self._offset = 0
        if self._pending is not None and self._own_pos >= self._pending[1]:
            self._finish_pending()
        if self._fallback is not None:
            self._fallback.push_frame(frame)
        elif primary is not None:
            self._orphan = 0
        else:
            self._orphan += frame.samples_per_channel
            if self._orphan >= FALLBACK_AFTER_S * self._rate:  # nobody runs a VAD: run our own
                self._fallback = self._session_vad.own_stream(self._on_own_vad)
                self._fallback_base = self._own_pos - frame.samples_per_channel
                self._fallback.push_frame(frame)
        self._trim()

    def _trim(self) -> None:
        if self._pending is not None:
            keep_from = self._pending[0]
        elif self._in_speech and self._seg_start is not None:
            keep_from = self._seg_start
        else:
            keep_from = self._own_pos - int(KEEP_BEFORE_SPEECH_S * (self._rate or 16000))
        if keep_from > self._audio_pos + 4096:
            self._audio.drop(keep_from - self._audio_pos)
            self._audio_pos = keep_from

    def _cut(self, start: int, end: int) -> np.ndarray:
        start = max(start, self._audio_pos)
        end = min(end, self._own_pos)
        if end <= start:
            return np.zeros(0, dtype=np.int16)
        return self._audio.buf[self._audio.start + (start - self._audio_pos) : self._audio.start + (end - self._audio_pos)]

    # ---- speech events

    def _on_own_vad(self, _s: SileroStream, ev: lk_vad.VADEvent, pos: int) -> None:
        self.on_vad(ev, pos, own=True)

    def on_vad(self, ev: lk_vad.VADEvent, pos: int, *, own: bool) -> None:
        if self._fallback is not None and not own:
            return
        offset = -self._fallback_base if own else self._offset
        n = ev.frames[0].samples_per_channel if ev.frames else 0
        if ev.type == lk_vad.VADEventType.START_OF_SPEECH:
            self._finish_pending()
            self._in_speech = True
            self._seg_start = None if offset is None else pos - n - offset
            heard = self._cut(self._seg_start, self._own_pos) if self._seg_start is not None else None
            # the STT was fed silence instead of this speech (AEC warm-up, uninterruptible speech)
            self._suppressed = heard is not None and len(heard) > 0 and not heard.any()
            if not self._suppressed:
                self._out.send_nowait(("start", 0.0, None))
        elif ev.type == lk_vad.VADEventType.END_OF_SPEECH:
            speech_end_time = time.time() - ev.silence_duration - ev.inference_duration
            suppressed = self._suppressed
            self._in_speech, self._suppressed = False, False
            if offset is None:  # not aligned yet: what the VAD heard
                self._seg_start = None
                frame = utils.merge_frames(ev.frames) if ev.frames else None
                self._emit_end(speech_end_time, frame, suppressed)
                return
            start = self._seg_start if self._seg_start is not None else pos - n - offset
            self._seg_start = None
            # the STT's own frames may lag the VAD's by a frame or two: cut once they are in
            self._pending = (start, min(pos - offset, start + n), speech_end_time, suppressed)
            if self._own_pos >= self._pending[1]:
                self._finish_pending()
            else:
                asyncio.get_running_loop().call_later(PENDING_MAX_WAIT_S, self._finish_pending, self._pending)

    def _finish_pending(self, which: _Pending | None = None) -> None:
        pending = self._pending
        if pending is None or (which is not None and which is not pending):
            return
        self._pending = None
        start, end, speech_end_time, suppressed = pending
        pcm = self._cut(start, end)
        frame = None if not pcm.any() else rtc.AudioFrame(
            data=pcm.tobytes(), sample_rate=self._rate, num_channels=1, samples_per_channel=len(pcm)
        )
        self._emit_end(speech_end_time, frame, suppressed)

    def _emit_end(self, speech_end_time: float, frame: rtc.AudioFrame | None, suppressed: bool) -> None:
        if suppressed and frame is None:
            return  # the STT heard only silence: as StreamAdapter's own VAD, no speech at all
        if suppressed:
            self._out.send_nowait(("start", 0.0, None))
        self._out.send_nowait(("end", speech_end_time, frame))

    async def _run(self) -> None:
        vad = self._session_vad
        vad.add_listener(self)
        if vad.primary is None:
            self.new_primary()

        async def _forward_input() -> None:
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    self._in_speech, self._seg_start, self._suppressed = False, None, False
                    if self._fallback is not None:
                        self._fallback.flush()
                    continue
                self._own_frame(item)
            self._finish_pending()
            self._out.close()

        async def _recognize() -> None:
            async for kind, speech_end_time, frame in self._out:
                if kind == "start":
                    self._event_ch.send_nowait(lk_stt.SpeechEvent(lk_stt.SpeechEventType.START_OF_SPEECH))
                    continue
                self._event_ch.send_nowait(
                    lk_stt.SpeechEvent(type=lk_stt.SpeechEventType.END_OF_SPEECH, speech_end_time=speech_end_time)
                )
                if frame is None:
                    continue
                t_event = await self._wrapped_stt.recognize(
                    buffer=frame, language=self._language, conn_options=self._wrapped_stt_conn_options
                )
                if not t_event.alternatives or not t_event.alternatives[0].text:
                    continue
                self._event_ch.send_nowait(
                    lk_stt.SpeechEvent(
                        type=lk_stt.SpeechEventType.FINAL_TRANSCRIPT,
                        alternatives=[t_event.alternatives[0]],
                        speech_end_time=(
                            t_event.speech_end_time if t_event.speech_end_time is not None else speech_end_time
                        ),
                    )
                )

        tasks = [
            asyncio.create_task(_forward_input(), name="segment_input"),
            asyncio.create_task(_recognize(), name="segment_recognize"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            await utils.aio.cancel_and_wait(*tasks)
            vad.remove_listener(self)
            if self._fallback is not None:
                await self._fallback.aclose()
                self._fallback = None


# ------------------------------------------------------------------ telemetry

_pii_checked: tuple[object, object] | None = None
"""(provider, its span processors) last looked at by `chat_context_dropped`."""
_pii_strips = False


def chat_context_dropped() -> bool:
    """True when a span's `lk.pii.chat_ctx` cannot reach any exporter (module doc)."""
    global _pii_checked, _pii_strips
    if traces._cloud._trace_provider_attached is not None:
        return False  # LiveKit Cloud gets the attributes the PII filter removed
    provider = traces.tracer._tracer_provider
    if not isinstance(provider, TracerProvider):
        return False  # nothing records: nothing to save either
    processors = provider._active_span_processor._span_processors
    if _pii_checked is None or _pii_checked[0] is not provider or _pii_checked[1] is not processors:
        # the filter runs first (LiveKit prepends it); keep the answer until the processors change
        _pii_strips = any(isinstance(p, pii._PIIFilteringSpanProcessor) and not p._allow_pii for p in processors)
        _pii_checked = (provider, processors)
    return _pii_strips


def _skip_dropped_chat_context() -> None:
    original = input_delta.compute
    if hasattr(original, "__wrapped__"):
        return

    def compute(site: input_delta.InputDeltaSite, chat_ctx: ChatContext, span: trace.Span) -> input_delta.InputDelta:
        if site is input_delta.LLM_NODE and not input_delta.active() and chat_context_dropped():
            full = input_delta.InputDelta.full(chat_ctx)
            return input_delta.InputDelta(
                chat_ctx=ChatContext.empty(), instructions=full.instructions, conversation=full.conversation
            )
        return original(site, chat_ctx, span)

    compute.__wrapped__ = original  # type: ignore[attr-defined]
    input_delta.compute = compute


def _pii_end_filter(
    processor: pii._PIIFilteringSpanProcessor, attributes: Attributes, events: Sequence[Event], status: Status
) -> tuple[Attributes, Sequence[Event], Status] | None:
    """`pii._PIIFilteringSpanProcessor.on_end` for a lean span: what it exports instead.
    Nothing is stashed for LiveKit Cloud's `restore_pii`: with Cloud's exporter attached,
    the provider's processors are not all known and spans take the library's path."""
    if processor._allow_pii and not telemetry_utils.redaction_enabled(attributes):
        return None
    filtered_events = pii._filter_events(events) if events else None
    if filtered_events is None and not _contains_pii(attributes):
        return None
    if status.status_code is StatusCode.ERROR and status.description:
        status = Status(StatusCode.ERROR, telemetry_utils.REDACTED_EXCEPTION_MESSAGE)
    return pii.filter_attributes(attributes), events if filtered_events is None else filtered_events, status


_REDACTED_EXCEPTION_KEYS = frozenset(pii._REDACTED_EXCEPTION_ATTRIBUTES)


def _contains_pii(attributes: Attributes) -> bool:
    """`pii._contains_pii`, asking the (memoized, `_memoize_pii_keys`) key test through
    `map` rather than a generator frame per key."""
    if not attributes:
        return False
    return not _REDACTED_EXCEPTION_KEYS.isdisjoint(attributes) or any(map(pii.is_pii_attribute, attributes))


def _lean_livekit_spans() -> None:
    """LiveKit's tracer starts `opentelemetry_sdk` lean spans (it starts several per turn)
    with the PII filter applied at their end as its `on_end` would."""
    opentelemetry_sdk.register_end_filter(pii._PIIFilteringSpanProcessor, _pii_end_filter)
    dynamic = traces._DynamicTracer
    original = dynamic.set_provider
    if hasattr(original, "__wrapped__"):
        return

    def set_provider(self: traces._DynamicTracer, tracer_provider: trace.TracerProvider) -> None:
        original(self, tracer_provider)
        self._tracer = opentelemetry_sdk.lean(self._tracer)

    set_provider.__wrapped__ = original  # type: ignore[attr-defined]
    dynamic.set_provider = set_provider  # type: ignore[method-assign]
    traces.tracer._tracer = opentelemetry_sdk.lean(traces.tracer._tracer)
    _direct_lean_calls(dynamic)


class _LiveKitCurrentSpan(opentelemetry_sdk.CurrentSpan):
    """`traces._DynamicTracer.start_as_current_span` around a lean tracer, as one object:
    the conversation id goes first among the attributes as the span starts, the SDK records
    nothing, and LiveKit records an `Exception` itself (redaction-aware) while the span is
    still current."""

    __slots__ = ("lk_record_exception", "lk_set_status_on_exception")
    lk_record_exception: bool
    lk_set_status_on_exception: bool

    def _start(self) -> trace.Span:
        self.attributes = _with_conversation_id(self.attributes)
        return super()._start()

    def _failed(self, span: trace.Span, exc: Exception) -> None:
        telemetry_utils.record_exception(
            span, exc, record_event=self.lk_record_exception, set_status=self.lk_set_status_on_exception
        )


class _LiveKitUsedSpan(_LiveKitCurrentSpan):
    """`traces._DynamicTracer.use_span` around a lean tracer: a span started elsewhere,
    made current, with LiveKit's exception recording."""

    __slots__ = ("given",)
    given: trace.Span

    def _start(self) -> trace.Span:
        return self.given


def _lean_current_span(
    tracer: opentelemetry_sdk.LeanTracer,
    name: str,
    context: otel_context.Context | None = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Attributes = None,
    links: Sequence[trace.Link] | None = (),
    start_time: int | None = None,
    record_exception: bool = True,
    set_status_on_exception: bool = True,
    end_on_exit: bool = True,
) -> _LiveKitCurrentSpan:
    current = _LiveKitCurrentSpan(tracer, name, context, kind, attributes, links, start_time, False, False, end_on_exit)
    current.lk_record_exception, current.lk_set_status_on_exception = record_exception, set_status_on_exception
    return current


def _lean_used_span(
    span: trace.Span, end_on_exit: bool = False, record_exception: bool = True, set_status_on_exception: bool = True
) -> _LiveKitUsedSpan:
    name = getattr(span, "name", "")
    used = _LiveKitUsedSpan(traces.tracer, name, None, trace.SpanKind.INTERNAL, None, (), None, False, False, end_on_exit)
    used.given, used.lk_record_exception, used.lk_set_status_on_exception = span, record_exception, set_status_on_exception
    return used


def _lean_start_span(
    tracer: opentelemetry_sdk.LeanTracer,
    name: str,
    context: otel_context.Context | None = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    attributes: Attributes = None,
    links: Sequence[trace.Link] | None = (),
    start_time: int | None = None,
    record_exception: bool = True,
    set_status_on_exception: bool = True,
) -> trace.Span:
    return tracer.start_span(name, context, kind, _with_conversation_id(attributes), links, start_time,
                             record_exception, set_status_on_exception)


def _with_conversation_id(attributes: Attributes) -> Attributes:
    """`traces._with_conversation_id`: the job's room sid first among the attributes. LiveKit
    looks it up through the job's protobuf messages for every span; a job's room sid does
    not change, so the first non-empty one is kept on its job context."""
    ctx = job._JobContextVar.get(None)
    if ctx is None:
        return attributes
    sid: str | None = getattr(ctx, "_app_room_sid", None)
    if sid is None:
        sid = ctx.job.room.sid or None
        if sid is None:
            return attributes
        ctx._app_room_sid = sid  # type: ignore[attr-defined]
    return {trace_types.ATTR_GEN_AI_CONVERSATION_ID: sid, **(attributes or {})}


def _direct_lean_calls(dynamic: type[traces._DynamicTracer]) -> None:
    """LiveKit's tracer binds every call's arguments to the SDK's signature
    (`inspect.Signature.bind`) and wraps the SDK's two generator context managers in a third
    of its own, per span. Around a lean tracer its `start_as_current_span`, `start_span` and
    `use_span` do the same in one call each (the SDK's defaults, same errors for a wrong
    argument); around any other tracer, tracing off included, they are LiveKit's. The
    functions LiveKit decorated at import, before this ran, get the same through their
    decorator's context manager (`_direct_decorated`)."""
    if getattr(dynamic.start_span, "__wrapped__", None) is not None:
        return  # installed (LiveKit's own `start_span` is undecorated)
    lean_tracer = opentelemetry_sdk.LeanTracer
    original_current, original_start, original_use = dynamic.start_as_current_span, dynamic.start_span, dynamic.use_span

    def start_as_current_span(self: traces._DynamicTracer, *args: Any, **kwargs: Any) -> Any:
        tracer = self._tracer
        if type(tracer) is lean_tracer:
            return _lean_current_span(tracer, *args, **kwargs)
        return original_current(self, *args, **kwargs)

    def start_span(self: traces._DynamicTracer, *args: Any, **kwargs: Any) -> trace.Span:
        tracer = self._tracer
        if type(tracer) is lean_tracer:
            return _lean_start_span(tracer, *args, **kwargs)
        return original_start(self, *args, **kwargs)

    def use_span(self: traces._DynamicTracer, *args: Any, **kwargs: Any) -> Any:
        if type(self._tracer) is lean_tracer:
            return _lean_used_span(*args, **kwargs)
        return original_use(self, *args, **kwargs)

    for method, original in ((start_as_current_span, original_current), (start_span, original_start),
                             (use_span, original_use)):
        functools.update_wrapper(method, original)
        setattr(dynamic, original.__name__, method)
    livekit_generator = original_current.__wrapped__  # type: ignore[attr-defined]  # what its decorator wraps
    for decorated in _decorated_at_import():
        _direct_decorated(decorated, livekit_generator)


def _decorated_at_import() -> list[Any]:
    """LiveKit's functions that `@tracer.start_as_current_span(...)` decorated as their
    modules were imported, i.e. before `_direct_lean_calls`: the per-turn nodes and the
    agent hand-off."""
    from livekit.agents.voice import agent_activity, generation

    return [generation._llm_inference_task, generation._tts_inference_task, agent_activity.AgentActivity.drain]


def _direct_decorated(decorated: Any, livekit_generator: Any) -> None:
    """Each call of a function decorated by LiveKit's tracer recreates the decorator's
    context manager (`_AgnosticContextManager._recreate_cm`) around LiveKit's generator; for
    a lean tracer the recreated one is `_LiveKitCurrentSpan` instead. The decorator's
    context manager sits in the closure of the wrapper it made (`__wrapped__` chain)."""
    found = False
    function = decorated
    while function is not None:
        for cell in function.__closure__ or ():
            template = cell.cell_contents
            if isinstance(template, _AgnosticContextManager) and template.func is livekit_generator:
                _direct_template(template)
                found = True
        function = getattr(function, "__wrapped__", None)
    if not found:
        log.warning("%s: no LiveKit tracer decorator found; its spans take LiveKit's path",
                    getattr(decorated, "__qualname__", decorated))


def _direct_template(template: _AgnosticContextManager[trace.Span]) -> None:
    recreate = template._recreate_cm
    dynamic, args, kwargs = template.args[0], template.args[1:], template.kwds

    def recreate_cm() -> Any:
        tracer = dynamic._tracer
        if type(tracer) is opentelemetry_sdk.LeanTracer:
            return _lean_current_span(tracer, *args, **kwargs)
        return recreate()

    template._recreate_cm = recreate_cm  # type: ignore[method-assign]  # this instance only


class _FirstAttempt(trace.Span):
    """An LLM request's first attempt, run in its request's span, as LiveKit's
    `_attempt_span` context manager: what LiveKit writes to the attempt's span is kept, to
    go on a span of its own should the attempt fail (an `Exception`), or on the request's
    span when it does not. Its span context is the request's, the span the attempt's work
    runs under."""

    def __init__(self, stream: LLMStream, request: trace.Span) -> None:
        self.stream = stream
        self.request = request
        self.start_time = time.time_ns()
        self.attributes: dict[str, otel_types.AnyValue] = {}

    def __enter__(self) -> _FirstAttempt:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        # Tracing must not change the request's outcome: an error here would replace the
        # attempt's own and stop LiveKit's retry.
        try:
            if isinstance(exc, Exception):
                self.failed(exc)
            else:  # done, or cancelled: LiveKit's span would have ended without an error
                self.succeeded()
        except Exception:
            log.exception("an LLM request's first attempt was not recorded")

    def set_attribute(self, key: str, value: otel_types.AnyValue) -> None:
        self.attributes.pop(key, None)  # a rewritten key moves to the end, as on a span
        self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, otel_types.AnyValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        raise NotImplementedError("LiveKit 1.8.9 adds no event to an attempt's span")

    def get_span_context(self) -> trace.SpanContext:
        return self.request.get_span_context()

    def is_recording(self) -> bool:
        return True

    def update_name(self, name: str) -> None:
        raise NotImplementedError("LiveKit 1.8.9 does not rename an attempt's span")

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        raise NotImplementedError("LiveKit 1.8.9 does not set an attempt's status itself")

    def record_exception(self, exception: BaseException, attributes: Attributes = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        raise NotImplementedError("LiveKit 1.8.9 records an attempt's exception through its tracer")

    def end(self, end_time: int | None = None) -> None:
        raise NotImplementedError("LiveKit 1.8.9 ends an attempt's span through its tracer")

    def _write(self, span: trace.Span) -> None:
        if self.attributes and span.is_recording():  # the request's span may have ended (a cancelled stream)
            span.set_attributes(self.attributes)

    def succeeded(self) -> None:
        self._write(self.request)

    def failed(self, exc: Exception) -> None:
        """The span LiveKit's tracer would have made for the attempt, made now: the same
        name, parent, start, attributes, exception event and status."""
        stream = self.stream
        name = stream._llm_attempt_span_name
        assert name is not None
        span = traces.tracer.start_span(name, context=trace.set_span_in_context(self.request),
                                        start_time=self.start_time)
        gen_ai_telemetry.set_request_attributes(
            span, operation=None, provider=stream._llm.provider, model=stream._llm.model
        )
        self._write(span)
        telemetry_utils.record_exception(span, exc)
        span.end()


def _attempt_spans_on_failure() -> None:
    """`LLMStream._attempt_span`: LiveKit opens a span (`llm_request_run`) for every attempt
    at an LLM request, inside the request's own span (`llm_request`). Most requests succeed
    at the first attempt, and the attempt's span then repeats the request's: a fifth of a
    text turn's spans. Around a lean tracer, the first attempt runs in the request's span
    (as LiveKit runs every attempt where a stream has no attempt span name), and its span
    is made only if it fails, as LiveKit would have made it, before the retry's; a
    successful first attempt's attributes (`lk.retry_count`, the provider's request ids) go
    on the request's span. Later attempts are LiveKit's. What a first attempt's own work
    starts (no LiveKit plugin starts spans there) is parented by the request's span, and a
    stack trace recorded for its failure has no `_attempt_span` frame."""
    original = LLMStream._attempt_span
    if hasattr(original, "_app_original"):
        return

    def attempt_span(self: LLMStream) -> contextlib.AbstractContextManager[trace.Span]:
        request = trace.get_current_span()
        if (self._llm_attempt_span_name is None or getattr(self, "_app_attempted", False)
                or type(traces.tracer._tracer) is not opentelemetry_sdk.LeanTracer or not request.is_recording()):
            return original(self)
        self._app_attempted = True  # type: ignore[attr-defined]
        return _FirstAttempt(self, request)

    attempt_span._app_original = original  # type: ignore[attr-defined]
    LLMStream._attempt_span = attempt_span  # type: ignore[assignment]


LOCAL_DATACLASSES_REMEMBERED = 64
_ATOMIC = (type(None), bool, int, float, str)
_CLASS_DICT_GIVEN = frozenset({"__module__", "__qualname__", "__annotations__", "__doc__", "__dict__", "__weakref__"})


def _local_class_key(cls: type) -> tuple[Any, ...] | None:
    """What defines a class made by a `class` statement inside a function: its place, bases,
    annotations and plain defaults; None when anything else is in its body."""
    namespace = cls.__dict__
    extra = []
    for name, value in namespace.items():
        if name in _CLASS_DICT_GIVEN:
            continue
        if type(value) not in _ATOMIC:
            return None
        extra.append((name, type(value), value))
    annotations = namespace.get("__annotations__", {})
    if not all(type(a) is str for a in annotations.values()):
        return None
    return (cls.__module__, cls.__qualname__, cls.__bases__, tuple(annotations.items()), tuple(extra))


def _reuse_local_dataclasses() -> None:
    """`voice.agent_activity` (`from dataclasses import dataclass`) defines a dataclass inside
    the function that runs every pipeline reply (`_SpeechSegment`) and the realtime one
    (`_MsgOutput`): each turn the decorator writes and compiles the class's `__init__`,
    `__repr__` and `__eq__` again, for a class whose definition never changes. Here the
    module's `dataclass` keeps the first one made for each such definition (same place,
    bases, string annotations and plain defaults) and returns it; anything else goes to
    `dataclasses.dataclass` as before."""
    from livekit.agents.voice import agent_activity

    made = agent_activity.dataclass  # type: ignore[attr-defined]  # its import, not an export
    if hasattr(made, "_app_original"):
        return
    kept: dict[tuple[Any, ...], Any] = {}

    def dataclass(cls: Any = None, /, **kwargs: Any) -> Any:
        if cls is None or kwargs or "<locals>" not in getattr(cls, "__qualname__", ""):
            return made(cls, **kwargs) if cls is not None else made(**kwargs)
        key = _local_class_key(cls)
        if key is None:
            return made(cls)
        found = kept.get(key)
        if found is None:
            found = made(cls)
            if len(kept) < LOCAL_DATACLASSES_REMEMBERED:
                kept[key] = found
        return found

    dataclass._app_original = made  # type: ignore[attr-defined]
    agent_activity.dataclass = dataclass  # type: ignore[attr-defined]


PII_KEYS_REMEMBERED = 4096


def _memoize_pii_keys() -> None:
    original = pii.is_pii_attribute
    if hasattr(original, "__wrapped__"):
        return
    pii.is_pii_attribute = functools.lru_cache(maxsize=PII_KEYS_REMEMBERED)(original)
