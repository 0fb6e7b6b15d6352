"""Tool calls for models without them: the request rewrite and the answer decoding
(`app.localmodels.toolcalls`). The grammar converter is llama.cpp's in production; here
a stand-in returns the JSON Schema it was given, so the tests read what the model would
be constrained to."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.localmodels.toolcalls import ChoiceDecoder, ToolRequestError, plan_tools, prepare_chat

RECORD_ORDER = {"type": "function", "function": {
    "name": "record_order_id", "description": "Record 'order_id' as soon as the user has provided it (required).",
    "parameters": {"type": "object", "properties": {"value": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{6,8}$"}},
                   "required": ["value"]}}}
END = {"type": "function", "function": {
    "name": "end_session", "description": "End the session.",
    "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}}}}
MESSAGES = [{"role": "system", "content": "You are support."}, {"role": "user", "content": "Order AB123456 is late"}]


def schema_of(grammar: str) -> dict[str, Any]:
    return json.loads(grammar)


def body(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": MESSAGES, "tools": [RECORD_ORDER, END], **kw}


def options(grammar: str) -> list[dict[str, Any]]:
    doc = schema_of(grammar)
    return doc.get("anyOf", [doc])


def test_tools_become_a_grammar_with_reply_or_each_tool_and_its_own_argument_schema() -> None:
    prepared = prepare_chat(body(), mode="constrained", grammar_of=lambda s: s, max_tokens=512)
    assert prepared.plan is not None and prepared.plan.allow_reply
    opts = options(prepared.body["grammar"])
    actions = [o["properties"]["action"]["const"] for o in opts]
    assert actions == ["reply", "record_order_id", "end_session"]
    order = opts[1]["properties"]["arguments"]
    assert order["properties"]["value"]["pattern"] == "^[A-Z]{2}[0-9]{6,8}$"  # valid by construction
    assert order["additionalProperties"] is False  # no invented keys beside the declared ones
    assert opts[2]["properties"]["arguments"]["additionalProperties"] is False
    assert all(o["required"][0] == "action" for o in opts)  # the choice is the first thing generated
    assert "tools" not in prepared.body  # the template would drop them: the prompt lists them instead
    system = prepared.body["messages"][0]["content"]
    assert system.startswith("You are support.") and "- record_order_id(value): Record 'order_id'" in system
    assert prepared.body["stream"] is True and prepared.body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(("choice", "actions"), [
    ("required", ["record_order_id", "end_session"]),
    ({"type": "function", "function": {"name": "end_session"}}, ["end_session"]),
])
def test_tool_choice_narrows_what_the_model_may_answer(choice: Any, actions: list[str]) -> None:
    prepared = prepare_chat(body(tool_choice=choice), mode="constrained", grammar_of=lambda s: s, max_tokens=512)
    assert [o["properties"]["action"]["const"] for o in options(prepared.body["grammar"])] == actions
    # the prompt stays the same (llama.cpp's cache keeps the conversation): only the grammar narrows
    assert prepared.body["messages"] == prepare_chat(body(), mode="constrained", grammar_of=lambda s: s, max_tokens=512).body["messages"]


def test_tool_choice_none_and_native_mode_send_no_grammar() -> None:
    none = prepare_chat(body(tool_choice="none"), mode="constrained", grammar_of=lambda s: s, max_tokens=512)
    assert none.plan is None and "grammar" not in none.body and "tools" not in none.body
    native = prepare_chat(body(), mode="native", grammar_of=lambda s: s, max_tokens=512)
    assert native.plan is None and native.body["tools"] == [RECORD_ORDER, END]


def test_bad_tool_requests_are_client_errors_naming_the_parameter() -> None:
    with pytest.raises(ToolRequestError) as e:
        prepare_chat(body(tool_choice={"type": "function", "function": {"name": "nope"}}), mode="constrained",
                     grammar_of=lambda s: s, max_tokens=512)
    assert e.value.param == "tool_choice" and "'nope'" in str(e.value)
    with pytest.raises(ToolRequestError) as e:
        prepare_chat(body(tools=[{"type": "function"}]), mode="constrained", grammar_of=lambda s: s, max_tokens=512)
    assert e.value.param == "tools[0]"
    with pytest.raises(ToolRequestError) as e:
        prepare_chat({"messages": []}, mode="constrained", grammar_of=lambda s: s, max_tokens=512)
    assert e.value.param == "messages"
    with pytest.raises(ToolRequestError):
        prepare_chat({**body(), "max_completion_tokens": 0}, mode="constrained", grammar_of=lambda s: s, max_tokens=512)


def test_max_completion_tokens_is_sent_as_max_tokens_under_the_servers_ceiling() -> None:
    def sent(**kw: Any) -> int:
        return prepare_chat({**body(), **kw}, mode="constrained", grammar_of=lambda s: s, max_tokens=512).body["max_tokens"]

    assert sent(max_completion_tokens=40) == 40 and sent(max_tokens=30) == 30
    assert sent() == 512 and sent(max_tokens=100_000) == 512


def test_a_schema_the_grammar_cannot_express_leaves_that_tool_loose_and_the_others_exact() -> None:
    weird = {"type": "function", "function": {"name": "record_code", "parameters": {
        "type": "object", "properties": {"value": {"type": "string", "pattern": "(?=x)"}}}}}

    def grammar_of(schema: str) -> str:
        if "(?=x)" in schema:
            raise ValueError("unsupported pattern")
        return schema

    plan = plan_tools([weird["function"], RECORD_ORDER["function"]], True, grammar_of)
    assert plan.loose == ("record_code",)
    opts = options(plan.grammar)
    assert opts[1]["properties"]["arguments"] == {"type": "object"}
    assert opts[2]["properties"]["arguments"]["properties"]["value"]["pattern"].startswith("^[A-Z]")


def test_defs_of_each_tool_are_hoisted_and_their_refs_rewritten() -> None:
    fn = {"name": "record_addr", "parameters": {"type": "object", "properties": {"value": {"$ref": "#/$defs/addr"}},
                                                "$defs": {"addr": {"type": "string", "minLength": 3}}}}
    plan = plan_tools([fn], False, lambda s: s)
    doc = schema_of(plan.grammar)
    assert doc["$defs"] == {"t0_addr": {"type": "string", "minLength": 3}}
    assert doc["properties"]["arguments"]["properties"]["value"] == {"$ref": "#/$defs/t0_addr"}


def test_history_is_rewritten_into_the_json_the_model_answers_in() -> None:
    history = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "AB123456"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "record_order_id", "arguments": '{"value": "AB123456"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": 'Recorded order_id="AB123456".'},
    ]
    prepared = prepare_chat({"messages": history, "tools": [RECORD_ORDER]}, mode="constrained", grammar_of=lambda s: s, max_tokens=512)
    msgs = prepared.body["messages"]
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith("Be brief.")
    assert json.loads(msgs[1]["content"]) == {"action": "reply", "text": "Hello!"}
    assert json.loads(msgs[3]["content"]) == {"action": "record_order_id", "arguments": {"value": "AB123456"}}
    assert msgs[4] == {"role": "tool", "content": 'record_order_id answered: Recorded order_id="AB123456".'}
    assert all(isinstance(m["content"], str) for m in msgs)  # a plain template concatenates strings


def feed_all(dec: ChoiceDecoder, pieces: list[str]) -> str:
    return "".join(dec.feed(p) for p in pieces)


def plan() -> Any:
    return plan_tools([RECORD_ORDER["function"]], True, lambda s: s)


@pytest.mark.parametrize("head", ['{ "action" : "reply", "text": ',
                                  # whitespace before the comma, as SmolLM2 writes it now and then (the
                                  # grammar allows it): split after the action, it once lost the whole reply
                                  '{\n    "action": "reply"\n  , \n    "text": \n      '])
def test_a_reply_streams_as_decoded_text_whatever_the_piece_boundaries(head: str) -> None:
    raw = head + '"Caf\\u00e9 \\"ok\\"\\n \\ud83d\\ude00 done" }'
    want = 'Café "ok"\n 😀 done'
    for size in (1, 2, 3, 5, 7, len(raw)):
        dec = ChoiceDecoder(plan())
        pieces = [raw[i : i + size] for i in range(0, len(raw), size)]
        assert feed_all(dec, pieces) == want, size
        assert dec.finish().tool_call is None


def test_text_is_sent_before_the_answer_is_complete() -> None:
    dec = ChoiceDecoder(plan())
    assert dec.feed('{"action": "reply", "text": "Hello') == "Hello"
    assert dec.feed(" there") == " there"


def test_a_tool_call_is_decoded_whole_at_the_end() -> None:
    dec = ChoiceDecoder(plan())
    assert feed_all(dec, ['{"action": "record_', 'order_id", "arguments": {"value": "AB', '123456"}}']) == ""
    call = dec.finish().tool_call
    assert call is not None and call[1] == "record_order_id" and json.loads(call[2]) == {"value": "AB123456"}
    assert call[0].startswith("call_")


def test_a_tool_call_cut_off_mid_arguments_is_not_invented() -> None:
    dec = ChoiceDecoder(plan())
    dec.feed('{"action": "record_order_id", "arguments": {"value": "AB12')
    assert dec.finish().tool_call is None
