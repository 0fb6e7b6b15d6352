"""End to end through a real text-mode `AgentSession`: the factory's agent talks to the
real OpenAI plugin pointed at a scripted fake; assertions are on what the model was
sent (instructions, tools, tool outputs) and on the run events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from livekit.agents import RunContext, function_tool
from livekit.agents.types import NOT_GIVEN

from app.agents.base import BaseAgent
from app.agents.context import NullRecorder, SessionContext
from app.agents.factory import PLACEHOLDER_API_KEY, AgentFactory
from app.agents.tools import END_SESSION_PARAMETERS, MAX_PER_FIELD_TOOLS
from app.domain import SessionStatus
from app.settings import Settings
from sim.fake_openai import FakeOpenAI

from .conftest import DictConfigs, MakeConfig, running

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "description": "Full name."},
        "email": {"type": "string", "format": "email", "title": "Email address"},
        "age": {"type": "integer", "minimum": 18},
    },
    "required": ["name", "email"],
}

HTTP_TOOL = {
    "type": "http",
    "name": "lookup_order",
    "description": "Look up an order by id.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string", "pattern": "^[0-9]+$"}},
        "required": ["order_id"],
    },
    "url": "https://orders.example.com/api/orders",
    "method": "GET",
}


@function_tool
async def record_score(score: int) -> str:
    """Record the candidate's score."""
    return f"score {score}"


async def test_exact_instructions_and_tools_sent_to_the_model(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext, fake: FakeOpenAI
) -> None:
    cfg = config(
        "front-desk",
        instructions="You help {company} customers. Caller: {caller}.",
        variables={"company": {"default": "Acme"}, "caller": {"required": True}},
        schema_config=SCHEMA,
        tools=[{"type": "builtin", "name": "end_session"}, {"type": "builtin", "name": "transfer"}, HTTP_TOOL],
        handoffs=["billing", "tech-support"],
    )
    ctx.variables = {"caller": "Bob {x}", "unrelated": "ignored"}
    agent = factory.create_agent(cfg, ctx, extra_tools=[record_score])
    fake.text("Hello Bob.")
    async with running(agent) as (session, _):
        result = await session.run(user_input="hi")
    result.expect.next_event().is_message(role="assistant")
    result.expect.no_more_events()

    req = fake.requests[0]
    assert req.system == "You help Acme customers. Caller: Bob {x}."
    assert req.body["model"] == "gpt-4.1-mini"
    assert req.tool_names == [
        "record_name",
        "record_email",
        "record_age",
        "end_session",
        "transfer",
        "lookup_order",
        "record_score",
    ]
    assert req.tool("record_name") == {
        "name": "record_name",
        "description": "Record 'name' as soon as the user has provided it (required). Full name.",
        "parameters": {
            "type": "object",
            "properties": {"value": {"type": "string", "minLength": 2, "description": "Full name."}},
            "required": ["value"],
        },
    }
    assert req.tool("record_email")["description"] == (
        "Record 'email' as soon as the user has provided it (required). Email address"
    )
    assert req.tool("record_age") == {
        "name": "record_age",
        "description": "Record 'age' as soon as the user has provided it.",
        "parameters": {
            "type": "object",
            "properties": {"value": {"type": "integer", "minimum": 18}},
            "required": ["value"],
        },
    }
    assert req.tool("end_session")["parameters"] == END_SESSION_PARAMETERS
    assert set(END_SESSION_PARAMETERS["properties"]) == {"reason"}
    assert "required" not in END_SESSION_PARAMETERS
    assert req.tool("transfer")["parameters"] == {
        "type": "object",
        "properties": {
            "agent_id": {
                "type": "string",
                "enum": ["billing", "tech-support"],
                "description": "The agent to hand the conversation to.",
            },
            "reason": {"type": "string", "description": "Why the user is transferred."},
        },
        "required": ["agent_id"],
    }
    assert req.tool("lookup_order") == {
        "name": "lookup_order",
        "description": "Look up an order by id.",
        "parameters": HTTP_TOOL["parameters"],
    }
    assert req.tool("record_score")["parameters"]["properties"]["score"]["type"] == "integer"


