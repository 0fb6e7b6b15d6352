"""The supervisor's side of the worker processes (app/worker/process.py): start
`WORKER_PROCESSES` of them, follow their reports, restart one that dies with capped
backoff, and stop them all with a drain on shutdown.

Spawned, not forked: a fresh interpreter copies none of the supervisor's threads or
open sockets, and the API process's heap is not shared with the calls anyway. A worker
that dies is replaced after 1 s, then 2, 4, ... up to `RESTART_MAX_S` if it keeps
dying soon after starting; one that ran for `STABLE_AFTER_S` starts over at 1 s. Its
calls are gone with it: their records are finished `abandoned` by the supervisor's
stale-session sweep once the dead process's heartbeats stop (committed turns stay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from app.observability import metrics
from app.settings import Settings
from app.worker.drain import ABANDON_BUDGET, STORE_CLOSE_TIMEOUT, WORKER_CLOSE_TIMEOUT
from app.worker.process import worker_process_main

log = logging.getLogger(__name__)

RESTART_MIN_S = 1.0
RESTART_MAX_S = 30.0
STABLE_AFTER_S = 60.0
"""A worker that lived this long before dying restarts after RESTART_MIN_S again."""
KILL_WAIT_S = 5.0
WATCH_INTERVAL = 0.2

Target = Callable[[Settings, int, Connection, bool, bool], None]


def worker_exit_budget(drain_timeout: float) -> float:
    """How long a worker process may take from SIGTERM to exit: its drain, its sessions'
    goodbyes, closing its LiveKit worker, then its store."""
    return drain_timeout + ABANDON_BUDGET + WORKER_CLOSE_TIMEOUT + STORE_CLOSE_TIMEOUT


@dataclass
class WorkerInfo:
    """What the supervisor knows about one worker process (shown on `/readyz`)."""

    index: int
    pid: int | None = None
    state: str = "starting"
    """starting (spawned, not reported yet), connecting, registered, draining, stopped, or
    restarting (dead, a new one is due)."""
    detail: str | None = None
    sessions: int = 0
    load: float = 0.0
    restarts: int = 0
    owner: str | None = None
    cpus: list[int] | None = None


class _Worker:
    def __init__(self, index: int) -> None:
        self.info = WorkerInfo(index)
        self.proc: BaseProcess | None = None
        self.conn: Connection | None = None
        self.started = 0.0
        self.backoff = RESTART_MIN_S
        self.restart_at: float | None = None


class WorkerPool:
    def __init__(
        self, settings: Settings, *, count: int, dev: bool = False, json_logs: bool = False,
        on_change: Callable[[], None] | None = None, on_journal: Callable[[], None] | None = None,
        target: Target = worker_process_main,
    ) -> None:
        """`on_change`: a worker reported or died; `on_journal`: a worker committed journal
        events (wake the webhook dispatcher); `target`: what each process runs
        (`worker_process_main`; tests give their own job source, tests/worker/pool_child.py)."""
        self.settings = settings
        self.dev = dev
        self.json_logs = json_logs
        self.on_change = on_change
        self.on_journal = on_journal
        self.target = target
        self._workers = [_Worker(i) for i in range(count)]
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def workers(self) -> list[WorkerInfo]:
        return [w.info for w in self._workers]

    def pids(self) -> list[int | None]:
        return [w.proc.pid if w.proc is not None and w.proc.is_alive() else None for w in self._workers]

    def start(self) -> None:
        for w in self._workers:
            self._spawn(w)
        self._watch = asyncio.create_task(self._supervise(), name="worker-processes-watch")

    def _spawn(self, w: _Worker) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=self.target, args=(self.settings, w.info.index, child, self.json_logs, self.dev),
            name=f"livekit-worker-{w.info.index}", daemon=False,
        )
        proc.start()
        child.close()
        w.proc, w.conn, w.started, w.restart_at = proc, parent, time.monotonic(), None
        w.info.pid, w.info.sessions, w.info.load = proc.pid, 0, 0.0
        w.info.state, w.info.detail = "starting", None
        asyncio.get_running_loop().add_reader(parent.fileno(), self._readable, w, parent)
        log.info("worker process %d started (pid %s)", w.info.index, proc.pid)
        self._changed()

    def _readable(self, w: _Worker, conn: Connection) -> None:
        try:
            while conn.poll():
                self._apply(w, conn.recv())
        except (EOFError, OSError):  # the process exited (or was killed): the watch handles it
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(conn.fileno())
        self._changed()

    def _apply(self, w: _Worker, msg: dict[str, Any]) -> None:
        if msg.get("journal"):
            if self.on_journal is not None:
                self.on_journal()
            return
        info = w.info
        if info.state != msg.get("state") and msg.get("state") == "registered":
            w.backoff = RESTART_MIN_S
        info.state = str(msg.get("state", info.state))
        info.detail = msg.get("detail")
        info.sessions = int(msg.get("sessions", 0))
        info.load = float(msg.get("load", 0.0))
        info.owner = msg.get("owner") or info.owner
        info.cpus = msg.get("cpus")

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # a status callback must not stop supervision
                log.exception("worker status callback failed")

    async def _supervise(self) -> None:
        while not self._stopping:
            await asyncio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            for w in self._workers:
                if self._stopping:
                    return
                if w.proc is None:
                    continue
                if w.restart_at is None and not w.proc.is_alive():
                    self._died(w, now)
                elif w.restart_at is not None and now >= w.restart_at:
                    w.info.restarts += 1
                    self._spawn(w)

    def _died(self, w: _Worker, now: float) -> None:
        assert w.proc is not None
        if now - w.started >= STABLE_AFTER_S:
            w.backoff = RESTART_MIN_S
        code = w.proc.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        log.error("worker process %d (pid %s) %s with %d live session(s); restarting in %gs",
                  w.info.index, w.proc.pid, how, w.info.sessions, w.backoff)
        self._close_conn(w)
        if w.proc.pid is not None:
            metrics.process_gone(w.proc.pid)
        w.restart_at = now + w.backoff
        w.info.state, w.info.detail = "restarting", f"pid {w.proc.pid} {how}; restarting"
        w.info.pid, w.info.sessions, w.info.load = None, 0, 0.0
        w.backoff = min(w.backoff * 2, RESTART_MAX_S)
        self._changed()

    def _close_conn(self, w: _Worker) -> None:
        conn, w.conn = w.conn, None
        if conn is not None:
            self._readable(w, conn)  # its last reports (journal wake-ups) still in the pipe
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            conn.close()

    async def drain(self) -> None:
        """SIGTERM every worker process (each drains its calls within DRAIN_TIMEOUT, says
        goodbye to the rest and closes) and wait for them, in parallel, up to
        `worker_exit_budget`; a process still running then is killed."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        live = [w for w in self._workers if w.proc is not None and w.proc.is_alive()]
        for w in live:
            assert w.proc is not None and w.proc.pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.proc.pid, signal.SIGTERM)
        budget = worker_exit_budget(self.settings.drain_timeout)
        await asyncio.gather(*(self._wait_exit(w, budget) for w in live))
        for w in self._workers:
            self._close_conn(w)
            if w.proc is not None and w.proc.pid is not None:
                metrics.process_gone(w.proc.pid)
            w.info.state, w.info.detail, w.info.pid = "stopped", None, None
        self._changed()

    async def _wait_exit(self, w: _Worker, budget: float) -> None:
        proc = w.proc
        assert proc is not None
        await asyncio.to_thread(proc.join, budget)
        if proc.is_alive():
            log.error("worker process %d (pid %s) did not stop within %gs: killed", w.info.index, proc.pid, budget)
            proc.kill()
            await asyncio.to_thread(proc.join, KILL_WAIT_S)
        elif proc.exitcode:
            log.warning("worker process %d (pid %s) exited with code %s", w.info.index, proc.pid, proc.exitcode)
