"""LiveKit audio I/O with no room: a simulated microphone and a simulated speaker.

- `SimAudioInput` is an `io.AudioInput` (what `RoomIO` gives the session for the
  caller's track): an async iterator of `rtc.AudioFrame`s fed by a `Mic`.
- `Mic` streams user audio (WAV fixtures, silence, low-level noise) in 10-50 ms frames
  (16 kHz, or any rate: the benchmark streams RoomIO's 24 kHz) paced by a `SimClock`
  (real time, or accelerated), records when each segment played, and how late each
  frame was released (the real-time criterion of the
  density benchmark). In `continuous` mode it streams ambient audio (silence or noise)
  whenever no segment is queued, as a real microphone does; otherwise it goes quiet
  between segments (tests: nothing to process while waiting for the agent).
- `SimAudioOutput` is an `io.AudioOutput` (what `RoomIO` gives the session for the
  agent's track): it accepts the TTS frames as fast as they come, and "plays" them on
  the clock with a playhead that can be paused, resumed and cleared, reporting
  `playback_started` / `playback_finished` exactly as a sink must. It records every
  segment the agent said (timestamps, duration pushed, duration played, interrupted,
  gaps where the playhead ran dry mid-segment, and optionally the PCM).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from livekit import rtc
from livekit.agents.voice import io

from sim.voice.audio import INPUT_RATE, frames, noise, silence
from sim.voice.clock import SimClock

LATE_S = 0.100
"""A frame released more than this after its due time breaks real time."""


# --------------------------------------------------------------------------- input


class SimAudioInput(io.AudioInput):
    def __init__(self, *, label: str = "SimMic") -> None:
        super().__init__(label=label)
        self._queue: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue()
        self._closed = False
        self.frames_pushed = 0

    def push(self, frame: rtc.AudioFrame) -> None:
        if not self._closed:
            self.frames_pushed += 1
            self._queue.put_nowait(frame)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await self._queue.get()
        if frame is None:
            raise StopAsyncIteration
        return frame


SegmentKind = Literal["speech", "silence", "noise"]


@dataclass
class Segment:
    kind: SegmentKind
    pcm: np.ndarray
    label: str = ""
    realtime: bool = False
    """Stream at real time whatever the clock's speed (the silence ending a user turn:
    see `sim.voice.clock`)."""
    min_wall_s: float = 0.0
    """Stream over at least this much wall time (slower than the clock if need be)."""
    rate: int = INPUT_RATE
    """Sample rate of `pcm` (the `Mic` streams at its own rate: they must agree)."""

    @property
    def duration(self) -> float:
        return len(self.pcm) / self.rate

    @classmethod
    def speech(cls, pcm: np.ndarray, label: str = "", *, rate: int = INPUT_RATE) -> Segment:
        return cls("speech", pcm, label, rate=rate)

    @classmethod
    def silence(cls, seconds: float, *, realtime: bool = False, rate: int = INPUT_RATE) -> Segment:
        return cls("silence", silence(seconds, rate), f"silence {seconds:g}s", realtime, rate=rate)

    @classmethod
    def noise(cls, seconds: float, level_dbfs: float = -50.0, seed: int = 0, *, rate: int = INPUT_RATE) -> Segment:
        return cls("noise", noise(seconds, level_dbfs, seed=seed, rate=rate), f"noise {seconds:g}s @{level_dbfs:g} dBFS",
                   rate=rate)


@dataclass
class PlayedSegment:
    kind: SegmentKind
    label: str
    start: float
    """Audio time (clock) of its first frame."""
    end: float
    """Audio time just after its last frame."""
    start_wall: float
    """`time.perf_counter()` when its first frame was released."""
    end_wall: float
    """`time.perf_counter()` when its last frame was released (the end of speech, for a
    fixture trimmed to its speech)."""
    end_epoch: float = 0.0
    """`time.time()` at the same moment (LiveKit's timestamps are `time.time()`)."""


LATE_BUCKETS_S = (0.005, 0.010, 0.020, 0.050, 0.100, 0.200, 0.500, 1.0, float("inf"))


@dataclass
class PacingStats:
    frames: int = 0
    late_frames: int = 0
    """Released more than `LATE_S` after their due time."""
    max_late_s: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * len(LATE_BUCKETS_S))
    """Frames per lateness bucket (upper bounds `LATE_BUCKETS_S`)."""

    def add(self, late: float) -> None:
        self.frames += 1
        if late > self.max_late_s:
            self.max_late_s = late
        if late > LATE_S:
            self.late_frames += 1
        for i, bound in enumerate(LATE_BUCKETS_S):
            if late <= bound:
                self.histogram[i] += 1
                break

    def merge(self, other: PacingStats) -> None:
        self.frames += other.frames
        self.late_frames += other.late_frames
        self.max_late_s = max(self.max_late_s, other.max_late_s)
        self.histogram = [a + b for a, b in zip(self.histogram, other.histogram, strict=True)]

    def quantile_bound(self, q: float) -> float:
        """The bucket bound under which at least `q` (0..1) of the frames were released."""
        need, seen = q * self.frames, 0
        for bound, n in zip(LATE_BUCKETS_S, self.histogram, strict=True):
            seen += n
            if seen >= need:
                return bound
        return float("inf")


