"""Fixtures for the `ConfigStore` contract suite.

Every test in this directory that uses `store_target` (or `store`) runs once per
backend in `BACKENDS`. A backend entry is a function `(request, tmp_path) -> StoreTarget`:
it prepares an empty database and says how to reach it:

- sqlite: a file in the test's tmp dir;
- mongo: a fresh database on one SecantusDB server (Mongo wire protocol) started once
  per test session by `secantus_server`;
- postgres: a fresh database (CREATE DATABASE) on one throwaway `initdb` cluster started
  once per test session by `postgres_server`.

Both servers come from `sim.db_servers`; if one cannot start, every test on that
backend fails with the server's output (they never skip). `.ci/run` installs
PostgreSQL; SecantusDB is a dev dependency.

The tests never name an implementation class: stores are opened with
`app.store.open_store(url)`, so a child process (see `test_durability.py`) can open the
same database from the URL alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from app.domain import AgentConfigInput
from app.store import ConfigStore, open_store
from sim.db_servers import MongoServer, PostgresServer


@dataclass(frozen=True)
class StoreTarget:
    """One empty database for one test: its backend name and URL."""

    backend: str
    url: str

    def new_store(self) -> ConfigStore:
        """A new, unstarted store instance on this database (as another process would open)."""
        return open_store(self.url)


def make_sqlite_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    return StoreTarget("sqlite", f"sqlite+aiosqlite:///{tmp_path}/t.db")


@pytest.fixture(scope="session")
def secantus_server() -> Iterator[MongoServer]:
    """One SecantusDB (Mongo wire) for the whole test session; each test gets its own
    database on it. Fails (never skips) if the server cannot start."""
    with MongoServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the whole test session; each test gets its
    own database on it. Fails (never skips) if the server cannot start."""
    with PostgresServer() as server:
        yield server


def make_mongo_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    server: MongoServer = request.getfixturevalue("secantus_server")
    return StoreTarget("mongo", server.url(f"t_{uuid4().hex}"))


def make_postgres_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return StoreTarget("postgres", server.create_database(f"t_{uuid4().hex}"))


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], StoreTarget]] = {
    "sqlite": make_sqlite_store,
    "mongo": make_mongo_store,
    "postgres": make_postgres_store,
}


@pytest.fixture(params=sorted(BACKENDS))
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
async def store(store_target: StoreTarget) -> AsyncIterator[ConfigStore]:
    s = store_target.new_store()
    await s.start()
    try:
        yield s
    finally:
        await s.aclose()


OpenStore = Callable[[], Awaitable[ConfigStore]]


@pytest.fixture
async def open_another(store_target: StoreTarget) -> AsyncIterator[OpenStore]:
    """Open (and start) further store instances on the same database; closed at teardown."""
    opened: list[ConfigStore] = []

    async def _open() -> ConfigStore:
        s = store_target.new_store()
        await s.start()
        opened.append(s)
        return s

    try:
        yield _open
    finally:
        for s in reversed(opened):
            await s.aclose()


def agent_document(agent_id: str = "support-agent", **overrides: Any) -> dict[str, Any]:
    """A valid, fairly complete agent config as JSON (nested sections, tools, variables)."""
    doc: dict[str, Any] = {
        "agent_id": agent_id,
        "name": f"Agent {agent_id}",
        "description": "Answers support questions.",
        "enabled": True,
        "prompt_config": {
            "instructions": "You help {customer_name} with their order. Be brief.",
            "greeting": "Hello {customer_name}, how can I help?",
            "variables": {
                "customer_name": {"description": "Who is calling", "default": "there"},
                "extra": {"description": "Unused spare variable", "required": False},
            },
        },
        "schema_config": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string", "description": "The order number"},
                "rating": {"type": "integer", "minimum": 1, "maximum": 5},
            },
            "required": ["order_id"],
        },
        "llm": {"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.5},
        "stt": {"language": "en"},
        "tts": {"voice": "alloy", "speed": 1.1},
        "tools": [
            {
                "type": "http",
                "name": "lookup_order",
                "description": "Look an order up",
                "url": "https://example.com/orders",
                "method": "GET",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}},
                    "required": ["order_id"],
                },
                "timeout_s": 3,
            },
            {"type": "builtin", "name": "end_session"},
        ],
        "handoffs": [],
    }
    doc.update(overrides)
    return doc


MakeAgent = Callable[..., AgentConfigInput]


@pytest.fixture
def make_agent() -> MakeAgent:
    """`make_agent("billing", enabled=False)` -> a valid `AgentConfigInput`."""

    def _make(agent_id: str = "support-agent", **overrides: Any) -> AgentConfigInput:
        return AgentConfigInput.model_validate(agent_document(agent_id, **overrides))

    return _make
