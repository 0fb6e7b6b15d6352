"""One silero VAD stream per voice session, shared by turn detection and the STT.

Why: the OpenAI STT is not a streaming STT, so LiveKit wraps it in
`stt.StreamAdapter(stt, vad)`, which runs a *second* VAD stream over the same audio
only to cut it into utterances, next to the VAD stream `AudioRecognition` runs for
turn detection. Each silero stream also hops to a thread pool for every 32 ms window
and copies/re-combines frames in Python: ~20 ms of CPU per audio second each (2-core
box, 24 kHz 50 ms frames), two per session, over half of a voice session's cost
(`sim.bench.voice_density`). The one stream here costs ~9-12 ms per audio second, of
which the ONNX model itself is ~4-6 and LiveKit's resampler ~3.

Here, per agent (the factory builds one of each with the agent's STT):

- `SessionVAD` wraps the process's loaded `silero.VAD` (its ONNX session and
  options). Its streams run silero's own algorithm unchanged (same model, options,
  exponential filter, thresholds, prefix padding, resampling, event fields), but
  inline in `push_frame`: no input task, no executor hop, no tee'd metrics task,
  numpy FIFOs instead of frame lists. Inline means on the session's own event loop:
  one window's inference is ~0.2 ms of the 32 ms it covers (ONNX releases the GIL),
  less than the executor hop it replaces cost; a window slower than
  `SLOW_INFERENCE_THRESHOLD` is logged as silero does. The stream LiveKit's `AudioRecognition` opens
  for turn detection is the *primary* one; its start/end-of-speech events are also
  handed to the session's STT segmenter.
- `SegmentingSTT` is `stt.StreamAdapter` for the agent's STT whose stream runs no VAD:
  it cuts the utterance from the audio *it* was given (the STT pipeline's frames,
  aligned with the primary VAD's sample positions through the frames both received),
  at the primary's start/end of speech, and sends it to the wrapped STT's
  `recognize()` exactly as `StreamAdapter` does. Where LiveKit feeds the STT silence
  instead of the caller's audio (AEC warm-up, uninterruptible speech), the segment is
  silence and is not transcribed, as `StreamAdapter`'s own VAD would have heard
  nothing. With no primary stream (a session without VAD turn detection), it falls
  back to its own stream, i.e. `StreamAdapter`'s behaviour.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import stt as lk_stt, utils, vad as lk_vad
from livekit.agents.metrics import VADMetrics
from livekit.agents.metrics.base import Metadata
from livekit.agents.stt.stream_adapter import StreamAdapterWrapper
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import aio
from livekit.plugins import silero
from livekit.plugins.silero import onnx_model
from livekit.plugins.silero.log import logger as silero_logger  # sim.bench.voice_density counts its warnings

from app.domain import VADConfig

SLOW_INFERENCE_THRESHOLD = 0.2
INT16_MAX = int(np.iinfo(np.int16).max)
"""As silero: warn when one window's inference took longer than this."""
ALIGN_FRAMES = 16
"""Frames each side remembers to align the STT's audio with the primary VAD's."""
KEEP_BEFORE_SPEECH_S = 1.5
"""Audio the segmenter keeps while nobody speaks (covers silero's 0.5 s prefix padding)."""
FALLBACK_AFTER_S = 1.0
"""Audio the segmenter waits for a primary VAD stream before running its own."""
PENDING_MAX_WAIT_S = 0.5
"""At most this long an end of speech waits for the STT's own frames to catch up."""
"""Audio the segmenter waits for a primary VAD stream before running its own."""


class _Fifo:
    """int16 samples appended at the end, consumed from the front (amortised O(1))."""

    __slots__ = ("buf", "start", "end")

    def __init__(self, capacity: int = 4096) -> None:
        self.buf = np.empty(capacity, dtype=np.int16)
        self.start = 0
        self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def push(self, data: np.ndarray) -> None:
        n = len(data)
        if self.end + n > len(self.buf):
            live = self.end - self.start
            if live + n > len(self.buf) // 2:
                grown = np.empty(max(2 * len(self.buf), 2 * (live + n)), dtype=np.int16)
                grown[:live] = self.buf[self.start : self.end]
                self.buf = grown
            else:
                self.buf[:live] = self.buf[self.start : self.end]
            self.start, self.end = 0, live
        self.buf[self.end : self.end + n] = data
        self.end += n

    def view(self, n: int) -> np.ndarray:
        return self.buf[self.start : self.start + min(n, self.end - self.start)]

    def drop(self, n: int) -> None:
        self.start = min(self.end, self.start + n)
        if self.start == self.end:
            self.start = self.end = 0

    def clear(self) -> None:
        self.start = self.end = 0


