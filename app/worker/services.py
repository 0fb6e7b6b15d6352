"""Per-process worker services: the store, the config cache and the VAD model.

Why this exists: LiveKit's THREAD executor runs every job on its own event loop in
its own thread, while the store's async engine belongs to the loop that opened it.
`WorkerServices` owns them on one loop (the supervisor's, or a PROCESS-mode job's)
and `call()` runs store coroutines there from whichever loop a session lives on.
One instance per process, created at start-up, never per session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

# LiveKit plugins must register on the main thread, and THREAD-executor jobs run on
# other threads: import them here, at start-up, never first inside a job.
from livekit.plugins import (
    openai as _lk_openai,  # noqa: F401
    silero,
)

from app.agents.context import ConfigSource
from app.domain import AgentConfig, StoreUnavailable
from app.settings import AgentMode, Settings
from app.store.base import ConfigStore
from app.store.cache import ConfigCache, ConfigSnapshot
from app.worker.sessions import PendingWrites

log = logging.getLogger("app.worker")

T = TypeVar("T")

PENDING_FLUSH_TIMEOUT = 3.0
"""At shutdown, how long buffered session writes may wait for the store (bounded: the
supervisor closes services within its own store-close budget)."""

_services: WorkerServices | None = None


class WorkerServices:
    def __init__(
        self,
        settings: Settings,
        store: ConfigStore | None,
        *,
        cache: ConfigCache | None = None,
        vad: Any = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cache = cache or (
            ConfigCache(store, poll_interval=settings.cache_poll_interval) if store is not None else None
        )
        self.vad = vad
        self.loop: asyncio.AbstractEventLoop | None = None
        # Session writes that outlive their session in a store outage (see sessions.py).
        self.pending = PendingWrites()

    @property
    def pte_mode(self) -> bool:
        return self.settings.agent_mode == AgentMode.pte

    async def start(self) -> None:
        """Start the cache on the running loop, which becomes the owner loop."""
        self.loop = asyncio.get_running_loop()
        self.pending.start()
        if self.cache is not None:
            await self.cache.start()

    async def aclose(self) -> None:
        # Buffered session writes get a last chance, then are logged with their payloads.
        await self.pending.aclose(timeout=PENDING_FLUSH_TIMEOUT)
        if self.cache is not None:
            await self.cache.aclose()

    def load_vad(self) -> Any:
        """Silero VAD, loaded once per process and shared by every session."""
        if self.vad is None:
            self.vad = silero.VAD.load()
        return self.vad

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the owner loop, from any loop."""
        owner = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - always called from a coroutine
            running = None
        if owner is None or owner is running or owner.is_closed():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, owner))

    async def snapshot(self) -> ConfigSnapshot:
        """Configs and routes for a session start; see `ConfigCache.current`."""
        if self.cache is None:
            raise StoreUnavailable("no store configured")
        cache = self.cache
        if cache.is_fresh():  # the hot path: no store round trip, no loop hop
            return cache.snapshot
        return await self.call(cache.current())

    @property
    def config_source(self) -> ConfigSource:
        return _BridgedConfigSource(self)


class _BridgedConfigSource:
    def __init__(self, services: WorkerServices) -> None:
        self._services = services

    async def get_agent_config(self, agent_id: str) -> AgentConfig:
        cache = self._services.cache
        if cache is None:
            from app.domain import NotFound

            raise NotFound(f"agent {agent_id!r} not available without a store")
        return await self._services.call(cache.get_agent_config(agent_id))


def install_services(services: WorkerServices | None) -> None:
    """Make `services` the process-wide instance the LiveKit entrypoint uses."""
    global _services
    _services = services


def get_services() -> WorkerServices:
    if _services is None:
        raise RuntimeError("worker services are not installed (call install_services first)")
    return _services


async def ensure_services(settings_factory: Any = None) -> WorkerServices:
    """In a PROCESS-mode job process nothing was installed: open a store for this
    process on the job's loop (the supervisor's one lives in another process)."""
    global _services
    if _services is not None:
        return _services
    from app.settings import Settings
    from app.store import open_store

    settings = settings_factory() if settings_factory else Settings()
    store = None if settings.agent_mode == AgentMode.pte else open_store(settings.database_url)
    services = WorkerServices(settings, store)
    if store is not None:
        try:
            await store.start()
        except StoreUnavailable:
            log.warning("store unavailable in job process; sessions use the fallback agent")
    await services.start()
    services.load_vad()
    _services = services
    return services