async def test_llm_options_reach_the_request(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext, fake: FakeOpenAI
) -> None:
    cfg = config(llm={"model": "tiny-model", "temperature": 0.2, "max_tokens": 77,
                      "max_tokens_param": "max_completion_tokens"})
    fake.text("ok")
    async with running(factory.create_agent(cfg, ctx)) as (session, _):
        await session.run(user_input="hi")
    body = fake.requests[0].body
    assert (body["model"], body["temperature"], body["max_completion_tokens"]) == ("tiny-model", 0.2, 77)
    assert "max_tokens" not in body
    assert "tools" not in body


@pytest.mark.parametrize(
    ("llm", "sent"),
    [
        # the fake is not api.openai.com: an OpenAI-compatible server gets `max_tokens`
        ({}, {"max_tokens": 250}),
        ({"max_tokens": 40}, {"max_tokens": 40}),
        ({"max_tokens": 40, "max_tokens_param": "max_completion_tokens"}, {"max_completion_tokens": 40}),
        ({"max_tokens_param": "max_tokens"}, {"max_tokens": 250}),
    ],
)
async def test_every_reply_is_capped_in_the_parameter_the_server_takes(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext, fake: FakeOpenAI,
    llm: dict[str, object], sent: dict[str, int],
) -> None:
    fake.text("ok")
    async with running(factory.create_agent(config(llm=llm), ctx)) as (session, _):
        await session.run(user_input="hi")
    body = fake.requests[0].body
    assert {k: body[k] for k in ("max_tokens", "max_completion_tokens") if k in body} == sent


@pytest.mark.parametrize(
    ("base_url", "openai"),
    [(None, True), ("https://api.openai.com/v1", True), ("https://acme.openai.azure.com/openai", True),
     ("http://127.0.0.1:8080/v1", False), ("https://openai.example.com/v1", False)],
)
def test_auto_cap_parameter_follows_the_base_url(base_url: str | None, openai: bool) -> None:
    from app.agents.providers import cap_kwargs

    expected = {"max_completion_tokens": 9} if openai else {"extra_body": {"max_tokens": 9}}
    assert cap_kwargs(9, "auto", base_url) == expected


async def test_greeting_is_said_on_enter_without_an_llm_call(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext, fake: FakeOpenAI
) -> None:
    cfg = config(greeting="Welcome, {who}!", variables={"who": {"default": "friend"}})
    async with running(factory.create_agent(cfg, ctx)) as (session, started):
        started.expect.next_event().is_agent_handoff()
        started.expect.next_event().is_message(role="assistant")
        started.expect.no_more_events()
        assert started.events[-1].item.text_content == "Welcome, friend!"  # type: ignore[union-attr]
        assert fake.requests == []
        fake.text("Sure.")
        await session.run(user_input="hello")
    assert fake.requests[0].messages[1:] == [
        {"role": "assistant", "content": "Welcome, friend!"},
        {"role": "user", "content": "hello"},
    ]


async def test_no_greeting_means_silence_until_the_user_speaks(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext, fake: FakeOpenAI
) -> None:
    async with running(factory.create_agent(config(), ctx)) as (_, started):
        started.expect.next_event().is_agent_handoff()
        started.expect.no_more_events()
    assert fake.requests == []


# ---------------------------------------------------------------------- schema tools


async def test_schema_tool_records_valid_value_and_reports_missing(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext, fake: FakeOpenAI, recorder: NullRecorder
) -> None:
    agent = factory.create_agent(config(schema_config=SCHEMA), ctx)
    fake.tool_call("record_name", {"value": "Ada Lovelace"}).text("And your email?")
    fake.tool_call("record_email", {"value": "ada@example.com"}).text("Thanks, all set.")
    async with running(agent) as (session, _):
        r1 = await session.run(user_input="I'm Ada Lovelace")
        r2 = await session.run(user_input="ada@example.com")

    r1.expect.next_event().is_function_call(name="record_name", arguments={"value": "Ada Lovelace"})
    r1.expect.next_event().is_function_call_output(
        output='Recorded name="Ada Lovelace". Still missing required fields: email.', is_error=False
    )
    r1.expect.next_event().is_message(role="assistant")
    r1.expect.no_more_events()
    r2.expect.next_event().is_function_call(name="record_email")
    r2.expect.next_event().is_function_call_output(
        output='Recorded email="ada@example.com". All required fields collected.'
    )
    assert recorder.collected == {"name": "Ada Lovelace", "email": "ada@example.com"}
    # the model saw the tool output in its follow-up request
    assert fake.requests[1].tool_outputs() == [
        'Recorded name="Ada Lovelace". Still missing required fields: email.'
    ]