class Mic:
    """Streams segments into a `SimAudioInput` on a `SimClock`."""

    def __init__(
        self,
        clock: SimClock,
        target: SimAudioInput,
        *,
        frame_ms: int = 20,
        continuous: bool = False,
        ambient: Segment | None = None,
        rate: int = INPUT_RATE,
    ) -> None:
        """`continuous`: stream `ambient` (default: silence) whenever nothing is queued.
        `rate`: the frames' sample rate (LiveKit's RoomIO delivers 24 kHz by default; the
        fixtures are 16 kHz, what silero runs at)."""
        if frame_ms not in (10, 20, 30, 40, 50):
            raise ValueError("frame_ms must be 10, 20, 30, 40 or 50")
        self.rate = rate
        self.clock = clock
        self.target = target
        self.frame_ms = frame_ms
        self.continuous = continuous
        self.ambient = ambient
        self.played: list[PlayedSegment] = []
        self.pacing = PacingStats()
        self._next_t = 0.0
        self._queue: asyncio.Queue[tuple[Segment, asyncio.Future[PlayedSegment]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._ambient_frames: list[rtc.AudioFrame] = []
        self._lock = asyncio.Lock()

    @property
    def frame_s(self) -> float:
        return self.frame_ms / 1000

    def start(self) -> None:
        if self.continuous and self._task is None:
            amb = self.ambient or Segment.silence(1.0, rate=self.rate)
            self._ambient_frames = list(frames(amb.pcm, self.rate, self.frame_ms))
            self._next_t = self.clock.now()
            self._task = asyncio.create_task(self._run(), name="sim-mic")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.target.close()

    async def play(self, segments: Sequence[Segment]) -> list[PlayedSegment]:
        """Stream the segments back to back; returns when the last frame was released."""
        if self._task is not None:
            futs = []
            for seg in segments:
                fut: asyncio.Future[PlayedSegment] = asyncio.get_running_loop().create_future()
                self._queue.put_nowait((seg, fut))
                futs.append(fut)
            return list(await asyncio.gather(*futs))
        async with self._lock:
            self._next_t = max(self._next_t, self.clock.now())
            return [await self._stream(seg) for seg in segments]

    async def _stream(self, seg: Segment) -> PlayedSegment:
        start_t = self._next_t
        start_wall = 0.0
        speed = self.clock.speed
        target = 1.0 if seg.realtime else speed
        if seg.min_wall_s > 0 and seg.duration / target < seg.min_wall_s:
            target = seg.duration / seg.min_wall_s
        if target != speed:
            self.clock.set_speed(target)
        try:
            if seg.rate != self.rate:
                raise ValueError(f"a {seg.rate} Hz segment on a {self.rate} Hz microphone")
            for i, frame in enumerate(frames(seg.pcm, self.rate, self.frame_ms)):
                await self._release(frame)
                if i == 0:
                    start_wall = time.perf_counter()
        finally:
            if self.clock.speed != speed:
                self.clock.set_speed(speed)
        played = PlayedSegment(seg.kind, seg.label, start_t, self._next_t, start_wall or time.perf_counter(),
                               time.perf_counter(), time.time())
        self.played.append(played)
        return played

    async def _release(self, frame: rtc.AudioFrame) -> None:
        late = await self.clock.sleep_until(self._next_t)
        self.pacing.add(late)
        self.target.push(frame)
        self._next_t += self.frame_s

    async def _run(self) -> None:
        k = 0
        while True:
            try:
                seg, fut = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                await self._release(self._ambient_frames[k % len(self._ambient_frames)])
                k += 1
                continue
            try:
                fut.set_result(await self._stream(seg))
            except BaseException as e:  # cancelled mid-segment: wake the waiter
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else RuntimeError("mic stopped"))
                raise


# -------------------------------------------------------------------------- output


@dataclass
class SpokenSegment:
    """One playback segment of the agent (a flush or a clear ends it)."""

    index: int
    sample_rate: int = 0
    started: float = 0.0
    """Audio time (clock) of its first frame."""
    started_wall: float = 0.0
    started_epoch: float = 0.0
    pushed_s: float = 0.0
    played_s: float = 0.0
    interrupted: bool = False
    finished: float | None = None
    """Audio time it finished (played out or cleared)."""
    finished_wall: float | None = None
    gaps: list[float] = field(default_factory=list)
    """Audio seconds the playhead waited for frames mid-segment (a real sink would click)."""
    frames_after_clear: int = 0
    pcm: list[np.ndarray] = field(default_factory=list)

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.pcm) if self.pcm else np.zeros(0, dtype=np.int16)


