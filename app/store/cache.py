"""In-memory snapshot of every current agent config, the routes and their routing table.

Why: a session start must not wait on the database. The snapshot is immutable and
swapped atomically, so readers on any thread (LiveKit runs THREAD-executor jobs on
their own loops) can use it without locks. Its routing table is built once, with the
snapshot, so no reader rebuilds it.

Freshness rules:
- a write through this process's store marks the snapshot dirty at once (change
  listener), so the next session after a successful write sees the new version;
- a background poll of the store's `config_epoch` every `poll_interval` seconds picks
  up other processes' writes (well within 1 s);
- when the poll is not known to be healthy, `current()` spends one cheap epoch query
  before answering, and never serves a snapshot it knows to be stale;
- when the store is unreachable, the last known-good snapshot is served with
  `stale=True` so callers can record the degradation instead of dropping the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from app.background import stop_task
from app.domain import AgentConfig, NotFound, Route, StoreUnavailable
from app.domain.routing import RoutingTable
from app.observability import metrics
from app.store.base import ConfigStore

log = logging.getLogger(__name__)

_PAGE = 500


@dataclass(frozen=True, slots=True)
class Canary:
    """A running canary as session starts need it: no store round trip to pick an arm."""

    config: AgentConfig
    percent: int
    rollout_id: str


_NO_CANARIES: Mapping[str, Canary] = MappingProxyType({})
_NO_HEADS: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True)
class ConfigSnapshot:
    epoch: int
    configs: Mapping[str, AgentConfig]
    """Each agent's published config: what routing hands out (the stable arm of a canary)."""
    routes: tuple[Route, ...]
    routing: RoutingTable
    """What sessions can be routed to, built from `routes` and `configs` (`build`)."""
    loaded_at: float = field(default_factory=time.monotonic)
    stale: bool = False
    """True when served from memory because the store could not be reached."""
    canaries: Mapping[str, Canary] = field(default_factory=lambda: _NO_CANARIES)
    """Running canaries by agent id."""
    heads: Mapping[str, int] = field(default_factory=lambda: _NO_HEADS)
    """Each agent's newest version (drafts included), where it differs from the published one."""

    @classmethod
    def build(
        cls, epoch: int, configs: Mapping[str, AgentConfig], routes: Iterable[Route], **kw: Any
    ) -> ConfigSnapshot:
        """A snapshot with its routing table (the only way to make one)."""
        frozen = MappingProxyType(dict(configs))
        route_list = tuple(routes)
        for name in ("canaries", "heads"):
            if name in kw:
                kw[name] = MappingProxyType(dict(kw[name]))
        return cls(
            epoch=epoch, configs=frozen, routes=route_list,
            routing=RoutingTable.build(route_list, frozen.values()), **kw,
        )

    def newest(self, agent_id: str) -> AgentConfig | None:
        """The agent's newest version if this snapshot holds it (it is the published one)."""
        cfg = self.configs.get(agent_id)
        if cfg is None or self.heads.get(agent_id, cfg.version) != cfg.version:
            return None
        return cfg

    @property
    def default_agent_id(self) -> str | None:
        return next((r.agent_id for r in self.routes if r.is_default), None)

    def enabled(self, agent_id: str) -> AgentConfig | None:
        cfg = self.configs.get(agent_id)
        return cfg if cfg is not None and cfg.enabled else None


EMPTY = ConfigSnapshot.build(epoch=-1, configs={}, routes=(), loaded_at=0.0)