@pytest.mark.parametrize(
    ("tool", "args", "fragment"),
    [
        ("record_email", {"value": "not-an-email"}, "is not a 'email'"),
        ("record_name", {"value": "A"}, "is too short"),
        ("record_age", {"value": 12}, "less than the minimum of 18"),
        ("record_age", {"value": "twenty"}, "is not of type 'integer'"),
        ("record_name", {}, "'value' is a required property"),
    ],
)
async def test_schema_tool_rejects_invalid_value_and_records_nothing(
    factory: AgentFactory,
    config: MakeConfig,
    ctx: SessionContext,
    fake: FakeOpenAI,
    recorder: NullRecorder,
    tool: str,
    args: dict[str, Any],
    fragment: str,
) -> None:
    agent = factory.create_agent(config(schema_config=SCHEMA), ctx)
    fake.tool_call(tool, args).text("Could you repeat that?")
    async with running(agent) as (session, _):
        result = await session.run(user_input="...")
    result.expect.next_event().is_function_call(name=tool)
    out = result.expect.next_event().is_function_call_output().event().item.output
    field = tool.removeprefix("record_")
    assert out.startswith(f"Error: '{field}' was not recorded: ")
    assert fragment in out
    assert out.endswith("Ask the user for a valid value.")
    result.expect.next_event().is_message(role="assistant")
    assert recorder.collected == {}


async def test_large_schema_gets_one_grouped_tool(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext, fake: FakeOpenAI, recorder: NullRecorder
) -> None:
    n = MAX_PER_FIELD_TOOLS + 1
    schema = {
        "type": "object",
        "properties": {f"f{i}": {"type": "string"} for i in range(n)},
        "required": ["f0", "f1"],
    }
    agent = factory.create_agent(config(schema_config=schema), ctx)
    fake.tool_call("record_data", {"f0": "a", "f5": 3}).tool_call("record_data", {"f0": "a", "f3": "b"})
    fake.text("ok")
    async with running(agent) as (session, _):
        result = await session.run(user_input="data")
    req = fake.requests[0]
    assert req.tool_names == ["record_data"]
    params = req.tool("record_data")["parameters"]
    assert params["additionalProperties"] is False and params["minProperties"] == 1
    assert list(params["properties"]) == [f"f{i}" for i in range(n)]
    result.expect.next_event().is_function_call(name="record_data")
    bad = result.expect.next_event().is_function_call_output().event().item.output
    assert bad.startswith("Error: nothing was recorded: f5: 3 is not of type 'string'")
    result.expect.next_event().is_function_call(name="record_data")
    result.expect.next_event().is_function_call_output(
        output='Recorded f0="a", f3="b". Still missing required fields: f1.'
    )
    assert recorder.collected == {"f0": "a", "f3": "b"}


# ------------------------------------------------------------------------ end_session


async def test_end_session_finishes_says_goodbye_and_closes(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext, fake: FakeOpenAI, recorder: NullRecorder
) -> None:
    agent = factory.create_agent(config(tools=[{"type": "builtin", "name": "end_session"}]), ctx)
    fake.tool_call("end_session", {"reason": "user is done"}).text("Goodbye!")
    async with running(agent) as (session, _):
        closed = asyncio.Event()
        session.on("close", lambda _ev: closed.set())
        result = await session.run(user_input="that's all, bye")
        await asyncio.wait_for(closed.wait(), 5)
    result.expect.next_event().is_function_call(name="end_session")
    result.expect.next_event().is_function_call_output()
    result.expect.next_event().is_message(role="assistant")
    result.expect.no_more_events()
    assert recorder.finished == (SessionStatus.completed, "user is done")
    assert "goodbye" in fake.requests[1].tool_outputs()[0].lower()


async def test_end_session_without_reason(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext, fake: FakeOpenAI, recorder: NullRecorder
) -> None:
    agent = factory.create_agent(config(tools=[{"type": "builtin", "name": "end_session"}]), ctx)
    fake.tool_call("end_session", {}).text("Bye.")
    async with running(agent) as (session, _):
        await session.run(user_input="bye")
    assert recorder.finished == (SessionStatus.completed, "end_session")


# --------------------------------------------------------------------------- transfer


def _front(config: MakeConfig, **kw: Any) -> Any:
    return config(
        "front-desk",
        instructions="You are the front desk.",
        tools=[{"type": "builtin", "name": "transfer"}],
        handoffs=["billing"],
        **kw,
    )