def _samples(frame: rtc.AudioFrame) -> np.ndarray:
    return np.frombuffer(frame.data, dtype=np.int16)


class SessionVAD(lk_vad.VAD):
    """A voice session's (agent's) VAD over the process's loaded silero model; see the module doc."""

    def __init__(self, inner: silero.VAD, options: Mapping[str, float] | None = None) -> None:
        """`options`: this agent's overrides of the loaded model's options (its
        `VADConfig`), e.g. a longer `min_silence_duration` for an interview agent.
        Without any, the loaded options object is shared."""
        super().__init__(capabilities=inner.capabilities)
        self._label = inner._label  # metrics stay labelled as silero's
        self._onnx_session = inner._onnx_session
        self._opts = inner._opts if not options else dataclasses.replace(inner._opts, **options)
        self.inner = inner
        self.primary: _SileroStream | None = None
        self._listeners: list[_SegmentStream] = []

    @property
    def model(self) -> str:
        return "silero"

    @property
    def provider(self) -> str:
        return "ONNX"

    @property
    def min_silence_duration(self) -> float:
        return self._opts.min_silence_duration

    def stream(self) -> _SileroStream:
        """The stream LiveKit opens for turn detection: the primary one."""
        s = _SileroStream(self, on_speech=self._dispatch, on_frame=self._primary_frame)
        self.primary = s
        for listener in self._listeners:
            listener._new_primary()
        return s

    def own_stream(self, on_speech: Any) -> _SileroStream:
        """A stream whose events go only to `on_speech` (the segmenter's fallback)."""
        return _SileroStream(self, on_speech=on_speech, on_frame=None)

    def _closed(self, s: _SileroStream) -> None:
        if self.primary is s:
            self.primary = None
            for listener in self._listeners:
                listener._new_primary()

    def _dispatch(self, s: _SileroStream, ev: lk_vad.VADEvent, pos: int) -> None:
        if s is self.primary:
            for listener in self._listeners:
                listener._on_vad(ev, pos, own=False)

    def _primary_frame(self, s: _SileroStream, frame: rtc.AudioFrame, pos: int) -> None:
        if s is self.primary:
            for listener in self._listeners:
                listener._primary_frame(frame, pos)


