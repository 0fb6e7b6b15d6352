"""Fixtures for agent tests: inline configs, a dict-backed ConfigSource, the scripted
OpenAI fake, and a helper that runs a real text-mode `AgentSession`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from livekit.agents import AgentSession
from livekit.agents.voice.run_result import RunResult

from app.agents.base import BaseAgent
from app.agents.context import NullRecorder, SessionContext
from app.agents.factory import AgentFactory
from app.domain import AgentConfig, NotFound
from app.settings import Settings
from sim.fake_openai import FakeOpenAI

MakeConfig = Callable[..., AgentConfig]


def make_config(agent_id: str = "test-agent", **overrides: Any) -> AgentConfig:
    """A valid AgentConfig; `instructions`/`greeting`/`variables` are shortcuts into
    prompt_config, everything else overrides top-level fields."""
    prompt = {
        "instructions": overrides.pop("instructions", f"You are {agent_id}."),
        "greeting": overrides.pop("greeting", None),
        "variables": overrides.pop("variables", {}),
    }
    now = datetime(2026, 1, 1, tzinfo=UTC)
    doc: dict[str, Any] = {
        "agent_id": agent_id,
        "name": agent_id.replace("-", " ").title(),
        "prompt_config": prompt,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    doc.update(overrides)
    return AgentConfig.model_validate(doc)


class DictConfigs:
    """ConfigSource over a dict; disabled or absent agents raise NotFound, like the cache."""

    def __init__(self, *configs: AgentConfig) -> None:
        self.configs = {c.agent_id: c for c in configs}
        self.calls: list[str] = []

    def add(self, config: AgentConfig) -> None:
        self.configs[config.agent_id] = config

    async def get_agent_config(self, agent_id: str) -> AgentConfig:
        self.calls.append(agent_id)
        cfg = self.configs.get(agent_id)
        if cfg is None or not cfg.enabled:
            raise NotFound(f"agent {agent_id!r} not found")
        return cfg


@pytest.fixture
def config() -> MakeConfig:
    return make_config


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
def recorder() -> NullRecorder:
    return NullRecorder()


@pytest.fixture
def ctx(recorder: NullRecorder) -> SessionContext:
    return SessionContext(session_id="sess-1", room="room-1", recorder=recorder, audio=False)


@pytest.fixture
def configs() -> DictConfigs:
    return DictConfigs()


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, openai_api_key=None, openai_base_url=None)  # type: ignore[call-arg]


@pytest.fixture
def factory(settings: Settings, configs: DictConfigs, fake: FakeOpenAI) -> AgentFactory:
    return AgentFactory(settings, configs, llm_client=fake.client())


@contextlib.asynccontextmanager
async def running(agent: BaseAgent) -> AsyncIterator[tuple[AgentSession, RunResult]]:
    """A text-mode session started with `agent`; yields it and the start RunResult
    (which has waited for the on-enter speech, e.g. the greeting)."""
    async with AgentSession() as session:
        started = await session.start(agent, capture_run=True)
        assert started is not None
        yield session, started


@pytest.fixture
def run_agent() -> Callable[[BaseAgent], contextlib.AbstractAsyncContextManager[tuple[AgentSession, RunResult]]]:
    return running
