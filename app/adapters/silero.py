"""livekit-plugins-silero: silero's VAD stream run inline, one per voice session.

Written against livekit-plugins-silero 1.8.9 (with livekit-agents 1.8.9, whose
`VADStream` it subclasses): `_SileroStream` re-implements silero's `VADStream` loop
(same model, options, exponential filter, thresholds, prefix padding, resampling and
event fields) and reads `silero.VAD`'s private `_onnx_session`, `_opts` and `_label`.
`install()` checks the installed version; when it differs, `active()` is False and
agents get the library's own VAD path (`app.agents.audio.session_audio_models`).

Why: the OpenAI STT is not a streaming STT, so LiveKit wraps it in
`stt.StreamAdapter(stt, vad)`, which runs a *second* VAD stream over the same audio
only to cut it into utterances, next to the VAD stream `AudioRecognition` runs for turn
detection; and each silero stream hops to a thread pool for every 32 ms window and
copies/re-combines frames in Python (`sim.bench.voice_density` measures the cost).

- `SessionVAD` wraps the process's loaded `silero.VAD` (its ONNX session and options,
  with the agent's overrides). Its streams run inline in `push_frame`: no input task,
  no executor hop, no tee'd metrics task, numpy FIFOs instead of frame lists. Inline
  means on the session's own event loop: one window's inference is a small fraction of
  the 32 ms it covers (ONNX releases the GIL), less than the executor hop it replaces;
  a window slower than `SLOW_INFERENCE_THRESHOLD` is logged as silero does.
- The stream LiveKit's `AudioRecognition` opens for turn detection is the *primary*
  one; its frames and start/end-of-speech events also go to the session's listeners
  (the STT segmenter, `app.adapters.livekit_agents.SegmentingSTT`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
from livekit import rtc
from livekit.agents import utils, vad as lk_vad
from livekit.agents.metrics import VADMetrics
from livekit.agents.metrics.base import Metadata
from livekit.agents.utils import aio
from livekit.plugins import silero
from livekit.plugins.silero import onnx_model
from livekit.plugins.silero.log import logger as silero_logger  # sim.bench.voice_density counts its warnings

from app.adapters.pins import matches

DISTRIBUTION = "livekit-plugins-silero"
WRITTEN_AGAINST = "1.8.9"

SLOW_INFERENCE_THRESHOLD = 0.2
"""As silero: warn when one window's inference took longer than this."""
INT16_MAX = int(np.iinfo(np.int16).max)

_active: bool | None = None


def install() -> bool:
    """Check the installed silero plugin once; True when `SessionVAD` may be used."""
    global _active
    if _active is None:
        _active = matches(DISTRIBUTION, WRITTEN_AGAINST, adapter=__name__)
    return _active


def active() -> bool:
    """True once `install()` found the version this adapter was written against."""
    return bool(_active)


class SpeechListener(Protocol):
    """Gets the primary stream's frames and speech events (the STT segmenter)."""

    def new_primary(self) -> None: ...

    def on_vad(self, ev: lk_vad.VADEvent, pos: int, *, own: bool) -> None: ...

    def primary_frame(self, frame: rtc.AudioFrame, pos: int) -> None: ...


SpeechCallback = Callable[["SileroStream", lk_vad.VADEvent, int], None]
FrameCallback = Callable[["SileroStream", rtc.AudioFrame, int], None]


class Fifo:
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


def frame_samples(frame: rtc.AudioFrame) -> np.ndarray:
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
        overrides: dict[str, Any] = dict(options or {})
        self._opts = dataclasses.replace(inner._opts, **overrides) if overrides else inner._opts
        self.inner = inner
        self.primary: SileroStream | None = None
        self._listeners: list[SpeechListener] = []

    @property
    def model(self) -> str:
        return "silero"

    @property
    def provider(self) -> str:
        return "ONNX"

    @property
    def min_silence_duration(self) -> float:
        return self._opts.min_silence_duration

    def stream(self) -> SileroStream:
        """The stream LiveKit opens for turn detection: the primary one."""
        s = SileroStream(self, on_speech=self._dispatch, on_frame=self._primary_frame)
        self.primary = s
        for listener in self._listeners:
            listener.new_primary()
        return s

    def add_listener(self, listener: SpeechListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: SpeechListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def own_stream(self, on_speech: SpeechCallback) -> SileroStream:
        """A stream whose events go only to `on_speech` (the segmenter's fallback)."""
        return SileroStream(self, on_speech=on_speech, on_frame=None)

    def _closed(self, s: SileroStream) -> None:
        if self.primary is s:
            self.primary = None
            for listener in self._listeners:
                listener.new_primary()

    def _dispatch(self, s: SileroStream, ev: lk_vad.VADEvent, pos: int) -> None:
        if s is self.primary:
            for listener in self._listeners:
                listener.on_vad(ev, pos, own=False)

    def _primary_frame(self, s: SileroStream, frame: rtc.AudioFrame, pos: int) -> None:
        if s is self.primary:
            for listener in self._listeners:
                listener.primary_frame(frame, pos)

class SileroStream(lk_vad.VADStream):
    """silero's `VADStream` algorithm, run inline in `push_frame` (see the module doc).

    `VADStream.__init__` is deliberately not called: it starts an input task and a
    metrics task fed by a tee of the events; both are done inline here."""

    def __init__(
        self, owner: SessionVAD, *, on_speech: SpeechCallback | None, on_frame: FrameCallback | None
    ) -> None:
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
        self._pending_in = Fifo()
        self._pending_inf = Fifo()
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
        data = frame_samples(frame)
        self._pending_in.push(data)
        if self._resampler is not None:
            for f in self._resampler.push(frame):
                self._pending_inf.push(frame_samples(f))
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