class _SileroStream(lk_vad.VADStream):
    """silero's `VADStream` algorithm, run inline in `push_frame` (see the module doc).

    `VADStream.__init__` is deliberately not called: it starts an input task and a
    metrics task fed by a tee of the events; both are done inline here."""

    def __init__(self, owner: SessionVAD, *, on_speech: Any, on_frame: Any) -> None:
        self._vad = owner
        self._owner = owner
        self._on_speech = on_speech
        self._on_frame = on_frame
        self._opts = owner._opts
        self._model = onnx_model.OnnxModel(onnx_session=owner._onnx_session, sample_rate=owner._opts.sample_rate)
        self._window = self._model.window_size_samples
        self._f32 = np.empty(self._window, dtype=np.float32)
        self._event_ch = aio.Chan[lk_vad.VADEvent]()
        self._input_ended = False
        self._last_activity_time = time.perf_counter()
        self._in_rate = 0
        self._resampler: rtc.AudioResampler | None = None
        self._speech_buffer: np.ndarray | None = None
        self._prefix_padding_samples = 0
        self._pending_in = _Fifo()
        self._pending_inf = _Fifo()
        self.pos = 0
        """Input samples pushed so far."""
        self.consumed = 0
        """Input samples the inference windows have covered so far."""
        self._metrics_count = 0
        self._metrics_total = 0.0
        self._reset_state()

    # ------------------------------------------------------------------ VADStream API

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        self._check_open()
        if not self._in_rate:
            self._in_rate = frame.sample_rate
            self._prefix_padding_samples = int(self._opts.prefix_padding_duration * self._in_rate)
            self._speech_buffer = np.empty(
                int(self._opts.max_buffered_speech * self._in_rate) + self._prefix_padding_samples, dtype=np.int16
            )
            self._resampler = self._new_resampler()
        elif frame.sample_rate != self._in_rate:
            silero_logger.error("a frame with another sample rate was already pushed")
            return
        data = _samples(frame)
        self._pending_in.push(data)
        if self._resampler is not None:
            for f in self._resampler.push(frame):
                self._pending_inf.push(_samples(f))
        else:
            self._pending_inf.push(data)
        self.pos += frame.samples_per_channel
        if self._on_frame is not None:
            self._on_frame(self, frame, self.pos)
        while len(self._pending_inf) >= self._window:
            self._infer()

    def flush(self) -> None:
        self._check_open()
        self._reset_state()

    def end_input(self) -> None:
        self.flush()
        self._input_ended = True
        self._event_ch.close()

    async def aclose(self) -> None:
        self._input_ended = True
        self._event_ch.close()
        self._owner._closed(self)

    async def __anext__(self) -> lk_vad.VADEvent:
        try:
            return await self._event_ch.recv()
        except aio.ChanClosed:
            raise StopAsyncIteration from None

    def _check_open(self) -> None:
        self._check_not_closed()
        if self._input_ended:
            raise RuntimeError(f"{type(self).__module__}.{type(self).__name__} input ended")

    async def _main_task(self) -> None:  # pragma: no cover - abstract in VADStream, unused here
        return None

    # ------------------------------------------------------------------ silero's algorithm

    def _new_resampler(self) -> rtc.AudioResampler | None:
        if self._in_rate and self._in_rate != self._opts.sample_rate:
            return rtc.AudioResampler(
                input_rate=self._in_rate, output_rate=self._opts.sample_rate, quality=rtc.AudioResamplerQuality.QUICK
            )
        return None

    def _reset_state(self) -> None:
        self._model.reset()
        self._exp_filter = utils.ExpFilter(alpha=0.35)
        self._speech_buffer_index = 0
        self._speech_buffer_max_reached = False
        if self._speech_buffer is not None:
            self._speech_buffer.fill(0)
        self._speaking = False
        self._speech_duration = 0.0
        self._silence_duration = 0.0
        self._current_sample = 0
        self._timestamp = 0.0
        self._speech_threshold_duration = 0.0
        self._silence_threshold_duration = 0.0
        self._pending_in.clear()
        self._pending_inf.clear()
        self._copy_fract = 0.0
        self._extra_inference_time = 0.0
        self._resampler = self._new_resampler()

    def _copy_speech_buffer(self) -> rtc.AudioFrame:
        assert self._speech_buffer is not None
        return rtc.AudioFrame(
            sample_rate=self._in_rate,
            num_channels=1,
            samples_per_channel=self._speech_buffer_index,
            data=self._speech_buffer[: self._speech_buffer_index].tobytes(),
        )

    def _reset_write_cursor(self) -> None:
        assert self._speech_buffer is not None
        pad = self._prefix_padding_samples
        if self._speech_buffer_index <= pad:
            return
        self._speech_buffer[:pad] = self._speech_buffer[self._speech_buffer_index - pad : self._speech_buffer_index]
        self._speech_buffer_max_reached = False
        self._speech_buffer_index = pad

    def _infer(self) -> None:
        opts, window, buf = self._opts, self._window, self._speech_buffer
        assert buf is not None
        start_time = time.perf_counter()
        np.divide(self._pending_inf.view(window), INT16_MAX, out=self._f32, dtype=np.float32)
        p = self._model(self._f32)
        p = self._exp_filter.apply(exp=1.0, sample=p)
        window_duration = window / opts.sample_rate
        self._current_sample += window
        self._timestamp += window_duration

        to_copy = window * (self._in_rate / opts.sample_rate) + self._copy_fract
        to_copy_int = int(to_copy)
        self._copy_fract = to_copy - to_copy_int
        chunk = self._pending_in.view(to_copy_int)
        available_space = len(buf) - self._speech_buffer_index
        to_copy_buffer = min(len(chunk), available_space)
        if to_copy_buffer > 0:
            buf[self._speech_buffer_index : self._speech_buffer_index + to_copy_buffer] = chunk[:to_copy_buffer]
            self._speech_buffer_index += to_copy_buffer
        elif not self._speech_buffer_max_reached:
            self._speech_buffer_max_reached = True
            silero_logger.warning("max_buffered_speech reached, ignoring further data for the current speech input")

        inference_duration = time.perf_counter() - start_time
        self._extra_inference_time = max(0.0, self._extra_inference_time + inference_duration - window_duration)
        if inference_duration > SLOW_INFERENCE_THRESHOLD:
            silero_logger.warning("VAD inference is slower than realtime", extra={"delay": self._extra_inference_time})

        if self._speaking:
            self._speech_duration += window_duration
        else:
            self._silence_duration += window_duration

        self._event_ch.send_nowait(
            lk_vad.VADEvent(
                type=lk_vad.VADEventType.INFERENCE_DONE,
                samples_index=self._current_sample,
                timestamp=self._timestamp,
                silence_duration=self._silence_duration,
                speech_duration=self._speech_duration,
                probability=p,
                inference_duration=inference_duration,
                frames=[
                    rtc.AudioFrame(
                        data=chunk.tobytes(), sample_rate=self._in_rate, num_channels=1, samples_per_channel=len(chunk)
                    )
                ],
                speaking=self._speaking,
                raw_accumulated_silence=self._silence_threshold_duration,
                raw_accumulated_speech=self._speech_threshold_duration,
            )
        )
        self._pending_in.drop(to_copy_int)
        self._pending_inf.drop(window)
        self.consumed += len(chunk)

        if p >= opts.activation_threshold or (self._speaking and p > opts.deactivation_threshold):
            self._speech_threshold_duration += window_duration
            self._silence_threshold_duration = 0.0
            if not self._speaking and self._speech_threshold_duration >= opts.min_speech_duration:
                self._speaking = True
                self._silence_duration = 0.0
                self._speech_duration = self._speech_threshold_duration
                self._speech_event(
                    lk_vad.VADEvent(
                        type=lk_vad.VADEventType.START_OF_SPEECH,
                        samples_index=self._current_sample,
                        timestamp=self._timestamp,
                        silence_duration=self._silence_duration,
                        speech_duration=self._speech_duration,
                        frames=[self._copy_speech_buffer()],
                        speaking=True,
                    )
                )
        else:
            self._silence_threshold_duration += window_duration
            self._speech_threshold_duration = 0.0
            if not self._speaking:
                self._reset_write_cursor()
            if self._speaking and self._silence_threshold_duration >= opts.min_silence_duration:
                self._speaking = False
                self._silence_duration = self._silence_threshold_duration
                self._speech_event(
                    lk_vad.VADEvent(
                        type=lk_vad.VADEventType.END_OF_SPEECH,
                        samples_index=self._current_sample,
                        timestamp=self._timestamp,
                        silence_duration=self._silence_duration,
                        speech_duration=max(0.0, self._speech_duration - self._silence_threshold_duration),
                        frames=[self._copy_speech_buffer()],
                        speaking=False,
                    )
                )
                self._speech_duration = 0.0
                self._reset_write_cursor()

        # what VADStream._metrics_monitor_task reports, without its task
        self._metrics_total += inference_duration
        self._metrics_count += 1
        if self._metrics_count >= 1 / self._owner.capabilities.update_interval:
            self._owner.emit(
                "metrics_collected",
                VADMetrics(
                    timestamp=time.time(),
                    idle_time=time.perf_counter() - self._last_activity_time,
                    inference_duration_total=self._metrics_total,
                    inference_count=self._metrics_count,
                    label=self._owner._label,
                    metadata=Metadata(model_name=self._owner.model, model_provider=self._owner.provider),
                ),
            )
            self._metrics_total, self._metrics_count = 0.0, 0

    def _speech_event(self, ev: lk_vad.VADEvent) -> None:
        self._last_activity_time = time.perf_counter()
        self._event_ch.send_nowait(ev)
        if self._on_speech is not None:
            self._on_speech(self, ev, self.consumed)


