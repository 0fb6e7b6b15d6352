"""The webhook dispatcher of a `dev`/`start` process, in a child process of its own.

Why a process: deliveries are CPU work (rendering, JSON, HMAC, TLS, HTTP) and a thread
of this process would share its interpreter lock with every live call; under a burst of
deliveries the calls' turns got slower. A child process shares nothing but the store.

The parent wakes it through a pipe when it commits an event (one byte, non-blocking; a
full pipe already means "wake up"), and the same pipe is its lifeline: when the parent
closes it (shutdown, after the drain) or dies (`kill -9` closes it too) the child stops,
so no dispatcher outlives its service. The child ignores SIGINT (a Ctrl-C in a terminal
reaches the whole process group; the parent's drain still commits session ends) and
stops on SIGTERM. If it dies, the parent starts another one with backoff; deliveries in
flight are retried after their leases expire, with the same `webhook-id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from app.domain import StoreUnavailable
from app.settings import Settings
from app.store import ConfigStore, open_store
from app.webhooks.dispatcher import Dispatcher

log = logging.getLogger(__name__)

STORE_RETRY_S = 2.0
STOP_TIMEOUT_S = 10.0
"""How long the child may take to finish its running attempts and close its store."""
RESTART_MAX_S = 30.0


class DispatcherProcess:
    def __init__(self, settings: Settings, wake_from: ConfigStore | None = None) -> None:
        self.settings = settings
        self._wake_from = wake_from
        self._proc: BaseProcess | None = None
        self._wake_w: Connection | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        self._spawn()
        if self._wake_from is not None:
            self._wake_from.add_journal_listener(self.wake)
        self._watch = asyncio.create_task(self._supervise(), name="webhook-dispatcher-watch")

    def _spawn(self) -> None:
        from app.logging_setup import json_logs_configured

        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no copy of this one's threads
        # A one-way pipe whose read end alone goes to the child (spawn passes only what it is given).
        r, w = ctx.Pipe(duplex=False)
        os.set_blocking(w.fileno(), False)
        proc = ctx.Process(
            target=_child_main, args=(self.settings, r, json_logs_configured()),
            name="webhook-dispatcher", daemon=False,
        )
        proc.start()
        r.close()
        old, self._wake_w, self._proc = self._wake_w, w, proc
        if old is not None:
            old.close()
        log.info("webhook dispatcher started (pid %s)", proc.pid)

    def wake(self) -> None:
        """Tell the child an event was committed (any thread; never blocks)."""
        w = self._wake_w
        if w is not None:
            with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending anyway
                os.write(w.fileno(), b"!")

    async def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping:
            await asyncio.sleep(0.5)
            proc = self._proc
            if proc is None or proc.is_alive() or self._stopping:
                continue
            log.error("webhook dispatcher (pid %s) exited with %s; restarting in %gs", proc.pid, proc.exitcode, delay)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            delay = min(delay * 2, RESTART_MAX_S)
            self.restarts += 1
            self._spawn()

    async def aclose(self) -> None:
        """Stop the child: it finishes running attempts (briefly) and exits; then it is killed."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        w, self._wake_w = self._wake_w, None
        if w is not None:
            w.close()  # EOF: the child's cue to stop
        proc = self._proc
        if proc is None:
            return
        await asyncio.to_thread(proc.join, STOP_TIMEOUT_S)
        if proc.is_alive():
            log.error("webhook dispatcher (pid %s) did not stop within %gs: killed", proc.pid, STOP_TIMEOUT_S)
            proc.kill()
            await asyncio.to_thread(proc.join, 2.0)


def _child_main(settings: Settings, wake: Connection, json_logs: bool) -> None:
    from app.logging_setup import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings, json_logs=json_logs)
    asyncio.run(_serve(settings, wake.fileno()))


async def _serve(settings: Settings, wake_r: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    dispatcher: Dispatcher | None = None

    def readable() -> None:
        try:
            data = os.read(wake_r, 4096)
        except BlockingIOError:
            return
        if not data:  # the parent closed its end or died
            loop.remove_reader(wake_r)
            stop.set()
        elif dispatcher is not None:
            dispatcher.wake()

    os.set_blocking(wake_r, False)
    loop.add_reader(wake_r, readable)
    store = open_store(settings.database_url)
    try:
        while not stop.is_set():
            try:
                await store.start()
                break
            except StoreUnavailable as e:
                log.warning("webhooks: store unavailable (%s); retrying", e.message)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STORE_RETRY_S):
                        await stop.wait()
        if stop.is_set():
            return
        dispatcher = Dispatcher(settings, store)
        dispatcher.start()
        await stop.wait()
    finally:
        if dispatcher is not None:
            await dispatcher.aclose()
        with contextlib.suppress(Exception):
            await store.aclose()
