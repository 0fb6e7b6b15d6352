"""The scripted model: an OpenAI-compatible Chat Completions endpoint, in process, that
answers each request with the next reply a stored test scripted (`llm:` of a step).

A product feature, not a test double: "run the agent's tests against the scripted
model" checks what the platform does with a model's answers (tool wiring, validation,
handoffs, what the record collects) without paying a model or depending on its mood.
It plugs into `AgentFactory(transport=...)`, so every client the factory builds (each
member of an LLM chain, a handoff target's) sends here and the real
`livekit-plugins-openai` code builds and parses every request. Streams use the wire
format of `app.localmodels.wire`, as the local model server does.

A request with no scripted reply left is answered with HTTP 400 (not retried), so an
under-scripted step fails at once; `pending` tells the runner a step left replies unused.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

import httpx2

from app.domain.scenario.format import LLMReply
from app.localmodels import wire

MODEL_NAME = "scripted"


def _args(value: dict[str, Any] | str | None) -> str:
    if isinstance(value, str):
        return value  # a scripted malformed argument string, sent as is
    return json.dumps(value or {})


def _chunks(reply: LLMReply, cid: str) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = [wire.chunk(cid, MODEL_NAME, {"role": "assistant"})]
    if reply.text:
        out += [wire.chunk(cid, MODEL_NAME, {"content": piece}) for piece in wire.text_pieces(reply.text)]
    calls: list[tuple[str, dict[str, Any] | str | None]] = []
    if reply.tool is not None:
        calls.append((reply.tool, reply.args))
    for call in reply.tools or []:
        calls.append((call.name, call.args))
    for i, (name, args) in enumerate(calls):
        out.append(wire.chunk(cid, MODEL_NAME, wire.tool_call_delta(i, f"call_{cid[-8:]}_{i}", name, _args(args))))
    out.append(wire.chunk(cid, MODEL_NAME, {}, "tool_calls" if calls else "stop"))
    return out


class ScriptedModel(httpx2.AsyncBaseTransport):
    """Chat Completions from a queue of `LLMReply`s, in the order they are asked for."""

    def __init__(self) -> None:
        self._queue: deque[LLMReply] = deque()
        self.asks = 0
        """Chat requests answered so far (scripted or refused)."""

    def script(self, replies: Iterable[LLMReply]) -> None:
        self._queue.extend(replies)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def drop_pending(self) -> int:
        n = len(self._queue)
        self._queue.clear()
        return n

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
            return httpx2.Response(404, json=wire.error_body(f"the scripted model has no {request.url.path}"))
        try:
            body = json.loads(await request.aread() or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return httpx2.Response(400, json=wire.error_body("request body is not a JSON object"))
        self.asks += 1
        if not self._queue:
            return httpx2.Response(400, json=wire.error_body("no scripted reply left for this request"))
        reply = self._queue.popleft()
        if reply.error is not None:
            return httpx2.Response(reply.error, json=wire.error_body(f"scripted error {reply.error}"))
        chunks = _chunks(reply, wire.completion_id())
        if not body.get("stream"):
            return httpx2.Response(200, json=wire.completion_from_chunks(chunks, MODEL_NAME))
        stream_options = body.get("stream_options")
        if isinstance(stream_options, dict) and stream_options.get("include_usage"):
            completion = len(wire.text_pieces(reply.text or "")) + sum(
                1 for c in chunks for _ in (c["choices"][0]["delta"].get("tool_calls") or []))
            prompt = len(json.dumps(body.get("messages", []))) // 4
            chunks.append(wire.usage_chunk(chunks[0]["id"], MODEL_NAME, {
                "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}))
        content = b"".join(wire.sse(c) for c in chunks) + wire.SSE_DONE
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=content)
