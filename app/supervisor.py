"""The service's root process: the admin API (uvicorn) and the LiveKit worker processes.

Why a supervisor of our own: `AgentServer.run()` gives up after `max_retry` failed
connections (and the legacy CLI then exits 0), and uvicorn installs its own signal
handlers. Here the supervisor owns SIGTERM/SIGINT, keeps the API serving whatever
LiveKit does, runs `WORKER_PROCESSES` LiveKit worker processes (app/worker/pool.py: one
per usable core by default, each retrying LiveKit with capped backoff and restarted if
it dies), reports them all on `/readyz`, and on shutdown drains them before closing the
store. It also marks the sessions of crashed processes and containers `abandoned`
(`_session_liveness`: each worker process heartbeats its own), which works with many
containers on one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sys
import time
from collections.abc import Generator
from datetime import timedelta
from typing import TYPE_CHECKING

import uvicorn

from app.agents.test_pool import TestRunPool, abandon_leftover_runs
from app.api.app import create_app
from app.api.status import RuntimeStatus, WorkerProcessStatus
from app.domain import StoreUnavailable
from app.domain.values import utcnow
from app.observability import tracing
from app.settings import Settings
from app.store import ConfigStore, open_store
from app.store.cache import ConfigCache
from app.store.rollout_guard import RolloutGuard
from app.store.sources import config_source
from app.webhooks.process import DispatcherProcess
from app.worker.drain import API_STOP_TIMEOUT, STORE_CLOSE_TIMEOUT
from app.worker.pool import WorkerInfo, WorkerPool
from app.worker.process import freeze_startup_heap, preimport_worker_stack
from app.worker.sessions import instance_id

if TYPE_CHECKING:
    from app.localmodels.sidecar import ModelSidecar
    from app.telephony.campaigns import CampaignRunner
    from app.worker.services import WorkerServices

log = logging.getLogger(__name__)

STORE_RETRY_INTERVAL = 2.0
API_START_WAIT = 30.0
"""At most this long the worker processes wait for the API to listen before starting."""


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the supervisor owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def livekit_configured(settings: Settings) -> bool:
    return not settings.missing_livekit()


class Supervisor:
    def __init__(self, settings: Settings, *, dev: bool, model_server: ModelSidecar | None = None) -> None:
        """`model_server`: a model server to run beside the platform (`--local-models`,
        `--demo`); `settings` must already point the default providers at it."""
        self.settings = settings
        self.dev = dev
        self.model_server = model_server
        self.status = RuntimeStatus()
        if model_server is not None:
            model_server.on_state = self.status.set_models
        if livekit_configured(settings):  # not ready until the worker has registered
            self.status.set_worker("connecting", "worker starting")
        self.store: ConfigStore | None = None
        self.services: WorkerServices | None = None
        self._stop = asyncio.Event()
        self.pool: WorkerPool | None = None
        self._uvicorn: _Server | None = None
        self._store_down = False
        self._store_setup_pending = False
        self.test_runs: TestRunPool | None = None
        self._stack_lock = asyncio.Lock()
        self._stack_loaded = False
        self.owner = instance_id(fresh=True)
        """This process's own owner id; each worker process heartbeats its sessions under
        one of its own (app/worker/process.py), this one only proves the store answers."""
        self._store_ok_since: float | None = None
        """When heartbeats last started succeeding (None while they fail)."""

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("shutdown requested: draining")
            self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)

        from app.worker.tracing import start_tracing

        start_tracing(self.settings)  # before the API is built: its requests are traced too

        if self.model_server is not None:
            failed = await self._start_model_server()
            if failed is not None:
                return failed
        self.store = open_store(self.settings.database_url)
        await self._open_store()

        from app.api.tokens import token_controller
        from app.assets import BrowserAssets
        from app.console import console_handlers

        # The console's LiveKit client and Swagger UI: from node_modules or the asset
        # cache, else fetched from the npm registry in the background (the API serves meanwhile).
        assets = BrowserAssets.from_settings(self.settings, fetch=True)
        assets.start()

        # One config cache per process, shared by the API's GETs and the worker's
        # session starts; this process's writes refresh it at once, others' within a poll.
        self.cache = ConfigCache(self.store, poll_interval=self.settings.cache_poll_interval)
        await self.cache.start()
        # What sessions, /resolve and /token resolve against (the cache, or PTE's fixed
        # snapshot): ready before the API serves, so /resolve answers from the start.
        self.configs = config_source(self.settings, self.store, cache=self.cache)
        if self.configs is not self.cache:
            await self.configs.start()
        # Webhook deliveries: off every session's path, in a child process of their own
        # (app/webhooks/process.py says why); any number may run on one store (leases).
        self.dispatcher = DispatcherProcess(self.settings, wake_from=self.store)
        self.dispatcher.start()
        # Stored tests run here, in the background, a few at a time (app/agents/test_pool.py).
        self.test_runs = TestRunPool(self.settings, self.store, load_stack=self._load_worker_stack)
        # Aborts a canary that does worse than stable (app/store/rollout_guard.py).
        self.rollout_guard = RolloutGuard.from_settings(self.settings, self.store)
        self.rollout_guard.start()
        app = create_app(
            self.settings, self.store, status=self.status, cache=self.cache, configs=self.configs,
            assets=assets, test_runs=self.test_runs,
            extra_route_handlers=[*console_handlers(self.settings, assets), token_controller(self.settings)],
        )
        self._uvicorn = _Server(
            uvicorn.Config(
                app, host=self.settings.host, port=self.settings.port, log_config=None,
                access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                # The client address is the socket peer (or CLIENT_IP_HEADER, read by the
                # token rate limit): uvicorn's default rewrites it from X-Forwarded-For for
                # any loopback peer, so one client could pose as 40 and pass the limit.
                proxy_headers=False, forwarded_allow_ips=[],
            )
        )
        api_task = asyncio.create_task(self._uvicorn.serve(), name="admin-api")
        # The API answers probes while the worker processes (seconds of imports) start.
        if livekit_configured(self.settings):
            await self._start_workers(api_task)
        else:
            # No worker processes: this process runs what they would otherwise (post-call
            # analyses of sessions stored earlier, buffered writes).
            self.services = await self._start_services()
        worker_task = asyncio.create_task(self._run_worker(), name="livekit-worker")
        store_task = asyncio.create_task(self._watch_store(), name="store-watch")
        liveness_task = asyncio.create_task(self._session_liveness(), name="session-liveness")
        # Campaigns: any number of processes may run them on one store (contact leases).
        campaigns = self._start_campaigns()
        stop_task = asyncio.create_task(self._stop.wait())

        done, _ = await asyncio.wait({api_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        exit_code = 0
        if api_task in done and not self._stop.is_set():
            exc = api_task.exception()
            log.error("admin API stopped unexpectedly: %s", exc or "server exited (port in use?)")
            exit_code = 1
            self._stop.set()

        if campaigns is not None:  # stop claiming first; ringing dials get a few seconds
            await campaigns.aclose()
        await self._shutdown_worker(worker_task)
        await self.test_runs.aclose()  # its runs still going are recorded abandoned
        await self.rollout_guard.aclose()
        await self.dispatcher.aclose()  # after the drain: the sessions' ends are committed
        if self.model_server is not None:  # after the drain: the last sessions still talk to it
            await self.model_server.aclose()
        await assets.aclose()
        store_task.cancel()
        liveness_task.cancel()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(api_task, API_STOP_TIMEOUT)
        with contextlib.suppress(Exception):  # bounded: fly's kill_timeout covers the whole drain
            async with asyncio.timeout(STORE_CLOSE_TIMEOUT):
                if self.services is not None:
                    await self.services.aclose()
                await self.configs.aclose()  # idempotent; services may never have started
                await self.cache.aclose()
                await self.store.aclose()
        stop_task.cancel()
        # Spans still buffered go out now (bounded by OTEL_BSP_EXPORT_TIMEOUT); off the loop.
        await asyncio.to_thread(tracing.shutdown)
        log.info("stopped")
        return exit_code

    async def _start_model_server(self) -> int | None:
        """Start (or find) the model server before anything else: loading models takes
        seconds, and a wrong model path must stop `dev` with its one-line reason. None
        when it runs; else the exit code (0: stopped by a signal while loading)."""
        from app.localmodels.sidecar import ModelServerError

        assert self.model_server is not None
        start = asyncio.create_task(self.model_server.start())
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not start.done():  # SIGINT/SIGTERM while the models load
            start.cancel()
            with contextlib.suppress(BaseException):
                await start
            await self.model_server.aclose()
            return 0
        try:
            start.result()
        except ModelServerError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            await self.model_server.aclose()
            return 2
        self.model_server.watch()
        return None

    async def _load_worker_stack(self) -> None:
        """The worker stack's slow imports, once per process, whoever needs them first (the
        services, a stored-test run): two importers at once deadlock on the import locks."""
        async with self._stack_lock:
            if not self._stack_loaded:
                await asyncio.to_thread(preimport_worker_stack)
                self._stack_loaded = True

    def _start_campaigns(self) -> CampaignRunner | None:
        if not livekit_configured(self.settings):
            return None  # campaigns cannot be created either (503); none can be due
        from app.telephony.campaigns import CampaignRunner
        from app.worker.sessions import instance_id

        assert self.store is not None
        runner = CampaignRunner(self.settings, self.store, owner=instance_id())
        runner.start()
        return runner

    async def _start_services(self) -> WorkerServices:
        # livekit.agents and openai take seconds to import: do that off the loop, then
        # import the plugins on the main thread (LiveKit requires it) now that it is quick.
        await self._load_worker_stack()
        from app.worker.services import WorkerServices, install_services

        services = WorkerServices(self.settings, self.store, cache=self.cache, configs=self.configs)
        services.rollout_guard = self.rollout_guard
        await services.start()
        services.load_vad()  # ~40 ms, once per process
        install_services(services)
        freeze_startup_heap(self.settings)
        return services

    # ------------------------------------------------------------------ store

    async def _open_store(self) -> None:
        assert self.store is not None
        try:
            await self.store.start()
        except StoreUnavailable as e:
            self._store_down = True
            self._store_setup_pending = True
            log.error(
                "store unavailable at start (%s); the API serves, /readyz is 503, "
                "retrying every %.0fs", e.message, STORE_RETRY_INTERVAL,
            )
            return
        try:
            await self._after_store_start()
        except StoreUnavailable as e:  # went away right after start: the watch retries
            self._store_down = self._store_setup_pending = True
            log.error("store unavailable right after start (%s); retrying", e.message)

    async def _after_store_start(self) -> None:
        """One-time work once the store first answers (at start, or on recovery)."""
        assert self.store is not None
        if self.settings.database_url.startswith("sqlite"):
            # One machine owns a SQLite file, so any session still `active` belongs to a
            # process that died: close it out now rather than after the stale timeout.
            n = await self.store.abandon_active_sessions("process restarted")
            if n:
                log.warning("marked %d session(s) left active by a previous run as abandoned", n)
        else:
            # Shared database: other containers' live sessions are active too; only those
            # whose owner stopped heartbeating belong to a dead process.
            await self._abandon_stale()
        # test runs a stopped process left unfinished (on any backend: see test_pool)
        if self.test_runs is None or not self.test_runs.busy:  # never this process's own runs
            await abandon_leftover_runs(self.settings, self.store)
        if self.dev:
            await self._seed_if_empty()
        self._store_setup_pending = False

    async def _abandon_stale(self) -> int:
        assert self.store is not None
        stale_after = self.settings.session_stale_after
        n = await self.store.abandon_stale_sessions(
            utcnow() - timedelta(seconds=stale_after),
            f"owner process stopped (no heartbeat for {stale_after:g}s)",
        )
        if n:
            log.warning("marked %d session(s) of stopped process(es) as abandoned", n)
        return n

    async def _session_liveness(self) -> None:
        """Heartbeat this container's active sessions every `session_heartbeat_interval`
        and, every `session_stale_after`, abandon sessions whose owner stopped (a crashed
        container, on any backend). Store outages are logged and waited out.

        The sweep waits until our own heartbeats have worked for a whole stale window:
        right after an outage every owner's heartbeats failed alike, and sweeping before
        they had a chance to resume would abandon live sessions."""
        s = self.settings
        next_sweep = time.monotonic() + s.session_stale_after
        failing = False
        while True:
            await asyncio.sleep(s.session_heartbeat_interval)
            if self.store is None or self._store_setup_pending:
                continue
            try:
                await self.store.heartbeat(self.owner)
                if self._store_ok_since is None:
                    self._store_ok_since = time.monotonic()
                if failing:
                    log.info("session heartbeats written again")
                    failing = False
                now = time.monotonic()
                if now >= next_sweep and now - self._store_ok_since >= s.session_stale_after:
                    next_sweep = now + s.session_stale_after
                    await self._abandon_stale()
            except StoreUnavailable as e:
                self._store_ok_since = None
                if not failing:
                    log.warning("session heartbeat failed (%s); retrying", e.message)
                    failing = True
            except Exception:  # keep heartbeating whatever happens
                self._store_ok_since = None
                log.exception("session heartbeat or stale-session sweep failed")

    async def _seed_if_empty(self) -> None:
        assert self.store is not None
        _, total = await self.store.list_agent_configs(limit=1)
        if total == 0:
            from app.seed import seed

            report = await seed(self.store, self.settings.prompts_dir)
            log.info("empty database: seeded example agents (%s)", report)

    async def _watch_store(self) -> None:
        """Retry a store that failed at start; report health on /readyz."""
        assert self.store is not None
        while True:
            try:
                if self._store_down:
                    await self.store.start()
                await self.store.ping()
                if self._store_down:
                    log.info("store reachable again")
                    self._store_down = False
                if self._store_setup_pending:
                    await self._after_store_start()
            except StoreUnavailable as e:
                if not self._store_down:
                    log.warning("store unavailable (%s); /readyz is 503 until it answers again", e.message)
                self._store_down = True
            except Exception:  # keep watching whatever happens
                log.exception("store watch failed")
            await asyncio.sleep(STORE_RETRY_INTERVAL)

    # ----------------------------------------------------------------- worker

    async def _start_workers(self, api_task: asyncio.Task[None]) -> None:
        """Spawn the worker processes once the API listens: their imports take seconds of
        CPU on every core, and probes must get answers meanwhile."""
        from app.logging_setup import json_logs_configured

        assert self._uvicorn is not None
        deadline = time.monotonic() + API_START_WAIT
        while not self._uvicorn.started and not api_task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        n = self.settings.worker_process_count
        self.pool = WorkerPool(
            self.settings, count=n, dev=self.dev, json_logs=json_logs_configured(), on_change=self._workers_changed,
            on_journal=self.dispatcher.wake,
        )
        log.info("starting %d LiveKit worker process(es) (WORKER_PROCESSES)", n)
        self.pool.start()

    def _workers_changed(self) -> None:
        """A worker process reported or died: `/readyz` shows each, and the worker state
        is `registered` only when all of them are."""
        assert self.pool is not None
        workers = self.pool.workers
        self.status.set_workers([_worker_status(w) for w in workers])
        if self._stop.is_set():
            return
        registered = sum(1 for w in workers if w.state == "registered")
        if registered == len(workers):
            self.status.set_worker("registered")
            return
        waiting = next(w for w in workers if w.state != "registered")
        why = waiting.detail or waiting.state
        self.status.set_worker(
            "connecting", f"{registered} of {len(workers)} worker processes registered; "
            f"worker {waiting.index}: {why}"[:300],
        )

    async def _run_worker(self) -> None:
        from app.worker.model_unavailable import missing_llm_endpoint

        if livekit_configured(self.settings) and (no_endpoint := missing_llm_endpoint(self.settings)):
            log.warning(
                "%s: only agents with their own llm.base_url can answer; sessions of the others "
                "end with a spoken apology and are recorded failed (llm_unavailable).", no_endpoint,
            )
        if not livekit_configured(self.settings):
            self.status.set_worker("disabled", "LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET not set")
            log.warning(
                "LiveKit is not configured (missing: %s), so the voice worker is disabled; the "
                "admin API and console serve without it, and POST /api/v1/token answers 503 until "
                "LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET are all set.",
                ", ".join(self.settings.missing_livekit()),
            )

    async def _shutdown_worker(self, worker_task: asyncio.Task[None]) -> None:
        """Graceful drain of every worker process (app/worker/pool.py, app/worker/drain.py):
        each refuses new jobs, lets live sessions end for up to DRAIN_TIMEOUT, says goodbye
        to the rest and records them `abandoned`, then closes. The API keeps answering
        probes meanwhile."""
        worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker_task
        if self.pool is not None:
            self.status.set_worker("draining", "shutting down: finishing active sessions")
            try:
                await self.pool.drain()
            except Exception:
                log.exception("drain failed")
            self.status.set_workers([_worker_status(w) for w in self.pool.workers])


def _worker_status(w: WorkerInfo) -> WorkerProcessStatus:
    known = ("starting", "connecting", "registered", "draining", "stopped", "restarting")
    state = w.state if w.state in known else "connecting"
    return WorkerProcessStatus(
        index=w.index, pid=w.pid, state=state,  # type: ignore[arg-type]
        detail=w.detail, sessions=w.sessions, load=w.load, restarts=w.restarts, cpus=w.cpus,
    )


def prepare_settings(settings: Settings, *, dev: bool) -> tuple[Settings, str | None]:
    """Dev-mode defaults: a generated admin key if none is set (returned so it can be
    printed once), webhook URLs unrestricted (`start`: https to public addresses only).
    Production refuses to start without its required settings."""
    generated = None
    if settings.webhook_url_policy == "auto":
        settings = settings.model_copy(update={"webhook_url_policy": "any" if dev else "public"})
    if dev and settings.admin_api_key is None:
        generated = "dev-" + secrets.token_urlsafe(24)
        from pydantic import SecretStr

        settings = settings.model_copy(update={"admin_api_key": SecretStr(generated)})
    return settings, generated
