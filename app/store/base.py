"""The `ConfigStore` protocol: the one persistence interface the API and worker use.

Implementations (SQL in `sql.py`, MongoDB in `mongo.py`) pass the same contract
test suite (`tests/store/test_contract.py`). Rules every implementation keeps:

- every agent change writes a new immutable version row; current = highest version;
- `expected_version` mismatches and lost races raise `VersionConflict` (never a lost update);
- each write is atomic: a failed call leaves nothing half-written;
- `config_epoch()` increases on every agent or route write, so caches in other processes
  can tell cheaply that something changed;
- session turns are written one row at a time, so a crash loses at most the turn in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from app.domain import (
    AgentConfig,
    AgentConfigInput,
    Handoff,
    Route,
    SessionRecord,
    SessionStatus,
    Turn,
)

ChangeListener = Callable[[], None]


@runtime_checkable
class ConfigStore(Protocol):
    # lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Connect, create tables/indexes, run migrations. Idempotent."""

    async def aclose(self) -> None: ...

    async def ping(self) -> None:
        """Raise `StoreUnavailable` if the database cannot answer right now."""

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Called (synchronously, after commit) on every agent/route write in this process."""

    async def config_epoch(self) -> int:
        """A counter bumped by every agent or route write, from any process."""

    # agent configs -----------------------------------------------------------
    async def create_agent_config(self, data: AgentConfigInput) -> AgentConfig: ...

    async def get_agent_config(self, agent_id: str, version: int | None = None) -> AgentConfig: ...

    async def list_agent_configs(
        self, *, enabled: bool | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[AgentConfig], int]:
        """Current versions ordered by agent id, and the total count matching the filter."""

    async def update_agent_config(
        self,
        agent_id: str,
        patch: Mapping[str, Any] | AgentConfigInput,
        expected_version: int | None = None,
    ) -> AgentConfig:
        """A merge patch (mapping) or a full replacement (`AgentConfigInput`) as a new version."""

    async def delete_agent_config(self, agent_id: str) -> None:
        """Delete every version; `InUse` if a route points at the agent."""

    async def list_versions(self, agent_id: str) -> list[AgentConfig]:
        """Every version, oldest first."""

    async def rollback(
        self, agent_id: str, version: int, expected_version: int | None = None
    ) -> AgentConfig:
        """Write the content of `version` as a new current version."""

    # routes ------------------------------------------------------------------
    async def list_routes(self) -> list[Route]: ...

    async def get_route(self, purpose: str) -> Route: ...

    async def put_route(self, route: Route) -> Route:
        """Create or replace; `is_default=True` clears the flag on every other route."""

    async def replace_routes(self, routes: list[Route]) -> list[Route]:
        """Replace the whole table atomically; at most one default."""

    async def delete_route(self, purpose: str) -> None: ...

    # sessions ----------------------------------------------------------------
    async def start_session(self, record: SessionRecord) -> SessionRecord: ...

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        """Idempotent on (session_id, turn.seq), so a retried write cannot duplicate."""

    async def record_data(self, session_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Merge fields into `collected`; returns the merged result."""

    async def record_handoff(self, session_id: str, handoff: Handoff) -> None: ...

    async def update_session(self, session_id: str, **fields: Any) -> None:
        """Set top-level fields (agent_id, config_version, degraded, metrics...)."""

    async def finish_session(
        self,
        session_id: str,
        status: SessionStatus,
        reason: str | None = None,
        error: str | None = None,
        ended_at: datetime | None = None,
    ) -> None: ...

    async def list_sessions(
        self,
        *,
        agent_id: str | None = None,
        status: SessionStatus | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[SessionRecord], int]:
        """Newest first, without turns (use `get_session` for a transcript)."""

    async def get_session(self, session_id: str) -> SessionRecord: ...

    async def abandon_active_sessions(self, reason: str) -> int:
        """Start-up recovery: mark sessions left `active` by a dead process as abandoned."""
