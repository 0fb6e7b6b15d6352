"""Declarative HTTP tools: validated arguments, every failure mode a tool output."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import respx

from app.agents.context import SessionContext
from app.agents.factory import AgentFactory
from app.agents.tools import MAX_TOOL_OUTPUT_CHARS, call_http_tool
from app.domain import HttpTool
from sim.fake_openai import FakeOpenAI

from .conftest import MakeConfig, running

URL = "https://api.example.com/orders"


def spec(**kw: Any) -> HttpTool:
    doc: dict[str, Any] = {
        "name": "lookup_order",
        "description": "Look up an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "pattern": "^[0-9]+$"}, "verbose": {"type": "boolean"}},
            "required": ["order_id"],
        },
        "url": URL,
        "method": "GET",
        "headers": {"X-Api-Key": "k"},
        "timeout_s": 2,
    }
    doc.update(kw)
    return HttpTool.model_validate(doc)


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (httpx.Response(200, json={"status": "shipped", "eta": "2d"}), '{"status":"shipped","eta":"2d"}'),
        (httpx.Response(500, text="boom"), "error: upstream returned 500"),
        (httpx.Response(404, json={"detail": "no"}), "error: upstream returned 404"),
        (httpx.ReadTimeout("slow"), "error: upstream timed out after 2s"),
        (httpx.ConnectError("refused"), "error: could not reach upstream (ConnectError)"),
        (httpx.Response(200, text="<html>hi</html>"), "error: upstream returned a non-JSON response"),
    ],
    ids=["ok", "500", "404", "timeout", "connect", "bad-json"],
)
async def test_http_tool_outcomes_in_a_session(
    config: MakeConfig,
    factory: AgentFactory,
    ctx: SessionContext,
    fake: FakeOpenAI,
    route: Any,
    expected: str,
) -> None:
    cfg = config(tools=[spec().model_dump(mode="json")])
    agent = factory.create_agent(cfg, ctx)
    fake.tool_call("lookup_order", {"order_id": "42", "verbose": True}).text("Here is what I found.")
    fake.text("Anything else?")
    with respx.mock(assert_all_called=True) as mock:
        r = mock.get(URL)
        if isinstance(route, Exception):
            r.side_effect = route
        else:
            r.return_value = route
        async with running(agent) as (session, _):
            result = await session.run(user_input="where is order 42?")
            again = await session.run(user_input="thanks")  # the session goes on
        sent = r.calls.last.request
    result.expect.next_event().is_function_call(name="lookup_order")
    result.expect.next_event().is_function_call_output(output=expected)
    result.expect.next_event().is_message(role="assistant")
    result.expect.no_more_events()
    again.expect.next_event().is_message(role="assistant")
    assert sent.url.params["order_id"] == "42" and sent.url.params["verbose"] == "true"
    assert sent.headers["x-api-key"] == "k"
    assert fake.requests[1].tool_outputs() == [expected]


async def test_invalid_arguments_never_reach_upstream(
    config: MakeConfig, factory: AgentFactory, ctx: SessionContext, fake: FakeOpenAI
) -> None:
    agent = factory.create_agent(config(tools=[spec().model_dump(mode="json")]), ctx)
    fake.tool_call("lookup_order", {"order_id": "abc"}).text("Which order number?")
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(URL)
        async with running(agent) as (session, _):
            result = await session.run(user_input="order abc")
    result.expect.next_event().is_function_call()
    out = result.expect.next_event().is_function_call_output().event().item.output
    assert out.startswith("error: invalid arguments: order_id: 'abc' does not match")
    assert not route.called


@respx.mock
async def test_post_sends_json_body() -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(201, json={"ok": True}))
    async with httpx.AsyncClient() as client:
        out = await call_http_tool(spec(method="POST"), {"order_id": "7", "tags": ["a"]}, client)
    assert out == '{"ok":true}'
    assert json.loads(route.calls.last.request.content) == {"order_id": "7", "tags": ["a"]}


@respx.mock
async def test_long_response_is_capped() -> None:
    respx.get(URL).mock(return_value=httpx.Response(200, json={"items": ["x" * 100] * 200}))
    async with httpx.AsyncClient() as client:
        out = await call_http_tool(spec(), {"order_id": "1"}, client)
    assert len(out) == MAX_TOOL_OUTPUT_CHARS and out.endswith("…[truncated]")


@respx.mock
async def test_huge_response_is_refused() -> None:
    respx.get(URL).mock(return_value=httpx.Response(200, content=b"[" + b"1," * 300_000 + b"1]"))
    async with httpx.AsyncClient() as client:
        out = await call_http_tool(spec(), {"order_id": "1"}, client)
    assert out == "error: upstream response too large"


@respx.mock
async def test_slow_upstream_hits_the_overall_deadline() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json={})

    respx.get(URL).mock(side_effect=slow)
    async with httpx.AsyncClient() as client:
        out = await asyncio.wait_for(call_http_tool(spec(timeout_s=0.2), {"order_id": "1"}, client), 2)
    assert out == "error: upstream timed out after 0.2s"


@respx.mock
async def test_default_client_is_used_when_none_injected(
    config: MakeConfig, settings: Any, configs: Any, ctx: SessionContext, fake: FakeOpenAI
) -> None:
    respx.get(URL).mock(return_value=httpx.Response(200, json=[1, 2]))
    factory = AgentFactory(settings, configs, llm_client=fake.client())
    agent = factory.create_agent(config(tools=[spec().model_dump(mode="json")]), ctx)
    fake.tool_call("lookup_order", {"order_id": "1"}).text("ok")
    async with running(agent) as (session, _):
        result = await session.run(user_input="x")
    result.expect.next_event().is_function_call()
    result.expect.next_event().is_function_call_output(output="[1,2]")
    from app.agents.tools import aclose_default_http_client

    await aclose_default_http_client()
