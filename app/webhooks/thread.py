"""The dispatcher of a `dev`/`start` process, on its own thread and event loop, with its
own store connection.

Why not the main loop: in this process that loop carries the admin API and every
session's store writes (THREAD-executor jobs hand them to it), and a burst of deliveries
(JSON, HMAC, HTTP for ten endpoints at once) would run between their callbacks for tens
of milliseconds at a time. On its own loop it only shares the interpreter, which
switches threads every few milliseconds. The main store still wakes it when this
process commits an event (`Dispatcher.wake` is thread-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from app.domain import StoreUnavailable
from app.settings import Settings
from app.store import ConfigStore, open_store
from app.webhooks.dispatcher import Dispatcher

log = logging.getLogger(__name__)

STORE_RETRY_S = 2.0
JOIN_TIMEOUT_S = 10.0


class DispatcherThread:
    def __init__(self, settings: Settings, wake_from: ConfigStore | None = None) -> None:
        self.settings = settings
        self._wake_from = wake_from
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.dispatcher: Dispatcher | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="webhook-dispatcher", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def _main(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._run())
        except Exception:
            log.exception("webhook dispatcher thread stopped")
        finally:
            self._started.set()  # `start` never waits on a thread that failed to set up
            loop.close()

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        store = open_store(self.settings.database_url)
        self.dispatcher = Dispatcher(self.settings, store)
        self._started.set()
        try:
            while not self._stop.is_set():
                try:
                    await store.start()
                    break
                except StoreUnavailable as e:
                    log.warning("webhooks: store unavailable (%s); retrying", e.message)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), STORE_RETRY_S)
            if self._stop.is_set():
                return
            self.dispatcher.start()
            if self._wake_from is not None:
                self._wake_from.add_journal_listener(self.dispatcher.wake)
            await self._stop.wait()
        finally:
            await self.dispatcher.aclose()
            await store.aclose()

    async def aclose(self) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended by itself meanwhile
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            await asyncio.to_thread(thread.join, JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.error("webhook dispatcher thread did not stop within %gs", JOIN_TIMEOUT_S)
