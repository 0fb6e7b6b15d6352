"""A turn's `tool_choice:` as the sim's transport sends it: the turn's first request
that offers tools carries it; after a named tool or `required`, the rest of the turn
carries `none`; the next turn starts afresh."""

from __future__ import annotations

import json

import httpx2

from sim.llm import RecordingTransport


class _Echo(httpx2.AsyncBaseTransport):
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sent.append(json.loads(await request.aread()))
        return httpx2.Response(200, json={}, request=request)


async def _post(t: RecordingTransport, tools: bool = True) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], **({"tools": [{"type": "function"}]} if tools else {})}
    await t.handle_async_request(httpx2.Request("POST", "http://x/v1/chat/completions", json=body))


async def test_a_named_tool_first_then_none_for_the_rest_of_the_turn() -> None:
    inner = _Echo()
    t = RecordingTransport(inner, None)
    t.tool_choice = "end_session"
    await _post(t, tools=False)  # no tools offered: left alone, the choice still pending
    await _post(t)
    await _post(t)
    t.tool_choice = None  # the next turn, with no tool_choice of its own
    await _post(t)
    t.tool_choice = "auto"
    await _post(t)
    await _post(t)
    assert [d.get("tool_choice") for d in inner.sent] == [
        None, {"type": "function", "function": {"name": "end_session"}}, "none", None, "auto", None]