# ---------------------------------------------------------------------------- STT


class SegmentingSTT(lk_stt.StreamAdapter):
    """`stt.StreamAdapter` segmenting on the session's primary VAD stream (module doc)."""

    def __init__(self, *, stt: lk_stt.STT, vad: SessionVAD) -> None:
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
    def __init__(self, stt: SegmentingSTT, *, vad: SessionVAD, wrapped_stt: lk_stt.STT,
                 language: NotGivenOr[str], conn_options: APIConnectOptions) -> None:
        super().__init__(stt, vad=vad, wrapped_stt=wrapped_stt, language=language, conn_options=conn_options)
        self._session_vad = vad
        self._audio = _Fifo(16384)
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
        self._fallback: _SileroStream | None = None
        self._fallback_base = 0  # own position of the fallback stream's first sample
        self._pending: tuple[int, int, float, bool] | None = None  # an end of speech awaiting our frames
        self._out = aio.Chan[tuple[str, float, rtc.AudioFrame | None]]()

    # ---- alignment with the primary VAD stream (both see the same frame objects)

    def _new_primary(self) -> None:
        self._offset = None
        self._primary_recent.clear()
        self._in_speech = False
        self._seg_start = None

    def _primary_frame(self, frame: rtc.AudioFrame, pos: int) -> None:
        own = _match(self._own_recent, frame)
        if own is not None:
            self._offset = pos - own
        else:
            _remember(self._primary_recent, frame, pos)

    def _own_frame(self, frame: rtc.AudioFrame) -> None:
        if not self._rate:
            self._rate = frame.sample_rate
        self._own_pos += frame.samples_per_channel
        self._audio.push(_samples(frame))
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

    def _on_own_vad(self, _s: _SileroStream, ev: lk_vad.VADEvent, pos: int) -> None:
        self._on_vad(ev, pos, own=True)

    def _on_vad(self, ev: lk_vad.VADEvent, pos: int, *, own: bool) -> None:
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

    def _finish_pending(self, which: Any = None) -> None:
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
        vad._listeners.append(self)
        if vad.primary is None:
            self._new_primary()

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
            if self in vad._listeners:
                vad._listeners.remove(self)
            if self._fallback is not None:
                await self._fallback.aclose()
                self._fallback = None


