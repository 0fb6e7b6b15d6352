"""The scripted OpenAI fake itself: transport and ASGI forms, errors, capture."""

from __future__ import annotations

import json

import httpx2
import openai
import pytest
from livekit.agents import Agent, AgentSession, llm
from livekit.plugins import openai as lk_openai

from sim.fake_openai import FakeOpenAI, ScriptedText, ToolCall


async def _stream_text(model: lk_openai.LLM, prompt: str = "hi") -> tuple[str, list[llm.FunctionToolCall]]:
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content=prompt)
    text, calls = "", []
    async with model.chat(chat_ctx=ctx) as stream:
        async for chunk in stream:
            if chunk.delta:
                text += chunk.delta.content or ""
                calls.extend(chunk.delta.tool_calls or [])
    return text, calls


async def test_text_and_parallel_tool_calls_through_the_plugin() -> None:
    fake = FakeOpenAI().text("Hello there, friend.")
    fake.tool_calls(ToolCall("a", {"x": 1}, call_id="c1"), ToolCall("b", '{"y": "long argument text"}'))
    model = fake.llm()
    assert await _stream_text(model) == ("Hello there, friend.", [])
    _, calls = await _stream_text(model)
    assert [(c.name, json.loads(c.arguments), c.call_id) for c in calls] == [
        ("a", {"x": 1}, "c1"),
        ("b", {"y": "long argument text"}, "call_2_1"),
    ]
    assert fake.requests[0].messages == [{"role": "user", "content": "hi"}]
    assert fake.pending == 0


async def test_asgi_form_serves_the_same_script() -> None:
    fake = FakeOpenAI().text("via asgi")
    fake.text("non-streamed")
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=fake.asgi_app()))
    client = openai.AsyncClient(api_key="x", base_url="http://loop/v1", http_client=http, max_retries=0)
    assert await _stream_text(lk_openai.LLM(model="m", client=client)) == ("via asgi", [])
    done = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert done.choices[0].message.content == "non-streamed"
    assert (await client.models.list()).data == []
    assert len(fake.requests) == 2


async def test_errors_and_an_exhausted_script_are_http_errors() -> None:
    fake = FakeOpenAI().error(503, "overloaded")
    client = fake.client()
    with pytest.raises(openai.InternalServerError, match="overloaded"):
        await client.chat.completions.create(model="m", messages=[])
    with pytest.raises(openai.BadRequestError, match="no scripted reply"):
        await client.chat.completions.create(model="m", messages=[])
    assert len(fake.requests) == 2


async def test_responder_computes_reply_from_request() -> None:
    fake = FakeOpenAI([lambda req: ScriptedText(f"you said {req.last_message['content']}")])
    async with AgentSession(llm=fake.llm()) as session:
        await session.start(Agent(instructions="echo"))
        result = await session.run(user_input="ping")
    result.expect.next_event().is_message(role="assistant")
    assert result.events[0].item.text_content == "you said ping"  # type: ignore[union-attr]
    assert fake.last_request.system == "echo"
