"""One LiveKit worker process: an embedded `AgentServer` serving calls as threads.

Why processes: with the THREAD executor every call of a process runs Python under one
interpreter lock, so one process serves about one core's worth of calls however many
cores the machine has. The supervisor (app/supervisor.py) therefore runs
`WORKER_PROCESSES` of these (app/worker/pool.py), each registered with LiveKit under the
same agent name; LiveKit sends each call to the worker reporting the lowest load
(`ThreadWorkerLoad`: this process's CPU). Calls keep THREAD mode's memory per call:
each process pays its start-up memory (imports, the VAD model) once, not per call.

Each process owns what a session needs, on its own loop: the store, a config cache
(changes reach it within one poll), the VAD model, the session writers and the
pending-writes buffer, and post-call analyses. It also heartbeats its own sessions
under an owner id of its own, so when it dies (`kill -9`, OOM) its sessions stop being
heartbeated and the supervisor's stale-session sweep finishes them as `abandoned`;
turns already committed stay as they are.

It talks to the supervisor over one pipe: it sends its state (connecting, registered,
draining), live sessions and load; the pipe is also its lifeline (the supervisor gone,
EOF: drain and exit). SIGTERM drains: new jobs refused, live calls get
`DRAIN_TIMEOUT`, then a goodbye and an `abandoned` record (app/worker/drain.py).
SIGINT is ignored: a Ctrl-C reaches the whole process group and the supervisor turns
it into SIGTERM for every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import threading
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from app.cores import pin_this_process, worker_cpus
from app.domain import StoreUnavailable
from app.settings import ExecutorType, Settings
from app.store import ConfigStore, open_store
from app.worker.drain import STORE_CLOSE_TIMEOUT, WORKER_CLOSE_TIMEOUT, active_sessions, drain_worker
from app.worker.sessions import instance_id

if TYPE_CHECKING:
    from livekit.agents import AgentServer

    from app.worker.services import WorkerServices

log = logging.getLogger(__name__)

WORKER_BACKOFF_MAX = 30.0
"""Cap on the pause between two attempts to reach LiveKit."""
STORE_RETRY_INTERVAL = 2.0
STATUS_INTERVAL = 1.0
"""Seconds between two reports of sessions and load to the supervisor."""


def freeze_startup_heap(settings: Settings) -> bool:
    """THREAD executor: move the start-up heap (imports, the VAD model) out of the cyclic
    GC. Every session runs in this process, and a full collection scanning that heap
    stalls all of them at once (100-250 ms measured, enough to make every call's audio
    late); LiveKit does the same before forking PROCESS-executor jobs."""
    if settings.executor_type != ExecutorType.thread:
        return False
    gc.collect()
    gc.freeze()
    return True


def preimport_worker_stack() -> None:
    """The slow imports of the worker stack (the OpenAI realtime/responses types are most
    of what importing the OpenAI plugin costs) and the OpenAI SDK adapter's one-time
    type walk, before the first call needs them."""
    import livekit.agents  # noqa: F401
    import openai
    import openai.types.beta.realtime
    import openai.types.realtime
    import openai.types.responses  # noqa: F401

    from app.adapters import openai_sdk

    openai_sdk.install()


def worker_process_main(settings: Settings, index: int, conn: Connection, json_logs: bool, dev: bool) -> None:
    """The spawned process's entry point (`multiprocessing` spawn: a fresh interpreter)."""
    from app.logging_setup import configure_logging

    # first: every thread started from here on inherits the mask
    cpus = pin_this_process(worker_cpus(index, settings.worker_process_count, settings.worker_cpu_pinning))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings, json_logs=json_logs)
    if cpus is not None:
        log.info("worker process %d pinned to CPU %s", index, ",".join(map(str, cpus)))
    raise SystemExit(asyncio.run(WorkerRuntime(settings, index, conn, dev=dev, cpus=cpus).run()))


