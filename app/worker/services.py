"""Per-process worker services: the store, the config source and the VAD model.

Why this exists: LiveKit's THREAD executor runs every job on its own event loop in
its own thread, while the store's async engine belongs to the loop that opened it.
`WorkerServices` owns them on one loop (the supervisor's, or a PROCESS-mode job's)
and `call()` runs store coroutines there from whichever loop a session lives on.
One instance per process, created at start-up, never per session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

# LiveKit plugins must register on the main thread, and THREAD-executor jobs run on
# other threads: import them here, at start-up, never first inside a job.
from livekit.agents import vad as lk_vad
from livekit.plugins import (
    openai as _lk_openai,  # noqa: F401
    silero,
)

from app.adapters import install_adapters
from app.domain import AgentConfig, SessionRecord, StoreUnavailable
from app.domain.pricing import PriceTable
from app.settings import Settings
from app.store.base import ConfigStore
from app.store.cache import ConfigCache, ConfigSnapshot
from app.store.rollout_guard import RolloutGuard
from app.store.sources import SnapshotSource, config_source
from app.worker.analysis import AnalysisRunner
from app.worker.sessions import PendingWrites, instance_id

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)

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
        configs: SnapshotSource | None = None,
        vad: lk_vad.VAD | None = None,
        run_analyses: bool = True,
        analysis_llm_client: openai.AsyncClient | None = None,
    ) -> None:
        """`cache`: the process's store cache (made here when not given and there is a
        store). `configs`: where sessions get their configs (`config_source` picks it
        from the settings when not given). `run_analyses`: run post-call analyses in this
        process (not in PROCESS-executor job processes: the supervisor's runner does);
        `analysis_llm_client`: the OpenAI client analyses use (tests, the sim)."""
        self.settings = settings
        self.store = store
        self.cache = cache or (
            ConfigCache(store, poll_interval=settings.cache_poll_interval) if store is not None else None
        )
        self.configs: SnapshotSource = configs or config_source(settings, store, cache=self.cache)
        self.vad = vad
        self.loop: asyncio.AbstractEventLoop | None = None
        # Session writes that outlive their session in a store outage (see sessions.py).
        self.pending = PendingWrites()
        self.prices = PriceTable.from_settings(settings)
        self.analysis: AnalysisRunner | None = None
        self.rollout_guard: RolloutGuard | None = None
        """Set by the supervisor: nudged when a canary session ends."""
        if store is not None and run_analyses:
            self.analysis = AnalysisRunner(
                settings, store, owner=instance_id(), prices=self.prices, llm_client=analysis_llm_client
            )

    async def start(self) -> None:
        """Install the library adapters (once per process) and start the config source
        on the running loop, which becomes the owner loop."""
        install_adapters()
        self.loop = asyncio.get_running_loop()
        self.pending.start()
        if self.analysis is not None:
            self.analysis.start()
        if self.cache is not None:
            await self.cache.start()
        if self.configs is not self.cache:
            await self.configs.start()

    async def aclose(self) -> None:
        if self.analysis is not None:  # running analyses give their leases back
            await self.analysis.aclose()
        # Buffered session writes get a last chance, then are logged with their payloads.
        await self.pending.aclose(timeout=PENDING_FLUSH_TIMEOUT)
        if self.configs is not self.cache:
            await self.configs.aclose()
        if self.cache is not None:
            await self.cache.aclose()

    def session_closed(self, record: SessionRecord) -> None:
        """A session's last writes are stored (or handed on): analyse it now if asked.
        Called from the session's own loop (THREAD executor: another thread)."""
        if self.analysis is not None and record.analysis is not None:
            self.analysis.nudge(record)
        if self.rollout_guard is not None and record.arm is not None:
            self.rollout_guard.nudge()  # a canary's figures changed: judge it soon

    def load_vad(self) -> lk_vad.VAD:
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
        """Configs, routes and routing table for a session start; see `ConfigCache.current`."""
        configs = self.configs
        if configs.is_fresh():  # the hot path: no store round trip, no loop hop
            return configs.snapshot
        return await self.call(configs.current())

    @property
    def config_source(self) -> SnapshotSource:
        """`configs`, usable from any session's loop (reads run on the owner loop)."""
        return _BridgedConfigSource(self)


class _BridgedConfigSource:
    def __init__(self, services: WorkerServices) -> None:
        self._services = services

    @property
    def snapshot(self) -> ConfigSnapshot:
        return self._services.configs.snapshot

    def is_fresh(self) -> bool:
        return self._services.configs.is_fresh()

    async def current(self) -> ConfigSnapshot:
        return await self._services.snapshot()

    async def get_agent_config(self, agent_id: str) -> AgentConfig:
        return await self._services.call(self._services.configs.get_agent_config(agent_id))

    async def start(self) -> None:  # the services own the source's lifecycle
        return None

    async def aclose(self) -> None:
        return None


def install_services(services: WorkerServices | None) -> None:
    """Make `services` the process-wide instance the LiveKit entrypoint uses."""
    global _services
    _services = services


def installed_services() -> WorkerServices | None:
    """The process-wide instance, if one was installed."""
    return _services


async def ensure_services(settings_factory: Callable[[], Settings] | None = None) -> WorkerServices:
    """In a PROCESS-mode job process nothing was installed: open a store for this
    process on the job's loop (the supervisor's one lives in another process)."""
    global _services
    if _services is not None:
        return _services
    from app.store import open_store

    settings = settings_factory() if settings_factory else Settings()
    store = open_store(settings.database_url)
    # Analyses are the supervisor's runner's: a job process ends with its job.
    services = WorkerServices(settings, store, run_analyses=False)
    try:
        await store.start()
    except StoreUnavailable:
        log.warning("store unavailable in job process: session records wait for it, and "
                    "sessions of store-backed agents use the fallback agent")
    await services.start()
    services.load_vad()
    _services = services
    return services

