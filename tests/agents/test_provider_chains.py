"""Fallback chains end to end over real sockets: each member is the real OpenAI plugin with
the client the factory builds (its own timeouts), the chain is LiveKit's FallbackAdapter,
and the far ends are scripted OpenAI-compatible servers on loopback (or a closed port)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from livekit.agents import AgentSession, APIConnectionError, llm

from app.agents.context import NullRecorder, SessionContext
from app.agents.factory import AgentFactory
from app.agents.providers import session_connect_options
from app.settings import Settings
from sim.db_servers import free_port
from sim.fake_openai import FakeOpenAI

from .conftest import DictConfigs, MakeConfig


@contextlib.asynccontextmanager
async def served(fake: FakeOpenAI) -> AsyncIterator[str]:
    """`fake` on a loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake.asgi_app(), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off", timeout_graceful_shutdown=0.2))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        await task


def closed_url() -> str:
    """A loopback port nothing listens on: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture
def factory(configs: DictConfigs) -> AgentFactory:  # real clients, no injected fake
    return AgentFactory(Settings(_env_file=None, openai_api_key=None, openai_base_url=None), configs)  # type: ignore[call-arg]


async def talk(agent: Any, text: str = "hello") -> tuple[list[Any], list[Any], float]:
    """One user turn in a text session built as the worker builds it; the assistant
    messages, the session's errors, and the turn's wall time."""
    errors: list[Any] = []
    async with AgentSession(conn_options=session_connect_options()) as session:
        session.on("error", errors.append)
        await session.start(agent, capture_run=True)
        t0 = time.perf_counter()
        with contextlib.suppress(Exception):
            await session.run(user_input=text)
        took = time.perf_counter() - t0
        msgs = [m for m in session.history.items if m.type == "message" and m.role == "assistant"]
    return msgs, errors, took


async def test_primary_down_the_fallback_answers_and_is_named(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext, recorder: NullRecorder
) -> None:
    backup = FakeOpenAI(model="backup-model").text("Backup here, how can I help?")
    async with served(backup) as backup_url:
        primary_url = closed_url()
        cfg = config(llm={"model": "primary-model", "base_url": primary_url,
                          "fallbacks": [{"model": "backup-model", "base_url": backup_url}]})
        agent = factory.create_agent(cfg, ctx)
        assert isinstance(agent.llm, llm.FallbackAdapter)
        msgs, errors, _ = await talk(agent)
        await ctx.aclose()
    assert [m.text_content for m in msgs] == ["Backup here, how can I help?"]
    assert msgs[0].metrics["llm_metadata"] == {"model_name": "backup-model",
                                               "model_provider": backup_url.split("/")[2]}
    assert errors == []
    assert ("provider_unavailable", f"llm {primary_url.split('/')[2]}/primary-model") in recorder.events
    assert backup.requests[0].body["model"] == "backup-model"


async def test_a_primary_slower_than_its_first_token_limit_hands_over_at_the_limit(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext, recorder: NullRecorder
) -> None:
    slow = FakeOpenAI(model="slow", delays={"chat": 5.0}).text("too late")
    backup = FakeOpenAI(model="backup").text("On time.")
    async with served(slow) as slow_url, served(backup) as backup_url:
        cfg = config(llm={"base_url": slow_url, "timeouts": {"first_token_s": 0.4},
                          "fallbacks": [{"base_url": backup_url}]})
        msgs, errors, took = await talk(factory.create_agent(cfg, ctx))
        await ctx.aclose()
    assert [m.text_content for m in msgs] == ["On time."]
    assert 0.4 <= took < 2.0, took  # the primary's limit, not its 5 s
    assert [e[0] for e in recorder.events] == ["provider_unavailable"]


async def test_each_member_has_its_own_limits(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext
) -> None:
    """The backup takes 0.8 s to answer: within its own 3 s, not the primary's 0.3 s."""
    slow = FakeOpenAI(delays={"chat": 5.0}).text("too late")
    backup = FakeOpenAI(delays={"chat": 0.8}).text("Slow but sure.")
    async with served(slow) as slow_url, served(backup) as backup_url:
        cfg = config(llm={"base_url": slow_url, "timeouts": {"first_token_s": 0.3},
                          "fallbacks": [{"base_url": backup_url, "timeouts": {"first_token_s": 3}}]})
        msgs, _, _ = await talk(factory.create_agent(cfg, ctx))
        await ctx.aclose()
    assert [m.text_content for m in msgs] == ["Slow but sure."]


async def test_every_member_failing_surfaces_as_the_sessions_llm_error_retried_once(
    factory: AgentFactory, config: MakeConfig, ctx: SessionContext
) -> None:
    """The chain's final failure is the error a single LLM raises (LiveKit's
    `APIConnectionError` in an unrecoverable `llm_error`), after one retry of the chain."""
    broken = FakeOpenAI()
    for _ in range(8):  # the backup's answers to the turn and to recovery probes
        broken.error(503)
    async with served(broken) as broken_url:
        cfg = config(llm={"base_url": closed_url(), "fallbacks": [{"base_url": broken_url}]})
        msgs, errors, took = await talk(factory.create_agent(cfg, ctx))
        await ctx.aclose()
    assert msgs == []
    # the chain tried twice (CHAIN_RETRY): one recoverable error, then the final one
    assert [e.error.recoverable for e in errors] == [True, False]
    err = errors[-1].error
    assert err.type == "llm_error"
    assert "all LLMs failed" in str(err.error.__cause__ or err.error)
    assert isinstance(err.error, APIConnectionError)
    assert len(broken.requests) >= 2
    assert took < 3.0


async def test_a_chain_of_one_is_the_plugin_itself(factory: AgentFactory, config: MakeConfig, ctx: SessionContext) -> None:
    from livekit.plugins import openai as lk_openai

    agent = factory.create_agent(config(), ctx)
    assert isinstance(agent.llm, lk_openai.LLM)
    await ctx.aclose()