async def test_transfer_hands_off_with_history(
    factory: AgentFactory,
    config: MakeConfig,
    configs: DictConfigs,
    ctx: SessionContext,
    fake: FakeOpenAI,
    recorder: NullRecorder,
) -> None:
    configs.add(
        config(
            "billing",
            instructions="You are billing for {company}.",
            variables={"company": {"required": True}},
            schema_config={"type": "object", "properties": {"invoice": {"type": "string"}}},
            version=3,
        )
    )
    ctx.variables = {"company": "Acme"}
    agent = factory.create_agent(_front(config), ctx)
    fake.tool_call("transfer", {"agent_id": "billing", "reason": "invoice question"})
    fake.text("Billing here, which invoice?")
    async with running(agent) as (session, _):
        result = await session.run(user_input="I have a question about my invoice")
        assert isinstance(session.current_agent, BaseAgent)
        assert session.current_agent.agent_id == "billing"

    result.expect.next_event().is_function_call(name="transfer", arguments={"agent_id": "billing"})
    result.expect.next_event().is_function_call_output(output="transferred to billing")
    handoff = result.expect.next_event().is_agent_handoff(new_agent_type=BaseAgent).event()
    assert (handoff.item.old_agent_id, handoff.item.new_agent_id) == ("front-desk", "billing")
    result.expect.next_event().is_message(role="assistant")
    result.expect.no_more_events()

    after = fake.requests[1]
    assert after.system == "You are billing for Acme."
    assert [m for m in after.messages if m["role"] == "system"] == [
        {"role": "system", "content": "You are billing for Acme."}
    ]
    assert {"role": "user", "content": "I have a question about my invoice"} in after.messages
    assert after.tool_names == ["record_invoice"]
    assert recorder.handoffs == [("front-desk", "billing", "invoice question")]
    assert recorder.agent == ("billing", 3)


async def test_transfer_to_unlisted_agent_is_refused(
    factory: AgentFactory,
    config: MakeConfig,
    configs: DictConfigs,
    ctx: SessionContext,
    fake: FakeOpenAI,
    recorder: NullRecorder,
) -> None:
    configs.add(config("sales"))
    agent = factory.create_agent(_front(config), ctx)
    fake.tool_call("transfer", {"agent_id": "sales"}).text("I can't transfer you there.")
    async with running(agent) as (session, _):
        result = await session.run(user_input="sales please")
        assert session.current_agent is agent
    result.expect.next_event().is_function_call(name="transfer")
    result.expect.next_event().is_function_call_output(
        output="error: cannot transfer to 'sales'; allowed agent ids: billing"
    )
    result.expect.next_event().is_message(role="assistant")
    result.expect.no_more_events()
    assert configs.calls == []
    assert recorder.handoffs == [] and recorder.agent is None


@pytest.mark.parametrize("state", ["missing", "disabled", "needs_variable"])
async def test_transfer_to_unavailable_agent_is_an_error_message(
    factory: AgentFactory,
    config: MakeConfig,
    configs: DictConfigs,
    ctx: SessionContext,
    fake: FakeOpenAI,
    recorder: NullRecorder,
    state: str,
) -> None:
    if state == "disabled":
        configs.add(config("billing", enabled=False))
    elif state == "needs_variable":
        configs.add(config("billing", instructions="{acct}", variables={"acct": {"required": True}}))
    agent = factory.create_agent(_front(config), ctx)
    fake.tool_call("transfer", {"agent_id": "billing"}).text("Let me help you myself.")
    async with running(agent) as (session, _):
        result = await session.run(user_input="billing")
        assert session.current_agent is agent
    result.expect.next_event().is_function_call(name="transfer")
    out = result.expect.next_event().is_function_call_output().event().item.output
    assert out.startswith("error: agent 'billing'")
    result.expect.next_event().is_message(role="assistant")
    assert recorder.handoffs == []


# ---------------------------------------------------------------------------- models


def test_text_mode_builds_no_audio_models(factory: AgentFactory, config: MakeConfig, ctx: SessionContext) -> None:
    agent = factory.create_agent(config(), ctx)
    assert agent.stt is NOT_GIVEN and agent.tts is NOT_GIVEN and agent.vad is NOT_GIVEN


