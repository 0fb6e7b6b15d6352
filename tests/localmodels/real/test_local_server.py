"""The real local model server (`python -m app models serve`, the `local` extra):
SmolLM2 via llama.cpp, Whisper base, Piper, over HTTP with the OpenAI SDK as client.
One server per test process (`sim.local_models`), shared with the live sim."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import wave

import httpx
import httpx2
import jsonschema
import openai
import pytest

from sim.local_models import local_model_server
from sim.voice.audio import fixture_path
from sim.voice.wer import wer

ORDER_ID = {"type": "string", "pattern": "^[A-Z]{2}[0-9]{6,8}$"}
TOOLS = [
    {"type": "function", "function": {"name": "record_order_id", "description": "Record the order number.",
                                      "parameters": {"type": "object", "properties": {"value": ORDER_ID},
                                                     "required": ["value"]}}},
    {"type": "function", "function": {"name": "record_urgency", "description": "Record how urgent it is.",
                                      "parameters": {"type": "object", "properties": {
                                          "value": {"enum": ["low", "medium", "high", "critical"]}}, "required": ["value"]}}},
]


@pytest.fixture(scope="module")
def root() -> str:
    return local_model_server().root


def sdk(root: str) -> openai.AsyncClient:
    return openai.AsyncClient(api_key="sk-local", base_url=f"{root}/v1", max_retries=0,
                              http_client=httpx2.AsyncClient(timeout=httpx2.Timeout(120, connect=5)))


async def test_a_streamed_reply_from_the_real_model(root: str) -> None:
    async with sdk(root) as c:
        stream = await c.chat.completions.create(
            model="any", stream=True, max_tokens=24, stream_options={"include_usage": True},
            messages=[{"role": "system", "content": "You are a helpful support assistant."},
                      {"role": "user", "content": "Hello, can you help me with my order?"}])
        chunks = [ch async for ch in stream]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.strip()
    usage = [ch.usage for ch in chunks if ch.usage is not None]
    assert usage and 0 < usage[-1].completion_tokens <= 24


@pytest.mark.parametrize("said", ["My order number is AB123456.", "It's the order from last week, I think.",
                                  "I don't remember the number, sorry."])
async def test_a_called_tool_gets_arguments_valid_by_construction(root: str, said: str) -> None:
    """Whatever the caller said, a forced record_order_id call carries a value matching
    the field's pattern: the grammar allows nothing else (the model only picks which)."""
    async with sdk(root) as c:
        r = await c.chat.completions.create(
            model="any", max_tokens=60, tools=TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": "record_order_id"}},
            messages=[{"role": "system", "content": "You record support details."}, {"role": "user", "content": said}])
    (call,) = r.choices[0].message.tool_calls or []
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "record_order_id"
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, TOOLS[0]["function"]["parameters"] | {"additionalProperties": False})


async def test_required_tool_choice_picks_one_of_the_tools_with_valid_arguments(root: str) -> None:
    async with sdk(root) as c:
        r = await c.chat.completions.create(
            model="any", max_tokens=60, tools=TOOLS, tool_choice="required",  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "It is very urgent!"}])
    (call,) = r.choices[0].message.tool_calls or []
    schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == call.function.name)
    jsonschema.validate(json.loads(call.function.arguments), schema)


async def test_a_conversation_longer_than_the_context_is_a_clear_client_error(root: str) -> None:
    async with sdk(root) as c:
        with pytest.raises(openai.BadRequestError) as e:
            await c.chat.completions.create(model="any", stream=True,
                                            messages=[{"role": "user", "content": "word " * 9000}])
    assert e.value.code == "context_length_exceeded"
    assert "longer than the model's context" in e.value.message and "LOCAL_LLM_CONTEXT" in e.value.message
    async with httpx.AsyncClient() as raw:  # and the server is fine afterwards
        assert (await raw.get(f"{root}/health")).status_code == 200


async def test_speech_is_recognised_and_the_voice_speaks_every_format(root: str) -> None:
    async with httpx.AsyncClient(timeout=120) as raw:
        wav = fixture_path("sorry_i_just_need_to_change_my_address_a3e981").read_bytes()
        heard = await raw.post(f"{root}/v1/audio/transcriptions", files={"file": ("a.wav", wav, "audio/wav")},
                               data={"language": "en", "response_format": "verbose_json"})
        assert heard.status_code == 200, heard.text
        doc = heard.json()
        assert wer("Sorry, I just need to change my address.", doc["text"]) <= 0.2 and doc["duration"] > 1
        spoken = await raw.post(f"{root}/v1/audio/speech", json={"input": "Your order is on its way.",
                                                                 "response_format": "wav"})
        assert spoken.status_code == 200 and spoken.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(spoken.content)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24_000, 1, 2)
            assert 0.8 < w.getnframes() / 24_000 < 5
        back = await raw.post(f"{root}/v1/audio/transcriptions", files={"file": ("b.wav", spoken.content)},
                              data={"response_format": "text"})
        assert wer("Your order is on its way.", back.text) <= 0.2
        for fmt, ctype in (("pcm", "audio/pcm"), ("mp3", "audio/mpeg"), ("opus", "audio/ogg"), ("flac", "audio/flac")):
            r = await raw.post(f"{root}/v1/audio/speech", json={"input": "One. Two.", "response_format": fmt})
            assert r.status_code == 200 and r.headers["content-type"] == ctype and len(r.content) > 1000, fmt


async def test_uploads_that_are_not_audio_or_too_big_are_refused(root: str) -> None:
    async with httpx.AsyncClient(timeout=120) as raw:
        text = await raw.post(f"{root}/v1/audio/transcriptions", files={"file": ("x.wav", b"hello, not audio" * 100)})
        noise = await raw.post(f"{root}/v1/audio/transcriptions", files={"file": ("x.wav", os.urandom(50_000))})
        big = await raw.post(f"{root}/v1/audio/transcriptions", files={"file": ("x.wav", b"\0" * (26 * 1024 * 1024))})
    assert text.status_code == 400 and "not audio" in text.json()["error"]["message"]
    assert noise.status_code == 400
    assert big.status_code == 413 and "LOCAL_STT_MAX_BYTES" in big.json()["error"]["message"]


def _children(pid: int) -> list[tuple[int, str]]:
    """psutil (a dependency), not `ps`: a machine with only Python and uv has no procps."""
    import psutil

    return [(c.pid, " ".join(c.cmdline())) for c in psutil.Process(pid).children()]


async def test_a_crashed_speech_process_fails_one_request_and_is_replaced(root: str) -> None:
    server = local_model_server()
    before = [pid for pid, args in _children(server.pid) if "multiprocessing" in args and "resource_tracker" not in args]
    assert len(before) == 2, _children(server.pid)  # the speech-to-text and text-to-speech processes
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    wav = fixture_path("yes_i_m_ready_d44490").read_bytes()
    async with httpx.AsyncClient(timeout=120) as raw:
        first = await raw.post(f"{root}/v1/audio/transcriptions", files={"file": ("a.wav", wav)})
        assert first.status_code == 503 and "died" in first.json()["error"]["message"]
        again = await raw.post(f"{root}/v1/audio/transcriptions", files={"file": ("a.wav", wav)},
                               data={"response_format": "text"})
        assert again.status_code == 200 and wer("Yes, I'm ready.", again.text) <= 0.34
        speech = [await raw.post(f"{root}/v1/audio/speech", json={"input": "Hello.", "response_format": "pcm"})
                  for _ in range(2)]
    assert [r.status_code for r in speech] == [503, 200]