class SimAudioOutput(io.AudioOutput):
    """A speaker on the sim clock; see the module docstring."""

    def __init__(self, clock: SimClock, *, keep_audio: bool = True, label: str = "SimSpeaker") -> None:
        super().__init__(label=label, capabilities=io.AudioOutputCapabilities(pause=True), next_in_chain=None)
        self.clock = clock
        self.keep_audio = keep_audio
        self.segments: list[SpokenSegment] = []
        self._cur: SpokenSegment | None = None
        self._flushed = False
        self._cleared = False
        self._paused = False
        self._played_base = 0.0
        self._run_start: float | None = None
        self._changed = asyncio.Event()
        self._finish_task: asyncio.Task[None] | None = None
        self.pauses = 0
        clock.listeners.append(self._changed.set)

    # ---- playhead

    def _position(self, t: float) -> float:
        seg = self._cur
        if seg is None:
            return 0.0
        if self._run_start is None:
            return min(self._played_base, seg.pushed_s)
        return min(seg.pushed_s, self._played_base + (t - self._run_start))

    def _freeze(self, t: float) -> None:
        self._played_base = self._position(t)
        self._run_start = None

    # ---- AudioOutput

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        if self._cur is not None and self._cleared:
            self._cur.frames_after_clear += 1  # cleared but not yet flushed: discarded
            return
        await super().capture_frame(frame)
        t = self.clock.now()
        if self._cur is None:
            seg = SpokenSegment(index=len(self.segments), sample_rate=frame.sample_rate, started=t,
                                started_wall=time.perf_counter(), started_epoch=time.time())
            self.segments.append(seg)
            self._cur, self._flushed, self._cleared = seg, False, False
            self._played_base, self._run_start = 0.0, (None if self._paused else t)
            self.on_playback_started(created_at=seg.started_epoch)
        seg = self._cur
        if self._run_start is not None and self._position(t) >= seg.pushed_s and seg.pushed_s > 0:
            # the playhead ran dry before this frame arrived: a gap in the agent's speech
            dry_at = self._run_start + (seg.pushed_s - self._played_base)
            if t - dry_at > 0:
                seg.gaps.append(t - dry_at)
            self._played_base, self._run_start = seg.pushed_s, t
        seg.pushed_s += frame.duration
        if self.keep_audio:
            seg.pcm.append(np.frombuffer(bytes(frame.data), dtype=np.int16).copy())
        self._changed.set()

    def flush(self) -> None:
        super().flush()
        if self._cur is None or self._flushed:
            return
        self._flushed = True
        if self._cleared:
            self._finish(interrupted=True)
        elif self._finish_task is None or self._finish_task.done():
            self._finish_task = asyncio.create_task(self._play_out(), name="sim-speaker-playout")

    def clear_buffer(self) -> None:
        if self._cur is None or self._cleared:
            return
        self._freeze(self.clock.now())
        self._cleared = True
        self._changed.set()
        if self._flushed:
            self._finish(interrupted=True)

    def pause(self) -> None:
        if not self._paused:
            self._paused = True
            self.pauses += 1
            if self._cur is not None and self._run_start is not None:
                self._freeze(self.clock.now())
            self._changed.set()

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._cur is not None and not self._cleared:
                self._run_start = self.clock.now()
            self._changed.set()

    async def _play_out(self) -> None:
        seg = self._cur
        while seg is self._cur and not self._cleared:
            self._changed.clear()
            if self._run_start is not None:
                left = seg.pushed_s - self._position(self.clock.now())  # type: ignore[union-attr]
                if left <= 0:
                    self._finish(interrupted=False)
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self.clock.to_wall_s(left))
            else:
                await self._changed.wait()

    def _finish(self, *, interrupted: bool) -> None:
        seg = self._cur
        if seg is None:
            return
        t = self.clock.now()
        seg.played_s = seg.pushed_s if not interrupted else self._position(t)
        seg.interrupted = interrupted
        seg.finished, seg.finished_wall = t, time.perf_counter()
        self._cur = None
        self._cleared = False
        self._played_base, self._run_start = 0.0, None
        self.on_playback_finished(playback_position=seg.played_s, interrupted=interrupted)

    async def aclose(self) -> None:
        if self._finish_task is not None:
            self._finish_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._finish_task

    # ---- reading the recording

    @property
    def playing(self) -> bool:
        return self._cur is not None

    def played_since(self, index: int) -> list[SpokenSegment]:
        return self.segments[index:]

    def audio_wav(self) -> bytes:
        """Everything the agent said, back to back, as one WAV (for listening to a run)."""
        from sim.voice.audio import wav_bytes

        rate = next((s.sample_rate for s in self.segments if s.sample_rate), 24_000)
        pcm = [s.audio[: round(s.played_s * rate)] for s in self.segments]
        return wav_bytes(np.concatenate(pcm) if pcm else np.zeros(0, dtype=np.int16), rate)


def overlaps(user: Sequence[PlayedSegment], agent: Sequence[SpokenSegment]) -> list[tuple[PlayedSegment, SpokenSegment]]:
    """Barge-ins: user speech that started while agent audio was playing (audio time)."""
    out = []
    for u in user:
        if u.kind != "speech":
            continue
        for a in agent:
            end = a.finished if a.finished is not None else float("inf")
            if a.started <= u.start < end:
                out.append((u, a))
    return out