def vad_options(inner: silero.VAD, config: VADConfig | None) -> dict[str, float]:
    """The loaded silero options an agent's `VADConfig` changes (empty: none). A new
    activation threshold moves the deactivation one as silero derives it."""
    if config is None:
        return {}
    loaded = inner._opts
    wanted = {
        "min_speech_duration": float(config.min_speech_duration),
        "min_silence_duration": float(config.min_silence_duration),
        "activation_threshold": float(config.activation_threshold),
    }
    changed = {k: v for k, v in wanted.items() if getattr(loaded, k) != v}
    if "activation_threshold" in changed:
        changed["deactivation_threshold"] = max(changed["activation_threshold"] - 0.15, 0.01)
    return changed


def session_audio_models(stt: lk_stt.STT, vad: Any, config: VADConfig | None = None) -> tuple[lk_stt.STT, Any]:
    """The (STT, VAD) an audio agent gets: with the process's silero VAD, one shared
    VAD stream (`SessionVAD` + `SegmentingSTT`) with the agent's `VADConfig` applied;
    any other VAD, or a streaming STT, as given (LiveKit then wraps a non-streaming STT
    in its own `StreamAdapter`, and the process's VAD options apply)."""
    if isinstance(vad, silero.VAD) and not stt.capabilities.streaming:
        svad = SessionVAD(vad, vad_options(vad, config))
        return SegmentingSTT(stt=stt, vad=svad), svad
    return stt, vad


__all__ = ["SegmentingSTT", "SessionVAD", "session_audio_models"]
