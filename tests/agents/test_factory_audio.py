"""Audio models of voice agents: one silero VAD stream per session (`app.agents.audio`,
`app.adapters.silero`, `app.adapters.livekit_agents`).

The factory gives an audio agent a `SessionVAD` over the process's silero VAD and a
`SegmentingSTT` that cuts utterances at that stream's start/end of speech instead of
running a second VAD (LiveKit's `StreamAdapter`). These tests pin the parts the voice
scenarios cannot see: the VAD events equal silero's own, the STT transcribes the audio
*it* was given (aligned with the VAD's sample positions at production's 48 kHz, frames
pushed to either side first), silence LiveKit substitutes for the STT (AEC warm-up,
uninterruptible speech) is not transcribed, and without a primary VAD stream the
segmenter runs its own.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import stt as lk_stt, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.plugins import openai as lk_openai, silero

from app.adapters.livekit_agents import SegmentingSTT
from app.adapters.silero import SessionVAD
from app.agents.audio import session_audio_models
from app.agents.context import NullRecorder, SessionContext
from app.agents.factory import AgentFactory
from app.domain import VADConfig
from app.settings import Settings
from sim.voice.audio import frames, load_fixture
from sim.voice.spec import fixture_name

from .conftest import DictConfigs, MakeConfig


@functools.cache
def _vad() -> silero.VAD:
    return silero.VAD.load()  # type: ignore[return-value]


def _speech(rate: int, *, gap_s: float = 0.8, lead_s: float | None = None) -> np.ndarray:
    """Two committed espeak utterances with silence around them, at `rate`."""
    parts = []
    for i, text in enumerate(("Yes, I'm ready.", "About twelve people.")):
        pcm = load_fixture(fixture_name(text))
        parts += [np.zeros(int(16000 * (lead_s if i == 0 and lead_s is not None else gap_s)), np.int16), pcm]
    parts.append(np.zeros(int(16000 * gap_s), np.int16))
    pcm16 = np.concatenate(parts)
    if rate == 16000:
        return pcm16
    t = np.arange(0, len(pcm16), 16000 / rate)
    return np.interp(t, np.arange(len(pcm16)), pcm16).astype(np.int16)


async def _events(stream: Any, pushes: list[rtc.AudioFrame]) -> list[Any]:
    out: list[Any] = []

    async def consume() -> None:
        async for ev in stream:
            out.append(ev)

    task = asyncio.create_task(consume())
    for f in pushes:
        stream.push_frame(f)
        await asyncio.sleep(0)
    stream.end_input()
    await task
    return out


async def test_session_vad_stream_gives_silero_events() -> None:
    fr = list(frames(_speech(16000), 16000, 20))
    theirs = await _events(_vad().stream(), fr)
    ours = await _events(SessionVAD(_vad()).stream(), fr)

    def shape(e: Any) -> tuple[Any, ...]:
        return (e.type, e.samples_index, e.timestamp, e.speaking, e.probability, e.speech_duration,
                e.silence_duration, e.raw_accumulated_speech, e.raw_accumulated_silence,
                [bytes(f.data) for f in e.frames])

    assert [shape(e) for e in ours] == [shape(e) for e in theirs]
    assert sum(e.type == "end_of_speech" for e in ours) == 2


@pytest.mark.parametrize(("rate", "frame_ms"), [(48000, 10), (24000, 50)])
async def test_session_vad_stream_resamples_as_silero(rate: int, frame_ms: int) -> None:
    # LiveKit's resampler is not bit-exact between two instances (silero's own streams
    # differ from each other too): the same speech segments, within a window or two
    fr = list(frames(_speech(rate), rate, frame_ms))
    theirs = await _events(_vad().stream(), fr)
    ours = await _events(SessionVAD(_vad()).stream(), fr)

    def speech(evs: list[Any]) -> list[tuple[str, int]]:
        return [(e.type, e.samples_index) for e in evs if e.type != "inference_done"]

    assert len(ours) == len(theirs)
    assert [t for t, _ in speech(ours)] == ["start_of_speech", "end_of_speech"] * 2 == [t for t, _ in speech(theirs)]
    for (_, a), (_, b) in zip(speech(ours), speech(theirs), strict=True):
        assert abs(a - b) <= 2 * 512
    for a, b in zip(ours, theirs, strict=True):
        assert a.frames[0].sample_rate == b.frames[0].sample_rate == rate
        if a.type == "end_of_speech":
            assert abs(a.frames[0].samples_per_channel - b.frames[0].samples_per_channel) <= 2 * 512 * rate // 16000


class RecordingSTT(lk_stt.STT):
    """A non-streaming STT recording every buffer it is asked to transcribe."""

    def __init__(self) -> None:
        super().__init__(capabilities=lk_stt.STTCapabilities(streaming=False, interim_results=False))
        self.buffers: list[np.ndarray] = []

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> lk_stt.SpeechEvent:
        frame = utils.merge_frames(buffer)
        self.buffers.append(np.frombuffer(frame.data, np.int16).copy())
        return lk_stt.SpeechEvent(
            type=lk_stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[lk_stt.SpeechData(language="en", text=f"utterance {len(self.buffers)}")],
        )


async def _drive(
    *, rate: int = 48000, frame_ms: int = 10, primary: bool = True, stt_frame: Any = None, stt_first: bool = False,
    lead_s: float | None = None, pushes: list[rtc.AudioFrame] | None = None,
) -> tuple[RecordingSTT, list[Any], list[Any]]:
    """Feed the same frames to the session's VAD stream (as AudioRecognition does) and to
    the segmenting STT's stream (as the STT pipeline does); returns the STT, the STT
    stream's events and the VAD's end-of-speech events."""
    svad = SessionVAD(_vad())
    raw = RecordingSTT()
    seg = SegmentingSTT(stt=raw, vad=svad)
    vad_stream = svad.stream() if primary else None
    stt_stream = seg.stream()
    stt_events: list[Any] = []
    vad_ends: list[Any] = []

    async def read_stt() -> None:
        async for ev in stt_stream:
            stt_events.append(ev)

    async def read_vad() -> None:
        assert vad_stream is not None
        async for ev in vad_stream:
            if ev.type == "end_of_speech":
                vad_ends.append(ev)

    tasks = [asyncio.create_task(read_stt())] + ([asyncio.create_task(read_vad())] if vad_stream else [])
    for i, f in enumerate(pushes if pushes is not None else frames(_speech(rate, lead_s=lead_s), rate, frame_ms)):
        to_stt = stt_frame(f, i) if stt_frame else f
        if stt_first:
            stt_stream.push_frame(to_stt)
        if vad_stream is not None:
            vad_stream.push_frame(f)
        if not stt_first:
            stt_stream.push_frame(to_stt)
        if i % 3 == 0:  # let the STT's input task lag the VAD by a frame or two, as it does
            await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    stt_stream.end_input()
    if vad_stream is not None:
        vad_stream.end_input()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    await stt_stream.aclose()
    return raw, stt_events, vad_ends


@pytest.mark.parametrize("stt_first", [False, True])
async def test_segmenting_stt_transcribes_its_own_audio_aligned_with_the_vad(stt_first: bool) -> None:
    raw, events, vad_ends = await _drive(stt_first=stt_first)
    kinds = [e.type for e in events]
    assert kinds == ["start_of_speech", "end_of_speech", "final_transcript"] * 2
    assert [e.alternatives[0].text for e in events if e.type == "final_transcript"] == ["utterance 1", "utterance 2"]
    # exactly the audio the VAD cut (prefix padding + speech + trailing silence), at 48 kHz
    assert len(vad_ends) == 2
    for heard, ev in zip(raw.buffers, vad_ends, strict=True):
        assert np.array_equal(heard, np.frombuffer(ev.frames[0].data, np.int16))


async def test_one_frame_object_pushed_many_times_keeps_the_alignment() -> None:
    # when the caller's track is detached, LiveKit flushes the STT by pushing one 0.2 s
    # silence frame object several times to the STT and the VAD alike
    silence = utils.audio.silence_frame(0.2, 48000)
    pushes: list[rtc.AudioFrame] = []
    for text in ("Yes, I'm ready.", "About twelve people."):
        pcm = load_fixture(fixture_name(text))
        t = np.arange(0, len(pcm), 1 / 3)
        pushes += list(frames(np.interp(t, np.arange(len(pcm)), pcm).astype(np.int16), 48000, 10))
        pushes += [silence] * 6
    raw, events, vad_ends = await _drive(pushes=pushes)
    assert [e.type for e in events] == ["start_of_speech", "end_of_speech", "final_transcript"] * 2
    for heard, ev in zip(raw.buffers, vad_ends, strict=True):
        assert np.array_equal(heard, np.frombuffer(ev.frames[0].data, np.int16))


async def test_silence_substituted_for_the_stt_is_not_transcribed() -> None:
    # LiveKit feeds the STT silence instead of the caller during AEC warm-up and
    # uninterruptible speech: the VAD hears speech, the STT must not transcribe it
    n_first = int(48000 * 1.9) // 480  # frames of the first utterance (and its lead-in)
    raw, events, vad_ends = await _drive(stt_frame=lambda f, i: utils.audio.silence_frame_like(f) if i < n_first else f)
    assert len(vad_ends) == 2
    assert [e.type for e in events] == ["start_of_speech", "end_of_speech", "final_transcript"]
    assert len(raw.buffers) == 1 and np.array_equal(raw.buffers[0], np.frombuffer(vad_ends[1].frames[0].data, np.int16))


async def test_without_a_primary_vad_stream_the_segmenter_runs_its_own() -> None:
    # after 1 s of audio with nobody running a VAD, the segmenter starts its own stream
    # (LiveKit's StreamAdapter behaviour) and cuts what that stream heard
    raw, events, _ = await _drive(primary=False, rate=16000, frame_ms=20, lead_s=1.5)
    assert [e.type for e in events] == ["start_of_speech", "end_of_speech", "final_transcript"] * 2
    fr = list(frames(_speech(16000, lead_s=1.5), 16000, 20))
    alone = [e for e in await _events(SessionVAD(_vad()).stream(), fr[49:]) if e.type == "end_of_speech"]  # from 1 s
    assert len(raw.buffers) == 2
    for heard, ev in zip(raw.buffers, alone, strict=True):
        assert np.array_equal(heard, np.frombuffer(ev.frames[0].data, np.int16))


async def test_audio_agent_gets_one_shared_vad_stream_and_a_segmenting_stt(
    config: MakeConfig, configs: DictConfigs, recorder: NullRecorder
) -> None:
    settings = Settings(_env_file=None, openai_api_key="sk-real", openai_base_url="http://llm.local/v1")  # type: ignore[call-arg]
    factory = AgentFactory(settings, configs, vad=_vad())
    ctx = SessionContext(session_id="s", room="r", recorder=recorder, audio=True)
    agent = factory.create_agent(config(), ctx)
    assert isinstance(agent.vad, SessionVAD) and agent.vad.inner is _vad()
    assert isinstance(agent.stt, SegmentingSTT) and agent.stt.session_vad is agent.vad
    assert agent.stt.capabilities.streaming  # LiveKit adds no StreamAdapter (and no second VAD)
    inner = agent.stt.wrapped_stt
    assert isinstance(inner, lk_openai.STT) and inner.model == settings.default_stt_model
    assert agent.stt.model == inner.model and agent.vad.min_silence_duration == _vad().min_silence_duration
    other = factory.create_agent(config("other"), ctx)  # e.g. a handoff target: its own stream
    assert other.vad is not agent.vad
    await ctx.aclose()


async def test_agent_vad_settings_apply_to_its_stream_only(
    config: MakeConfig, configs: DictConfigs, recorder: NullRecorder
) -> None:
    settings = Settings(_env_file=None, openai_api_key="sk-real")  # type: ignore[call-arg]
    factory = AgentFactory(settings, configs, vad=_vad())
    ctx = SessionContext(session_id="s", room="r", recorder=recorder, audio=True)
    loaded = _vad()._opts
    default = factory.create_agent(config(), ctx)
    assert default.vad._opts is loaded  # defaults equal the loaded options: shared
    slow = config("interview")
    slow.vad = VADConfig(min_silence_duration=1.2, activation_threshold=0.6)
    agent = factory.create_agent(slow, ctx)
    assert agent.vad.min_silence_duration == 1.2
    assert (agent.vad._opts.activation_threshold, agent.vad._opts.deactivation_threshold) == (0.6, pytest.approx(0.45))
    assert agent.vad._opts.sample_rate == loaded.sample_rate
    assert loaded.min_silence_duration == 0.55 and loaded.activation_threshold == 0.5  # process VAD untouched
    await ctx.aclose()


async def test_a_longer_min_silence_ends_the_turn_later() -> None:
    """The option reaches silero's algorithm: the same speech ends later with 1.2 s."""
    fr = list(frames(_speech(16000, gap_s=2.0), 16000, 20))

    async def first_end(options: dict[str, float]) -> float:
        events = await _events(SessionVAD(_vad(), options).stream(), fr)
        return next(e.timestamp for e in events if e.type == "end_of_speech")

    assert await first_end({"min_silence_duration": 1.2}) - await first_end({}) == pytest.approx(0.65, abs=0.1)


def test_other_vads_and_streaming_stts_are_left_to_livekit() -> None:
    raw = RecordingSTT()
    vad = object()
    assert session_audio_models(raw, vad) == (raw, vad)
    streaming = RecordingSTT()
    streaming._capabilities = lk_stt.STTCapabilities(streaming=True, interim_results=False)
    assert session_audio_models(streaming, _vad()) == (streaming, _vad())
