"""`FakeOpenAI`'s audio routes, driven by the real OpenAI SDK and the real LiveKit
OpenAI STT/TTS plugins (what the voice sim relies on), in process and over ASGI."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
from livekit import rtc
from livekit.plugins import openai as lk_openai

from sim.fake_openai import FakeOpenAI, speech_tone
from sim.voice.audio import INPUT_RATE, load_fixture, wav_bytes


def fixture_name() -> str:
    from sim.voice.audio import FIXTURES

    return sorted(p.stem for p in FIXTURES.glob("*.wav"))[0]


async def test_transcriptions_answer_the_queued_transcripts_in_order() -> None:
    fake = FakeOpenAI()
    fake.transcript("first").transcript("second")
    client = fake.client()
    wav = wav_bytes(np.zeros(INPUT_RATE, dtype=np.int16), INPUT_RATE)
    texts = [
        (await client.audio.transcriptions.create(file=("a.wav", wav, "audio/wav"), model="gpt-4o-mini-transcribe")).text
        for _ in range(3)
    ]
    await client.close()
    assert texts == ["first", "second", ""]  # an empty queue transcribes as nothing was said
    assert [t.text for t in fake.transcriptions] == texts
    assert fake.transcriptions[0].model == "gpt-4o-mini-transcribe" and fake.transcriptions[0].audio_s == pytest.approx(1.0)


async def test_the_stt_plugin_sends_the_speech_and_gets_the_transcript() -> None:
    fake = FakeOpenAI().transcript("Hi, this is Ada.")
    client = fake.client()
    stt = lk_openai.STT(model="gpt-4o-mini-transcribe", language="en", client=client)
    pcm = load_fixture(fixture_name())
    frame = rtc.AudioFrame(pcm.tobytes(), INPUT_RATE, 1, len(pcm))
    ev = await stt.recognize([frame])
    await stt.aclose()
    await client.close()
    assert ev.alternatives[0].text == "Hi, this is Ada."
    assert fake.transcriptions[0].language == "en"
    assert fake.transcriptions[0].audio_s == pytest.approx(len(pcm) / INPUT_RATE, abs=0.01)


async def test_the_tts_plugin_gets_pcm_as_long_as_the_text() -> None:
    fake = FakeOpenAI(speech_s_per_char=0.05)
    client = fake.client()
    tts = lk_openai.TTS(model="gpt-4o-mini-tts", voice="alloy", client=client)
    text = "Thanks for calling, how can I help?"  # 35 characters -> 1.75 s
    frames = [ev.frame async for ev in tts.synthesize(text)]
    await tts.aclose()
    await client.close()
    seconds = sum(f.duration for f in frames)
    assert seconds == pytest.approx(len(text) * 0.05, abs=0.02)
    assert {f.sample_rate for f in frames} == {24_000}
    assert fake.speech_requests[0]["input"] == text and fake.speech_requests[0]["voice"] == "alloy"


async def test_speech_audio_hook_and_tone_length() -> None:
    fake = FakeOpenAI(speech_audio=lambda text: b"\x00\x00" * 2400)
    status, headers, body = fake.speak({"input": "anything"})
    assert status == 200 and headers["content-type"] == "audio/pcm" and len(body) == 4800
    assert len(speech_tone(0.5)) == 2 * 12_000


async def test_delays_hold_each_route_back() -> None:
    fake = FakeOpenAI(delays={"transcriptions": 0.05, "speech": 0.0})
    client = fake.client()
    wav = wav_bytes(np.zeros(1600, dtype=np.int16), INPUT_RATE)
    t0 = time.perf_counter()
    await client.audio.transcriptions.create(file=("a.wav", wav, "audio/wav"), model="whisper-1")
    assert time.perf_counter() - t0 >= 0.05
    await client.close()
    assert fake.delay_for("/v1/audio/speech") == 0.0 and fake.delay_for("/v1/chat/completions") == 0.0


async def test_the_asgi_app_serves_the_audio_routes() -> None:
    fake = FakeOpenAI().transcript("over loopback")
    transport = httpx.ASGITransport(app=fake.asgi_app())
    wav = wav_bytes(np.zeros(1600, dtype=np.int16), INPUT_RATE)
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as c:
        r = await c.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav, "audio/wav")},
                         data={"model": "whisper-1", "response_format": "verbose_json"})
        s = await c.post("/v1/audio/speech", json={"input": "hello there", "model": "tts-1", "voice": "alloy"})
    assert r.status_code == 200 and r.json()["text"] == "over loopback" and r.json()["duration"] == pytest.approx(0.1)
    assert s.status_code == 200 and s.headers["content-type"] == "audio/pcm" and len(s.content) > 0
    assert json.loads(json.dumps(fake.speech_requests[0]))["input"] == "hello there"