class WorkerRuntime:
    """What runs inside one worker process. `run_jobs` is where calls come from (LiveKit)."""

    def __init__(
        self, settings: Settings, index: int, conn: Connection, *, dev: bool = False, cpus: list[int] | None = None,
    ) -> None:
        self.settings = settings
        self.cpus = cpus
        """The cores this process is pinned to (`WORKER_CPU_PINNING`); None: not pinned."""
        self.index = index
        self.conn = conn
        self.dev = dev
        self.owner = instance_id(fresh=True)
        """This process's owner id on its session rows (not the supervisor's: see module doc)."""
        self.store: ConfigStore | None = None
        self.services: WorkerServices | None = None
        self.agent_server: AgentServer | None = None
        self.state = "connecting"
        self.detail: str | None = "worker starting"
        self.load = 0.0
        self._stop = asyncio.Event()
        self._store_started = False
        self._send_lock = threading.Lock()

    # ---------------------------------------------------------------- reporting

    def report(self, state: str | None = None, detail: str | None = None) -> None:
        """Send the supervisor this process's state (and sessions, load); never raises."""
        if state is not None:
            self.state, self.detail = state, detail
        msg = {"state": self.state, "detail": self.detail, "sessions": len(active_sessions),
               "load": round(self.load, 3), "pid": os.getpid(), "owner": self.owner, "cpus": self.cpus}
        self._send(msg)

    def _send(self, msg: dict[str, Any]) -> None:
        with self._send_lock, contextlib.suppress(OSError, ValueError):  # the supervisor is gone: the lifeline says so
            self.conn.send(msg)

    def _journal_committed(self) -> None:
        """A session write here committed journal events: the supervisor wakes the webhook
        dispatcher at once (it would otherwise see them at its next poll)."""
        self._send({"journal": True})

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("worker process %d: shutdown requested, draining", self.index)
            self._stop.set()

    # --------------------------------------------------------------------- run

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_reader(self.conn.fileno(), self._lifeline)
        self.report()
        await asyncio.to_thread(preimport_worker_stack)
        if self._stop.is_set():  # stopped while starting: no call can have reached it yet
            self.report("stopped", None)
            log.info("worker process %d stopped before it started", self.index)
            return 0
        self.store = open_store(self.settings.database_url)
        self.store.add_journal_listener(self._journal_committed)
        # One attempt before the config cache starts; a store that is down is retried
        # in the background (the cache and the session writers wait out outages).
        if not await self._try_store():
            log.warning("worker process %d: store unavailable at start; retrying every %gs",
                        self.index, STORE_RETRY_INTERVAL)
        store_task = asyncio.create_task(self._open_store(), name="store-open")
        from app.worker.services import WorkerServices, install_services

        services = self.services = WorkerServices(self.settings, self.store)
        await services.start()
        services.load_vad()  # once per process, shared by its calls
        install_services(services)
        freeze_startup_heap(self.settings)
        tasks = [
            store_task,
            asyncio.create_task(self.run_jobs(), name="livekit-worker"),
            asyncio.create_task(self._heartbeat(), name="session-heartbeat"),
            asyncio.create_task(self._report_periodically(), name="status-report"),
        ]
        await self._stop.wait()
        if self.agent_server is not None or len(active_sessions):
            await self.drain()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(Exception):  # bounded: fly's kill_timeout covers the whole drain
            async with asyncio.timeout(STORE_CLOSE_TIMEOUT):
                await services.aclose()
                await self.store.aclose()
        install_services(None)
        self.report("stopped", None)
        log.info("worker process %d stopped", self.index)
        return 0

    def _lifeline(self) -> None:
        """The supervisor closed its end of the pipe or died: drain and exit."""
        try:
            while self.conn.poll():
                self.conn.recv()  # the supervisor sends nothing today; read and ignore
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            log.warning("worker process %d: supervisor gone", self.index)
            self.request_stop()

    async def _try_store(self) -> bool:
        assert self.store is not None
        try:
            await self.store.start()
            self._store_started = True
        except StoreUnavailable as e:
            log.debug("worker process %d: store unavailable (%s)", self.index, e.message)
        return self._store_started

    async def _open_store(self) -> None:
        """Start the store, retrying while it is down (sessions meanwhile use the fallback
        agent and their writes wait in the session writers, as in any outage)."""
        while not self._store_started and not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), STORE_RETRY_INTERVAL)
            if not self._stop.is_set() and await self._try_store():
                log.info("worker process %d: store reachable", self.index)

    async def _heartbeat(self) -> None:
        """Stamp this process's active sessions alive; the supervisor's sweep abandons
        them once this stops (the process died)."""
        failing = False
        # Not `while True`: a heartbeat in flight may swallow the shutdown's cancel
        # (app.background), and the shutdown awaits this task.
        while not self._stop.is_set():
            await asyncio.sleep(self.settings.session_heartbeat_interval)
            assert self.store is not None
            try:
                await self.store.heartbeat(self.owner)
                if failing:
                    log.info("worker process %d: session heartbeats written again", self.index)
                failing = False
            except Exception as e:  # keep heartbeating whatever happens
                if not failing:
                    log.warning("worker process %d: session heartbeat failed (%s); retrying", self.index,
                                getattr(e, "message", None) or type(e).__name__)
                failing = True

    async def _report_periodically(self) -> None:
        while True:
            self.report()
            await asyncio.sleep(STATUS_INTERVAL)

    # ----------------------------------------------------------------- LiveKit

    def make_agent_server(self) -> AgentServer:
        from livekit.agents import AgentServer, JobExecutorType

        from app.worker.entrypoint import entrypoint, prewarm
        from app.worker.load import ThreadWorkerLoad

        s = self.settings
        thread = s.executor_type == ExecutorType.thread
        measure = ThreadWorkerLoad() if thread else None

        def load() -> float:
            assert measure is not None
            self.load = measure()
            return self.load

        server = AgentServer(
            job_executor_type=JobExecutorType.THREAD if thread else JobExecutorType.PROCESS,
            num_idle_processes=0 if thread else 1,
            port=0,
            ws_url=s.livekit_url,
            api_key=s.livekit_api_key.get_secret_value() if s.livekit_api_key else None,
            api_secret=s.livekit_api_secret.get_secret_value() if s.livekit_api_secret else None,
            max_retry=3,
            drain_timeout=int(s.drain_timeout),
            setup_fnc=prewarm,
            log_level=s.log_level,
            # THREAD: report this process's CPU too (one GIL), see app/worker/load.py.
            load_fnc=load if thread else None,
            # PROCESS: import the entrypoint's stack once in the forkserver, so job
            # processes share it copy-on-write instead of each importing it.
            preload_modules=["app.worker.entrypoint"],
        )
        server.rtc_session(entrypoint, agent_name=s.agent_name)
        return server

    async def run_jobs(self) -> None:
        """Register with LiveKit and serve its jobs; retry with capped backoff (LiveKit's
        own `run()` gives up after `max_retry` failed connections)."""
        backoff = 1.0
        while not self._stop.is_set():
            server = self.make_agent_server()
            self.agent_server = server

            def registered(*_: Any) -> None:
                nonlocal backoff
                backoff = 1.0
                self.report("registered", None)
                log.info("worker process %d registered with LiveKit as %r", self.index, self.settings.agent_name)

            server.on("worker_registered", registered)
            self.report("connecting", self.detail if self.state == "connecting" else None)
            try:
                await server.run(devmode=self.dev)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.report("connecting", f"cannot reach LiveKit: {str(e)[:160]}")
                log.warning("LiveKit worker stopped (%s); retrying in %.0fs", e, backoff)
            finally:
                if not self._stop.is_set():
                    with contextlib.suppress(Exception):
                        await server.aclose()
            if self._stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, WORKER_BACKOFF_MAX)

    async def drain(self) -> None:
        """Graceful drain (app/worker/drain.py): refuse new jobs, let live sessions end for
        up to DRAIN_TIMEOUT, say goodbye to the rest and record them `abandoned`, then
        close the LiveKit worker."""
        server = self.agent_server
        self.report("draining", "shutting down: finishing active sessions")
        try:
            await drain_worker(server, active_sessions, timeout=self.settings.drain_timeout)
        except Exception:
            log.exception("drain failed")
        if server is not None:
            try:
                await asyncio.wait_for(server.aclose(), WORKER_CLOSE_TIMEOUT)
            except TimeoutError:
                log.error("LiveKit worker did not close within %gs", WORKER_CLOSE_TIMEOUT)
            except Exception:
                log.exception("LiveKit worker close failed")
