"""The voice sim's clock: audio time, running `speed` times faster than the wall clock.

One clock per session drives both sides: the microphone releases a 10 ms frame every
10 ms of *audio* time, and the simulated speaker plays the agent's audio at the same
rate. `speed=1` is real time (the benchmark); tests run at e.g. `speed=20`, so a 2 s
utterance streams in 0.1 s of wall time and a 3 s reply "plays" in 0.15 s.

What is *not* accelerated: LiveKit's own wall-clock timers (endpointing delay,
false-interruption timeout, user-away timeout). The VAD measures speech and silence
in samples, so it sees audio time; LiveKit back-dates the end of speech by the VAD's
silence duration, so in accelerated runs the endpointing wait is mostly already over
when the VAD reports the end of speech, and LiveKit drops its end-of-turn metrics as
inconsistent (the end of speech would predate its start). So the `Mic` streams the
silence that ends a user turn at real time (`Segment.realtime`): the VAD's 0.55 s of
silence then takes 0.55 s, LiveKit's timestamps agree with each other, and the
end-of-turn figures exist, while speech and agent playback still run accelerated.
Latency *values* are meaningful at `speed=1` (the benchmark) only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class SimClock:
    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.base_speed = speed
        self.speed = speed
        self._wall0 = time.perf_counter()
        self._audio0 = 0.0
        self.listeners: list[Callable[[], None]] = []
        """Called after a speed change (sleepers computed at the old speed re-arm)."""

    def now(self) -> float:
        """Audio seconds since the clock started."""
        return self._audio0 + (time.perf_counter() - self._wall0) * self.speed

    def set_speed(self, speed: float) -> None:
        """Change the rate from now on (audio time stays continuous)."""
        if speed <= 0:
            raise ValueError("speed must be > 0")
        wall = time.perf_counter()
        self._audio0 = self._audio0 + (wall - self._wall0) * self.speed
        self._wall0, self.speed = wall, speed
        for cb in self.listeners:
            cb()

    def wall_at(self, audio_t: float) -> float:
        """The `time.perf_counter()` value at which audio time `audio_t` is reached (at the current speed)."""
        return self._wall0 + (audio_t - self._audio0) / self.speed

    def to_wall_s(self, audio_s: float) -> float:
        """A duration in audio seconds, in wall seconds (at the current speed)."""
        return audio_s / self.speed

    async def sleep_until(self, audio_t: float) -> float:
        """Sleep until audio time `audio_t`; returns how late we woke, in wall seconds."""
        delay = self.wall_at(audio_t) - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        return max(0.0, time.perf_counter() - self.wall_at(audio_t))

    async def sleep(self, audio_s: float) -> None:
        await asyncio.sleep(max(0.0, audio_s / self.speed))