class ConfigCache:
    def __init__(self, store: ConfigStore, *, poll_interval: float = 0.5) -> None:
        self._store = store
        self._poll_interval = poll_interval
        self._snapshot: ConfigSnapshot = EMPTY
        # Local writes bump `_changes`; a snapshot covers the changes counted when its
        # reload *started*. Fresh only when it covers them all, so neither a write that
        # lands mid-reload nor a reader arriving mid-reload can get a pre-write snapshot.
        self._changes = 1
        self._covered = 0
        self._last_poll_ok = 0.0
        self._poll_task: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self.store_ok = False
        store.add_change_listener(self._on_local_change)

    # lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.current()
        if self._poll_task is None:
            self._poll_task = asyncio.create_task(self._poll_loop(), name="config-cache-poll")

    async def aclose(self) -> None:
        """Stop polling; bounded even when a poll in flight swallows the cancel."""
        task, self._poll_task = self._poll_task, None
        if task is not None:
            await stop_task(task, "config cache poll")

    # reads -------------------------------------------------------------------

    @property
    def snapshot(self) -> ConfigSnapshot:
        """The last loaded snapshot, with no freshness check (for metrics and debug)."""
        return self._snapshot

    def is_fresh(self) -> bool:
        """True when the snapshot is known current without asking the store."""
        return (
            self._covered == self._changes
            and self.store_ok  # a failed poll ends freshness at once
            and self._snapshot is not EMPTY
            and time.monotonic() - self._last_poll_ok < 2 * self._poll_interval + 0.2
        )

    async def current(self) -> ConfigSnapshot:
        """A snapshot that reflects every committed write, or the last known-good one
        (marked `stale`) if the store is down. Raises `StoreUnavailable` only when
        nothing was ever loaded."""
        if self.is_fresh():
            return self._snapshot
        try:
            await self._check()
            return self._snapshot
        except StoreUnavailable as e:
            if self._snapshot is EMPTY:
                raise
            log.warning("store unavailable (%s); serving last known-good configs", e.message)
            return replace(self._snapshot, stale=True)
        except Exception as e:
            # Not an outage: e.g. a stored config that no longer validates. Sessions keep
            # the last good snapshot (marked stale) rather than failing to start.
            log.exception("config reload failed; serving last known-good configs")
            if self._snapshot is EMPTY:
                raise StoreUnavailable(f"config reload failed: {type(e).__name__}") from e
            return replace(self._snapshot, stale=True)

    async def get_agent_config(self, agent_id: str) -> AgentConfig:
        """`ConfigSource` for handoffs: the current config of an enabled agent."""
        cfg = (await self.current()).enabled(agent_id)
        if cfg is None:
            raise NotFound(f"agent {agent_id!r} not found or disabled", agent_id=agent_id)
        return cfg

    # internals ---------------------------------------------------------------

    def _on_local_change(self) -> None:
        self._changes += 1

    async def _reload(self, epoch: int) -> None:
        async with self._reload_lock:
            covers = self._changes
            configs: dict[str, AgentConfig] = {}
            canaries: dict[str, Canary] = {}
            heads: dict[str, int] = {}
            offset = 0
            while True:
                page, total = await self._store.list_published(offset=offset, limit=_PAGE)
                for p in page:
                    configs[p.config.agent_id] = p.config
                    if p.canary is not None and p.rollout is not None:
                        canaries[p.config.agent_id] = Canary(p.canary, p.rollout.percent, p.rollout.id)
                    if p.current_version is not None and p.current_version != p.config.version:
                        heads[p.config.agent_id] = p.current_version
                offset += len(page)
                if not page or offset >= total:
                    break
            routes = tuple(await self._store.list_routes())
            # `epoch` was read before listing: if another process wrote meanwhile,
            # the next check sees a newer epoch and reloads (never the reverse).
            self._snapshot = ConfigSnapshot.build(
                epoch=epoch, configs=configs, routes=routes, canaries=canaries, heads=heads)
            self._covered = covers
            log.debug("config snapshot reloaded: epoch %s, %d agents", epoch, len(configs))

    async def _check(self) -> None:
        """One epoch query; reload only if something changed."""
        try:
            epoch = await self._store.config_epoch()
            if self._covered != self._changes or epoch != self._snapshot.epoch:
                try:
                    await self._reload(epoch)
                except StoreUnavailable:
                    metrics.CONFIG_RELOADS.labels("unavailable").inc()
                    raise
                except Exception:
                    metrics.CONFIG_RELOADS.labels("error").inc()
                    raise
                metrics.CONFIG_RELOADS.labels("ok").inc()
        except StoreUnavailable:
            self.store_ok = False
            raise
        self._last_poll_ok = time.monotonic()
        self.store_ok = True
        metrics.CONFIG_CONFIRMED_AT.labels(metrics.CONFIG_CACHE).set_to_current_time()

    async def _poll_loop(self) -> None:
        # Until `aclose` lets go of this task: a poll that swallowed the cancel ends here.
        while self._poll_task is asyncio.current_task():
            await asyncio.sleep(self._poll_interval)
            try:
                await self._check()
            except StoreUnavailable:
                pass
            except Exception:  # keep polling whatever happens; never kill the worker
                log.exception("config cache poll failed")
