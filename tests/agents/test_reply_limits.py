"""Run-away replies in a real text session: the agent's `llm_node` (LiveKit's default node
behind the reply guard) against the real OpenAI plugin and a scripted server."""

from __future__ import annotations

from app.agents.context import NullRecorder, SessionContext
from app.agents.factory import AgentFactory
from app.settings import Settings
from sim.fake_openai import FakeOpenAI

from .conftest import DictConfigs, MakeConfig, running

LOOP = "Let me check that order for you right now. "


def said(result: object) -> str:
    """The text of the run's next event, which must be an assistant message."""
    return result.expect.next_event().is_message(role="assistant").event().item.text_content  # type: ignore[attr-defined]


def factory_for(fake: FakeOpenAI, configs: DictConfigs) -> AgentFactory:
    settings = Settings(_env_file=None, openai_api_key=None, openai_base_url=None)  # type: ignore[call-arg]
    return AgentFactory(settings, configs, llm_client=fake.client())


async def test_a_reply_repeating_itself_ends_cleanly_and_is_recorded(
    fake: FakeOpenAI, configs: DictConfigs, config: MakeConfig, ctx: SessionContext, recorder: NullRecorder
) -> None:
    fake.text("Sure. " + LOOP * 40).text("Anything else?")
    agent = factory_for(fake, configs).create_agent(config(), ctx)
    async with running(agent) as (session, _):
        result = await session.run(user_input="where is my order")
        assert said(result) == ("Sure. " + LOOP * 2).rstrip()
        result.expect.no_more_events()
        # the session goes on: the next turn is answered normally
        again = await session.run(user_input="thanks")
        assert said(again) == "Anything else?"
    assert recorder.events == [("repetition_stopped", f"said 3 times: {LOOP.strip()}")]


async def test_the_repetition_limit_is_per_agent_and_can_be_off(
    fake: FakeOpenAI, configs: DictConfigs, config: MakeConfig, ctx: SessionContext, recorder: NullRecorder
) -> None:
    fake.text(LOOP * 3).text(LOOP * 3)
    f = factory_for(fake, configs)
    async with running(f.create_agent(config(llm={"repetition_limit": 2}), ctx)) as (session, _):
        assert said(await session.run(user_input="a")) == LOOP.strip()
    async with running(f.create_agent(config(llm={"repetition_limit": 0}), ctx)) as (session, _):
        assert said(await session.run(user_input="b")) == LOOP * 3
    assert [k for k, _ in recorder.events] == ["repetition_stopped"]


async def test_a_reply_the_server_cut_at_the_cap_is_noted(
    configs: DictConfigs, config: MakeConfig, ctx: SessionContext, recorder: NullRecorder
) -> None:
    fake = FakeOpenAI().text("one two three four five six seven eight nine ten eleven twelve")
    agent = factory_for(fake, configs).create_agent(config(llm={"max_tokens": 5}), ctx)
    async with running(agent) as (session, _):
        result = await session.run(user_input="count")
        assert said(result) == "one two three four five"
    assert fake.requests[0].body["max_tokens"] == 5
    assert recorder.events == [("reply_capped", "the server ended the reply at the cap (5 tokens)")]


async def test_a_server_ignoring_the_cap_is_cut_by_the_backstop(
    configs: DictConfigs, config: MakeConfig, ctx: SessionContext, recorder: NullRecorder
) -> None:
    words = " ".join(f"w{i:03d}" for i in range(400))
    fake = FakeOpenAI(honour_cap=False).text(words)
    agent = factory_for(fake, configs).create_agent(config(llm={"max_tokens": 10}), ctx)
    async with running(agent) as (session, _):
        result = await session.run(user_input="count")
        text = said(result)
    assert words.startswith(text) and 60 <= len(text) < 80  # 10 tokens x 6 characters, not 2000
    assert [k for k, _ in recorder.events] == ["reply_capped"]
    assert "did not apply the cap of 10 tokens" in recorder.events[0][1]
