"""Outbound calls against the loopback LiveKit server API (`sim.livekit_api`): the real
`livekit-api` client, the real admin API on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from pydantic import SecretStr

from app.api.app import create_app
from app.domain import AgentConfigInput, Route
from app.settings import Settings
from app.store.sql import SQLStore
from sim.livekit_api import KEY, SECRET, LoopbackLiveKit

ADMIN = "admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def livekit() -> Iterator[LoopbackLiveKit]:
    """In its own thread: the test client runs the app in a portal thread and blocks this loop."""
    with LoopbackLiveKit().threaded() as server:
        yield server


MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(livekit: LoopbackLiveKit) -> MakeSettings:
    def make(**kw: Any) -> Settings:
        base: dict[str, Any] = dict(
            _env_file=None, livekit_url=livekit.url, livekit_api_key=SecretStr(KEY),
            livekit_api_secret=SecretStr(SECRET), admin_api_key=SecretStr(ADMIN),
            outbound_trunk_id="ST_outbound", call_ring_timeout=5, call_rate_per_minute=100,
        )
        base.update(kw)
        return Settings(**base)

    return make


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLStore]:
    s = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/calls.db")
    await s.start()
    await s.create_agent_config(AgentConfigInput(
        agent_id="reminder-agent", name="Reminders",
        prompt_config={"instructions": "Remind {name} of the appointment on {day}.",
                       "variables": {"name": {"required": True}, "day": {"default": "Monday"}}}))
    await s.put_route(Route(purpose="reminders", agent_id="reminder-agent", is_default=True))
    yield s
    await s.aclose()


MakeClient = Callable[..., AsyncTestClient[Any]]


@pytest.fixture
def client_for(store: SQLStore, make_settings: MakeSettings) -> MakeClient:
    def make(**kw: Any) -> AsyncTestClient[Any]:
        c = AsyncTestClient(create_app(make_settings(**kw), store))
        c.headers.update(AUTH)
        return c

    return make
