"""The model server's HTTP layer (`app.localmodels.server`) over real sockets, with a
scripted backend and the OpenAI SDK as the client (what the LiveKit plugins use)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import openai
import pytest
import uvicorn

from app.localmodels import server as server_mod
from app.localmodels.backend import ModelError
from app.localmodels.server import create_model_app
from app.localmodels.settings import LocalModelSettings
from sim.db_servers import free_port
from tests.localmodels.backends import ScriptedBackend


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(backend: ScriptedBackend, **settings: Any) -> str:
        port = free_port()
        app = create_model_app(backend, LocalModelSettings(_env_file=None, **settings))  # type: ignore[call-arg]
        srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
        task = asyncio.create_task(srv.serve())
        while not srv.started:
            await asyncio.sleep(0.01)
        servers.append((srv, task))
        return f"http://127.0.0.1:{port}"

    yield start
    for srv, task in servers:
        srv.should_exit = True
        await task


def client(root: str, read: float = 5.0) -> openai.AsyncClient:
    return openai.AsyncClient(api_key="sk-x", base_url=f"{root}/v1", max_retries=0,
                              http_client=httpx2.AsyncClient(timeout=httpx2.Timeout(read, connect=5.0)))


MSGS = [{"role": "user", "content": "hi"}]


async def test_a_slow_first_token_keeps_the_stream_alive_past_the_clients_read_timeout(serve, monkeypatch) -> None:
    monkeypatch.setattr(server_mod, "KEEPALIVE_S", 0.2)
    backend = ScriptedBackend(first_delay=1.5)  # a long prompt being read
    root = await serve(backend)
    async with client(root, read=0.6) as c:  # would time out without the keep-alive comments
        stream = await c.chat.completions.create(model="m", messages=MSGS, stream=True)  # type: ignore[arg-type]
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == "Hello there"
    async with httpx.AsyncClient() as raw:
        backend.first_delay = 0.7
        r = await raw.post(f"{root}/v1/chat/completions", json={"messages": MSGS, "stream": True}, timeout=5)
    assert r.text.startswith(": keep-alive\n\n") and r.text.endswith("data: [DONE]\n\n")


async def test_a_refusal_before_the_first_token_is_an_http_error_the_sdk_reports(serve) -> None:
    refusal = ModelError(400, "the conversation is longer than the model's context: 9000 prompt tokens, "
                              "8192 available per conversation (LOCAL_LLM_CONTEXT)", code="context_length_exceeded")
    root = await serve(ScriptedBackend(refuse=refusal))
    async with client(root) as c:
        with pytest.raises(openai.BadRequestError) as e:
            await c.chat.completions.create(model="m", messages=MSGS, stream=True)  # type: ignore[arg-type]
    assert e.value.status_code == 400 and e.value.code == "context_length_exceeded"
    assert "LOCAL_LLM_CONTEXT" in e.value.message


async def test_a_failure_mid_stream_is_an_error_event(serve) -> None:
    root = await serve(ScriptedBackend(pieces=["a", "b", "c"], fail_after=1))
    async with client(root) as c:
        stream = await c.chat.completions.create(model="m", messages=MSGS, stream=True)  # type: ignore[arg-type]
        with pytest.raises(openai.APIError) as e:
            async for _ in stream:
                pass
    assert "the model crashed" in str(e.value)


async def test_a_client_that_hangs_up_stops_the_generation(serve) -> None:
    backend = ScriptedBackend(pieces=["x"] * 200, piece_delay=0.02)
    root = await serve(backend)
    async with httpx.AsyncClient() as raw:
        async with raw.stream("POST", f"{root}/v1/chat/completions", json={"messages": MSGS, "stream": True}) as r:
            async for line in r.aiter_lines():
                if '"x"' in line:
                    break
    await asyncio.wait_for(backend.closed.wait(), 3)
    assert not backend.finished  # closed early: the rest was never generated


async def test_usage_is_sent_only_when_asked_and_non_streamed_answers_are_assembled(serve) -> None:
    root = await serve(ScriptedBackend(tool_call=("record_name", '{"value": "Ada"}')))
    async with httpx.AsyncClient() as raw:
        plain = await raw.post(f"{root}/v1/chat/completions", json={"messages": MSGS, "stream": True})
        usage = await raw.post(f"{root}/v1/chat/completions",
                               json={"messages": MSGS, "stream": True, "stream_options": {"include_usage": True}})
        whole = await raw.post(f"{root}/v1/chat/completions", json={"messages": MSGS})
    assert '"usage"' not in plain.text and '"total_tokens": 5' in usage.text
    doc = whole.json()
    assert whole.status_code == 200 and doc["object"] == "chat.completion"
    msg = doc["choices"][0]["message"]
    assert msg["content"] == "Hello there" and msg["tool_calls"][0]["function"] == {"name": "record_name", "arguments": '{"value": "Ada"}'}
    assert doc["choices"][0]["finish_reason"] == "tool_calls" and doc["usage"]["total_tokens"] == 5


async def test_malformed_chat_bodies_are_openai_style_400s(serve) -> None:
    root = await serve(ScriptedBackend())
    async with httpx.AsyncClient() as raw:
        not_json = await raw.post(f"{root}/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
        not_object = await raw.post(f"{root}/v1/chat/completions", json=[1, 2])
    for r in (not_json, not_object):
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


async def test_transcriptions_check_the_upload(serve) -> None:
    backend = ScriptedBackend()
    root = await serve(backend, stt_max_bytes=4096)
    async with httpx.AsyncClient() as raw:
        ok = await raw.post(f"{root}/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF" + b"\0" * 100)},
                            data={"model": "w", "response_format": "verbose_json", "language": "en"})
        text = await raw.post(f"{root}/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF....")},
                              data={"response_format": "text"})
        missing = await raw.post(f"{root}/v1/audio/transcriptions", data={"model": "w"})
        big = await raw.post(f"{root}/v1/audio/transcriptions", files={"file": ("a.wav", b"\0" * 200_000)})
        not_audio = await raw.post(f"{root}/v1/audio/transcriptions", files={"file": ("a.txt", b"NOTAUDIO at all")})
        fmt = await raw.post(f"{root}/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF")},
                             data={"response_format": "srt"})
    assert ok.status_code == 200 and ok.json()["text"] == "hello world" and ok.json()["duration"] == 1.5
    assert text.status_code == 200 and text.text == "hello world"
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    assert big.status_code == 413 and "LOCAL_STT_MAX_BYTES" in big.json()["error"]["message"]
    assert not_audio.status_code == 400 and "not audio" in not_audio.json()["error"]["message"]
    assert fmt.status_code == 400 and fmt.json()["error"]["param"] == "response_format"
    assert len(backend.transcribed) == 3  # the refused ones never reached the model


async def test_speech_checks_its_request_and_streams_the_audio(serve) -> None:
    root = await serve(ScriptedBackend(), tts_max_chars=50)
    async with httpx.AsyncClient() as raw:
        ok = await raw.post(f"{root}/v1/audio/speech", json={"input": "one two three", "response_format": "pcm"})
        bad = [await raw.post(f"{root}/v1/audio/speech", json=b) for b in (
            {"input": ""}, {"input": "x" * 51}, {"input": "hi", "response_format": "ogg"}, {"input": "hi", "speed": 9})]
    assert ok.status_code == 200 and ok.headers["content-type"] == "audio/pcm" and ok.content == b"onetwothree"
    assert [r.status_code for r in bad] == [400, 400, 400, 400]
    assert [r.json()["error"]["param"] for r in bad] == ["input", "input", "response_format", "speed"]


async def test_health_and_models_say_what_is_served(serve) -> None:
    root = await serve(ScriptedBackend(kind="demo"))
    async with httpx.AsyncClient() as raw:
        health = (await raw.get(f"{root}/health")).json()
        models = (await raw.get(f"{root}/v1/models")).json()
    assert health == {"status": "ok", "backend": "demo",
                      "models": {"llm": "scripted-llm", "stt": "scripted-stt", "tts": "scripted-tts"}}
    assert [m["id"] for m in models["data"]] == ["scripted-llm", "scripted-stt", "scripted-tts"]
