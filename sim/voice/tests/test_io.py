"""The simulated microphone and speaker: what LiveKit's AudioInput/AudioOutput contract
needs from them. Accelerated clocks; assertions are on audio time and event order, never
on how fast the machine is."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit import rtc

from sim.voice.audio import INPUT_RATE, frames, noise, rms_dbfs, silence, tone
from sim.voice.clock import SimClock
from sim.voice.io import Mic, Segment, SimAudioInput, SimAudioOutput, overlaps

FAST = 200.0


def tts_frames(seconds: float, frame_ms: int = 100) -> list[rtc.AudioFrame]:
    return list(frames(tone(seconds, 24_000), 24_000, frame_ms))


async def test_clock_speed_changes_keep_audio_time_continuous() -> None:
    clock = SimClock(FAST)
    await clock.sleep(1.0)
    before = clock.now()
    clock.set_speed(1.0)
    assert clock.now() >= before
    clock.set_speed(FAST)
    await clock.sleep(0.5)
    assert clock.now() >= before + 0.5


async def test_speaker_plays_a_segment_out_and_reports_it() -> None:
    clock = SimClock(FAST)
    out = SimAudioOutput(clock)
    started: list[float] = []
    out.on("playback_started", lambda ev: started.append(ev.created_at))
    for f in tts_frames(1.0):
        await out.capture_frame(f)
    out.flush()
    ev = await asyncio.wait_for(out.wait_for_playout(), 5)
    assert not ev.interrupted and ev.playback_position == pytest.approx(1.0)
    seg = out.segments[0]
    assert len(started) == 1 and seg.pushed_s == pytest.approx(1.0) and seg.played_s == pytest.approx(1.0)
    assert seg.finished is not None and seg.finished - seg.started >= 1.0 - 1e-6
    assert len(seg.audio) == 24_000 and not out.playing


async def test_clear_buffer_cuts_playback_where_the_playhead_is() -> None:
    clock = SimClock(10.0)  # 10 s of audio = 1 s of wall time: the clear lands mid-segment even on a busy box
    out = SimAudioOutput(clock)
    for f in tts_frames(10.0):
        await out.capture_frame(f)
    out.flush()
    await clock.sleep(2.0)
    out.clear_buffer()
    ev = await asyncio.wait_for(out.wait_for_playout(), 5)
    seg = out.segments[0]
    assert ev.interrupted and seg.interrupted
    assert 2.0 <= seg.played_s < 10.0 and ev.playback_position == seg.played_s


async def test_clear_before_flush_ends_the_segment_at_the_flush_and_drops_late_frames() -> None:
    clock = SimClock(FAST)
    out = SimAudioOutput(clock)
    for f in tts_frames(5.0):
        await out.capture_frame(f)
    out.clear_buffer()
    await out.capture_frame(tts_frames(0.1)[0])  # the TTS was still producing
    out.flush()
    ev = await asyncio.wait_for(out.wait_for_playout(), 5)
    assert ev.interrupted and out.segments[0].frames_after_clear == 1
    assert len(out.segments) == 1


async def test_pause_holds_the_playhead_and_resume_plays_the_rest() -> None:
    clock = SimClock(FAST)
    out = SimAudioOutput(clock)
    for f in tts_frames(2.0):
        await out.capture_frame(f)
    out.flush()
    await clock.sleep(0.5)
    out.pause()
    held = out._position(clock.now())
    await clock.sleep(5.0)  # longer than the whole segment: nothing may finish while paused
    assert out.playing and out._position(clock.now()) == pytest.approx(held)
    out.resume()
    ev = await asyncio.wait_for(out.wait_for_playout(), 5)
    assert not ev.interrupted and out.segments[0].played_s == pytest.approx(2.0) and out.pauses == 1


async def test_a_dry_playhead_mid_segment_is_recorded_as_a_gap() -> None:
    clock = SimClock(FAST)
    out = SimAudioOutput(clock)
    first, second = tts_frames(0.2, 100)
    await out.capture_frame(first)
    await clock.sleep(1.0)  # the TTS stalls for 1 s of audio after 0.1 s was queued
    await out.capture_frame(second)
    out.flush()
    await asyncio.wait_for(out.wait_for_playout(), 5)
    gaps = out.segments[0].gaps
    assert len(gaps) == 1 and gaps[0] >= 0.8


async def test_mic_streams_segments_in_order_with_audio_timestamps() -> None:
    clock = SimClock(FAST)
    inp = SimAudioInput()
    mic = Mic(clock, inp, frame_ms=20)
    played = await mic.play([Segment.silence(0.5), Segment.noise(0.3, -50, seed=3), Segment.speech(tone(1.0, INPUT_RATE), "tone")])
    assert [p.kind for p in played] == ["silence", "noise", "speech"]
    assert played[0].end == pytest.approx(played[1].start) and played[1].end == pytest.approx(played[2].start)
    assert played[2].end - played[2].start == pytest.approx(1.0)
    assert inp.frames_pushed == 25 + 15 + 50 == mic.pacing.frames
    got = [inp._queue.get_nowait() for _ in range(inp.frames_pushed)]
    assert all(f.sample_rate == INPUT_RATE and f.samples_per_channel == 320 for f in got)
    await mic.aclose()


async def test_continuous_mic_fills_the_gaps_with_ambient_audio() -> None:
    clock = SimClock(FAST)
    inp = SimAudioInput()
    mic = Mic(clock, inp, frame_ms=20, continuous=True, ambient=Segment.noise(0.2, -55))
    mic.start()
    await clock.sleep(1.0)
    ambient_frames = inp.frames_pushed
    played = await mic.play([Segment.speech(tone(0.4, INPUT_RATE), "x")])
    assert ambient_frames > 0 and played[0].kind == "speech"
    await mic.aclose()
    assert inp.frames_pushed >= ambient_frames + 20


async def test_the_input_ends_when_closed() -> None:
    inp = SimAudioInput()
    inp.push(next(frames(silence(0.02))))
    inp.close()
    got = [f async for f in inp]
    assert len(got) == 1


def test_noise_and_tone_levels() -> None:
    assert rms_dbfs(noise(2.0, -45.0, seed=1)) == pytest.approx(-45.0, abs=0.5)
    assert np.array_equal(noise(0.5, -50, seed=4), noise(0.5, -50, seed=4))
    assert len(tone(0.5, 24_000)) == 12_000 and rms_dbfs(silence(0.1)) == float("-inf")


def test_overlaps_find_speech_starting_during_agent_audio() -> None:
    from sim.voice.io import PlayedSegment, SpokenSegment

    agent = [SpokenSegment(index=0, started=1.0, finished=5.0, pushed_s=4.0)]
    user = [PlayedSegment("speech", "a", 2.0, 3.0, 0, 0), PlayedSegment("speech", "b", 6.0, 7.0, 0, 0),
            PlayedSegment("noise", "n", 1.5, 2.0, 0, 0)]
    assert [(u.label, a.index) for u, a in overlaps(user, agent)] == [("a", 0)]
