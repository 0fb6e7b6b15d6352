"""Fixtures for the admin API tests: the real app on a real SQLite file.

Every test gets a fresh `SQLStore` on `tmp_path`, an app built by `create_app`
exactly as the supervisor builds it, and `AsyncTestClient`s with and without the
admin key. Nothing is mocked below the HTTP layer unless a test says so.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # the project is not installed (tool.uv package = false)
    sys.path.insert(0, str(REPO_ROOT))

from app.api import RuntimeStatus, create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.store.sql import SQLStore  # noqa: E402

ADMIN_KEY = "test-admin-key-5f0c2b9e"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
AGENTS = "/api/v1/agents/config"

AgentBody = Callable[..., dict[str, Any]]


def agent_body(agent_id: str = "support-agent", **overrides: Any) -> dict[str, Any]:
    """A valid `AgentConfigInput` payload; keyword arguments replace top-level fields."""
    body: dict[str, Any] = {
        "agent_id": agent_id,
        "name": f"Agent {agent_id}",
        "description": "test agent",
        "prompt_config": {
            "instructions": "You help {customer} with billing.",
            "greeting": "Hello {customer}!",
            "variables": {"customer": {"description": "name", "default": "there"}},
        },
        "schema_config": {
            "type": "object",
            "properties": {"email": {"type": "string"}},
            "required": ["email"],
        },
    }
    body.update(overrides)
    return body


@pytest.fixture
def settings() -> Settings:
    # _env_file=None: a developer's .env must not change what the tests see.
    return Settings(_env_file=None, admin_api_key=ADMIN_KEY)  # type: ignore[call-arg,arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLStore]:
    s = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/api.db")
    await s.start()
    yield s
    await s.aclose()


@pytest.fixture
def status() -> RuntimeStatus:
    return RuntimeStatus()


@pytest.fixture
def app(settings: Settings, store: SQLStore, status: RuntimeStatus) -> Litestar:
    return create_app(settings, store, status=status)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """Authorised client (sends the admin key on every request)."""
    async with AsyncTestClient(app) as c:
        c.headers.update(AUTH)
        yield c


@pytest.fixture
async def anon(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """Client without credentials."""
    async with AsyncTestClient(app) as c:
        yield c


@pytest.fixture
async def agent(client: AsyncTestClient[Litestar]) -> dict[str, Any]:
    """One created agent (`support-agent`, version 1), as the API returned it."""
    r = await client.post(AGENTS, json=agent_body())
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def body() -> AgentBody:
    """The `agent_body` payload builder, for tests that need variants."""
    return agent_body


@pytest.fixture
def admin_key() -> str:
    return ADMIN_KEY
