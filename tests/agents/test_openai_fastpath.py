"""The OpenAI SDK fast path returns exactly what the SDK's own transform returns.

The differential tests call the SDK's original `async_maybe_transform` and ours on
the same body; the end-to-end one sends a real LiveKit request through the patched
SDK to the scripted endpoint.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Required

import openai
import pydantic
from hypothesis import given, settings, strategies as st
from livekit.agents import llm
from openai._utils._transform import PropertyInfo, async_maybe_transform as sdk_transform
from openai.resources.chat.completions import completions as completions_module
from openai.types.chat import completion_create_params as params
from typing_extensions import TypedDict

from app.adapters import openai_sdk as openai_fastpath
from sim.fake_openai import FakeOpenAI, ToolCall

STREAMING = params.CompletionCreateParamsStreaming
fast = openai_fastpath.make_transform(sdk_transform)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


def livekit_body(turns: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shape `livekit.agents.inference.llm` sends: a chat context with tool calls."""
    msgs: list[dict[str, Any]] = [{"role": "system", "content": "You help callers."}]
    for i in range(turns):
        msgs += [
            {"role": "user", "content": [{"type": "text", "text": f"turn {i}"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"c{i}", "type": "function",
                 "function": {"name": "record_email", "arguments": json.dumps({"value": "a@b.c"})}},
            ]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": "Recorded email."},
            {"role": "assistant", "content": "Thanks."},
        ]
    tools = [{
        "type": "function",
        "function": {
            "name": "record_email", "description": "Record the caller's email.", "strict": False,
            "parameters": {"type": "object", "properties": {"value": {"type": "string", "format": "email"}},
                           "required": ["value"], "additionalProperties": False},
        },
    }]
    body = {
        "messages": msgs, "tools": tools, "model": "gpt-4o-mini", "stream": True,
        "stream_options": {"include_usage": True}, "tool_choice": "auto",
        "temperature": openai.NOT_GIVEN, "parallel_tool_calls": openai.omit, "user": openai.omit,
    }
    return body | (extra or {})


async def test_installed_on_the_chat_completions_module() -> None:
    assert openai_fastpath.install() is True
    assert openai_fastpath.install() is True  # idempotent: not wrapped twice
    patched = completions_module.async_maybe_transform
    assert getattr(patched, "__wrapped__", None) is sdk_transform
    assert STREAMING in openai_fastpath._identity_types


async def test_same_result_as_the_sdk_on_livekit_bodies() -> None:
    for turns in (0, 1, 30):
        body = livekit_body(turns)
        ours = await fast(body, STREAMING)
        assert ours == await sdk_transform(body, STREAMING)
        assert "temperature" not in ours and "user" not in ours  # omitted values dropped


@settings(max_examples=150, deadline=None)
@given(content=json_values, schema=json_values, extra=st.dictionaries(st.text(max_size=10), json_values, max_size=3))
async def test_same_result_as_the_sdk_on_generated_json(content: Any, schema: Any, extra: dict[str, Any]) -> None:
    body = livekit_body(1)
    body["messages"].append({"role": "user", "content": content})
    body["tools"][0]["function"]["parameters"] = schema
    body.update({k: v for k, v in extra.items() if k not in body})
    assert await fast(body, STREAMING) == await sdk_transform(body, STREAMING)


class Part(pydantic.BaseModel):
    type: str = "text"
    text: str


async def test_anything_not_plain_json_goes_through_the_sdk() -> None:
    cases: list[Any] = [
        ("tuple", ("a", "b")),  # Iterable: the SDK turns it into a list
        ("model", [Part(text="hi")]),  # dumped by the SDK
        ("date", {"when": dt.datetime(2026, 1, 1)}),
        ("nested omit", {"x": openai.NOT_GIVEN}),
    ]
    for name, value in cases:
        body = livekit_body(1, {"metadata": {"v": value}} if name != "model" else None)
        if name == "model":
            body["messages"].append({"role": "user", "content": value})
        assert await fast(body, STREAMING) == await sdk_transform(body, STREAMING), name
    # The model case really was transformed (proves the fallback ran, not an identity copy).
    body = livekit_body(0)
    body["messages"].append({"role": "user", "content": [Part(text="hi")]})
    out = await fast(body, STREAMING)
    assert out["messages"][-1]["content"] == [{"text": "hi"}]  # the SDK dumps with exclude_unset


async def test_other_param_types_are_left_to_the_sdk() -> None:
    assert await fast({"card_id": "x"}, Aliased) == {"cardID": "x"}


class Inner(TypedDict, total=False):
    at: Annotated[dt.datetime, PropertyInfo(format="iso8601")]


class Outer(TypedDict, total=False):
    items: list[Inner]


class Plain(TypedDict, total=False):
    items: list[dict[str, str]]


class Aliased(TypedDict, total=False):
    card_id: Required[Annotated[str, PropertyInfo(alias="cardID")]]


def test_type_tree_check_finds_aliases_and_formats() -> None:
    assert openai_fastpath._declares_transform(Outer) is True
    assert openai_fastpath._declares_transform(Plain) is False
    assert openai_fastpath._declares_transform(STREAMING) is False


async def test_real_livekit_request_through_the_patched_sdk() -> None:
    openai_fastpath.install()
    fake = FakeOpenAI().tool_calls(ToolCall("record_email", {"value": "a@b.c"}, call_id="c1")).text("Done.")
    model = fake.llm()
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="You help callers.")
    ctx.add_message(role="user", content="my email is a@b.c")

    @llm.function_tool
    async def record_email(value: str) -> str:
        """Record the caller's email."""
        return "ok"

    async with model.chat(chat_ctx=ctx, tools=[record_email]) as stream:
        calls = [c async for chunk in stream if chunk.delta for c in (chunk.delta.tool_calls or [])]
    assert [c.name for c in calls] == ["record_email"]
    req = fake.last_request
    assert req.tool_names == ["record_email"]
    assert req.tool("record_email")["parameters"]["required"] == ["value"]
    assert [m["role"] for m in req.messages] == ["system", "user"]
    assert req.body["stream"] is True and "temperature" not in req.body