async def test_audio_mode_uses_settings_defaults_and_shared_vad(
    config: MakeConfig, configs: DictConfigs, recorder: NullRecorder
) -> None:
    vad = object()
    settings = Settings(_env_file=None, openai_api_key="sk-real", openai_base_url="http://llm.local/v1")  # type: ignore[call-arg]
    factory = AgentFactory(settings, configs, vad=vad)
    ctx = SessionContext(session_id="s", room="r", recorder=recorder, audio=True)
    cfg = config(tts={"voice": "nova"}, llm={"base_url": "http://other.local/v1"})
    agent = factory.create_agent(cfg, ctx)
    assert agent.vad is vad
    assert agent.stt.model == settings.default_stt_model  # type: ignore[union-attr]
    assert agent.tts.model == settings.default_tts_model  # type: ignore[union-attr]
    assert agent.tts._opts.voice == "nova"  # type: ignore[union-attr]
    assert agent.llm.model == settings.default_llm_model  # type: ignore[union-attr]
    assert str(agent.llm._client.base_url) == "http://other.local/v1/"  # type: ignore[union-attr]
    assert agent.llm._client.api_key == "sk-real"  # type: ignore[union-attr]
    assert str(agent.stt._client.base_url) == "http://llm.local/v1/"  # type: ignore[union-attr]
    await ctx.aclose()
    assert agent.llm._client.is_closed()  # type: ignore[union-attr]


def test_placeholder_api_key_when_unset(
    settings: Settings, config: MakeConfig, configs: DictConfigs, ctx: SessionContext
) -> None:
    agent = AgentFactory(settings, configs).create_agent(config(), ctx)
    assert agent.llm._client.api_key == PLACEHOLDER_API_KEY  # type: ignore[union-attr]


async def test_extra_tool_with_raw_schema_is_appended(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext, fake: FakeOpenAI
) -> None:
    seen: list[dict[str, object]] = []

    async def handler(raw_arguments: dict[str, object], context: RunContext) -> str:
        seen.append(raw_arguments)
        return "ok"

    tool = function_tool(
        handler,
        raw_schema={"name": "ping", "description": "p", "parameters": {"type": "object", "properties": {}}},
    )
    fake.tool_call("ping", {}).text("pong")
    async with running(factory.create_agent(config(), ctx, extra_tools=[tool])) as (session, _):
        await session.run(user_input="ping")
    assert fake.requests[0].tool_names == ["ping"] and seen == [{}]


async def test_transfer_target_with_greeting_greets_instead_of_generating(
    factory: AgentFactory, config: MakeConfig, configs: DictConfigs, ctx: SessionContext, fake: FakeOpenAI
) -> None:
    configs.add(config("billing", greeting="Billing here."))
    fake.tool_call("transfer", {"agent_id": "billing"})
    async with running(factory.create_agent(_front(config), ctx)) as (session, _):
        result = await session.run(user_input="billing please")
    result.expect.skip_next(3)  # call, output, handoff
    msg = result.expect.next_event().is_message(role="assistant").event().item
    assert msg.text_content == "Billing here."
    result.expect.no_more_events()
    assert len(fake.requests) == 1


async def test_schema_refs_and_boolean_property_schemas(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext, fake: FakeOpenAI, recorder: NullRecorder
) -> None:
    schema = {
        "type": "object",
        "$defs": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
        "properties": {"airport": {"$ref": "#/$defs/code"}, "notes": True},
    }
    agent = factory.create_agent(config(schema_config=schema), ctx)
    fake.tool_call("record_airport", {"value": "lhr"}).tool_call("record_airport", {"value": "LHR"})
    fake.tool_call("record_notes", {"value": {"any": ["thing"]}}).text("ok")
    async with running(agent) as (session, _):
        result = await session.run(user_input="London Heathrow")
    assert fake.requests[0].tool("record_airport")["parameters"] == {
        "type": "object",
        "properties": {"value": {"$ref": "#/$defs/code"}},
        "required": ["value"],
        "$defs": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
    }
    outputs = [e.item.output for e in result.events if e.type == "function_call_output"]  # type: ignore[union-attr]
    assert outputs[0].startswith("Error: 'airport' was not recorded: value: 'lhr' does not match")
    assert outputs[1:] == [
        'Recorded airport="LHR". All required fields collected.',
        'Recorded notes={"any": ["thing"]}. All required fields collected.',
    ]
    assert recorder.collected == {"airport": "LHR", "notes": {"any": ["thing"]}}
