"""Where a process's agent configs come from, and the one place that picks it.

Everything that answers "which agent runs?" (session start, `GET /api/v1/resolve`,
`POST /api/v1/token`, `chat`, the sim) reads a `SnapshotSource`: an immutable
`ConfigSnapshot` (configs + routes + their routing table) that is either
- the store's `ConfigCache` (`AGENT_MODE=dynamic`): configs edited through the API, or
- a `FixedConfigSource` (`AGENT_MODE=pte`): a read-only snapshot holding the PTE
  interviewer from `prompts/` and a default route to it; no store is read for routing.

`config_source` is the only code that looks at `AGENT_MODE`; the rest of the process
runs whatever snapshot it is given.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from app.domain import AgentConfig, NotFound, Route, StoreUnavailable
from app.domain.loading import ConfigFileError, load_agent_file
from app.settings import DEFAULT_PROMPTS_DIR, AgentMode, Settings
from app.store.base import ConfigStore
from app.store.cache import EMPTY, ConfigCache, ConfigSnapshot

log = logging.getLogger(__name__)

PTE_AGENT_ID = "pte-interview"
PTE_CONFIG_FILE = "pte_interview.yaml"
FIXED_VERSION = 1
FIXED_TIMESTAMP = datetime(2025, 1, 1, tzinfo=UTC)
"""Fixed, so a file-based config is identical in every process and session record."""
FIXED_DEFAULT_PURPOSE = "default"


class SnapshotSource(Protocol):
    """A process's configs as immutable snapshots (see `ConfigCache` for the freshness rules)."""

    @property
    def snapshot(self) -> ConfigSnapshot:
        """The last loaded snapshot, with no freshness check."""
        ...

    def is_fresh(self) -> bool:
        """True when `snapshot` is known current without any I/O."""
        ...

    async def current(self) -> ConfigSnapshot:
        """A current snapshot (or the last known-good one, marked stale); raises
        `StoreUnavailable` only when there is none at all."""
        ...

    async def get_agent_config(self, agent_id: str) -> AgentConfig:
        """The current config of an enabled agent; `NotFound` otherwise (handoffs)."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class FixedConfigSource:
    """A read-only snapshot: the given configs and one default route."""

    def __init__(self, configs: Sequence[AgentConfig], *, default: str, purpose: str = FIXED_DEFAULT_PURPOSE) -> None:
        self._snapshot = ConfigSnapshot.build(
            epoch=0,
            configs={c.agent_id: c for c in configs},
            routes=[Route(purpose=purpose, agent_id=default, is_default=True)],
        )

    @property
    def snapshot(self) -> ConfigSnapshot:
        return self._snapshot

    def is_fresh(self) -> bool:
        return True

    async def current(self) -> ConfigSnapshot:
        return self._snapshot

    async def get_agent_config(self, agent_id: str) -> AgentConfig:
        cfg = self._snapshot.enabled(agent_id)
        if cfg is None:
            raise NotFound(f"agent {agent_id!r} not found or disabled", agent_id=agent_id)
        return cfg

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class NoStoreSource:
    """Configs with no store to read them from: every session gets the fallback agent."""

    @property
    def snapshot(self) -> ConfigSnapshot:
        return EMPTY

    def is_fresh(self) -> bool:
        return False

    async def current(self) -> ConfigSnapshot:
        raise StoreUnavailable("no store configured")

    async def get_agent_config(self, agent_id: str) -> AgentConfig:
        raise NotFound(f"agent {agent_id!r} not available without a store", agent_id=agent_id)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


@functools.lru_cache(maxsize=8)
def _load_fixed(path: Path, agent_id: str) -> AgentConfig:
    cfg = load_agent_file(path)
    if cfg.agent_id != agent_id:
        raise ConfigFileError(path, f"agent_id: expected {agent_id!r}, got {cfg.agent_id!r}")
    return AgentConfig(
        **cfg.model_dump(), version=FIXED_VERSION, created_at=FIXED_TIMESTAMP, updated_at=FIXED_TIMESTAMP
    )


def load_fixed_config(path: Path, *, agent_id: str) -> AgentConfig:
    """An agent config from a YAML file, as version 1 with fixed timestamps.

    Parsed once per process; each call returns a fresh copy, so callers may mutate it.
    """
    return _load_fixed(path.resolve(), agent_id).model_copy(deep=True)


def load_pte_config(prompts_dir: Path = DEFAULT_PROMPTS_DIR) -> AgentConfig:
    """The PTE examiner's config (`prompts/pte_interview.yaml`)."""
    return load_fixed_config(prompts_dir / PTE_CONFIG_FILE, agent_id=PTE_AGENT_ID)


def config_source(settings: Settings, store: ConfigStore | None, *, cache: ConfigCache | None = None) -> SnapshotSource:
    """The process's config source for `settings.agent_mode`.

    `cache`: the process's started store cache, reused in dynamic mode (one cache per
    process); without one, a new `ConfigCache` over `store` (which works unstarted: it
    then checks the store's epoch on every not-fresh read instead of polling).
    """
    if settings.agent_mode == AgentMode.pte:
        log.info("AGENT_MODE=pte: sessions run only the PTE interview agent (%s)", PTE_AGENT_ID)
        return FixedConfigSource([load_pte_config(settings.prompts_dir)], default=PTE_AGENT_ID)
    if cache is not None:
        return cache
    if store is None:
        return NoStoreSource()
    return ConfigCache(store, poll_interval=settings.cache_poll_interval)
