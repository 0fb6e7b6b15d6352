"""The OpenAI wire format our model servers speak: chat completion chunks, SSE, errors.

One definition shared by the local model server, the `--demo` scripted model, and the
test double in `sim/fake_openai.py` (which imports it from here), so all three stream
exactly what `livekit-plugins-openai` (through the OpenAI SDK) parses.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

SSE_DONE = b"data: [DONE]\n\n"
SSE_KEEPALIVE = b": keep-alive\n\n"
"""An SSE comment: ignored by clients, but bytes on the wire, so a client's read timeout
does not fire while a long prompt is being read before the first token."""

SPEECH_RATE = 24_000
"""OpenAI's `pcm` speech format: 24 kHz mono signed 16-bit little-endian."""


def completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def chunk(cid: str, model: str, delta: Mapping[str, Any], finish: str | None = None,
          *, created: int | None = None) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish}],
    }


def usage_chunk(cid: str, model: str, usage: Mapping[str, Any]) -> dict[str, Any]:
    """The last chunk when the client asked for `stream_options.include_usage`."""
    return {**chunk(cid, model, {}), "choices": [], "usage": dict(usage)}


def tool_call_delta(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, "id": call_id, "type": "function",
                            "function": {"name": name, "arguments": arguments}}]}


def sse(doc: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(doc, ensure_ascii=False)}\n\n".encode()


def error_body(message: str, *, kind: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    """OpenAI's error document: the SDK raises `APIStatusError` with this message."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def text_pieces(text: str) -> list[str]:
    """`text` split into word-sized deltas that concatenate back to it (whitespace kept
    on the word before it), as a server streams a reply."""
    out: list[str] = []
    start = 0
    for i, ch in enumerate(text):
        if ch == " " and i + 1 < len(text):
            out.append(text[start : i + 1])
            start = i + 1
    if start < len(text):
        out.append(text[start:])
    return out


def completion_from_chunks(chunks: list[Mapping[str, Any]], model: str) -> dict[str, Any]:
    """A non-streaming `chat.completion` assembled from the chunks of a stream."""
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    usage: Any = None
    cid = completion_id()
    for c in chunks:
        cid = c.get("id", cid)
        usage = c.get("usage") or usage
        for choice in c.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                content.append(delta["content"])
            for tc in delta.get("tool_calls") or []:
                slot = calls.setdefault(tc.get("index", 0), {"id": None, "type": "function",
                                                               "function": {"name": "", "arguments": ""}})
                slot["id"] = tc.get("id") or slot["id"]
                fn = tc.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or (None if calls else "")}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    doc: dict[str, Any] = {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish or "stop"}],
    }
    if usage is not None:
        doc["usage"] = usage
    return doc
