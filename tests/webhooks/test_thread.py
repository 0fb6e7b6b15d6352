"""The dispatcher as `dev`/`start` run it: on a thread and event loop of its own, with
its own store connection, woken by the main store's commits."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from app.domain import SessionRecord
from app.store import open_store
from app.webhooks.thread import DispatcherThread
from sim.webhook_receiver import WebhookReceiver
from tests.webhooks.conftest import fast_settings, subscribe, verify


async def test_delivers_from_its_own_thread_woken_by_this_process_commits(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/hooks.db"
    store = open_store(url)
    await store.start()
    # A poll far longer than the test: only the wake-up from the main store's commit can deliver in time.
    thread = DispatcherThread(fast_settings(database_url=url, webhook_poll_interval=60), wake_from=store)
    try:
        async with WebhookReceiver() as rx:
            hook = await subscribe(store, rx.url, ["session.started"])
            thread.start()
            assert thread.dispatcher is not None
            await asyncio.sleep(0.3)  # its first round ran; it now sleeps its 60 s poll
            t0 = time.monotonic()
            await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
            (got,) = await rx.wait_for(1, timeout=5)
            assert time.monotonic() - t0 < 3
            verify(hook.secret, got)
            assert got.json["data"]["session_id"] == "s-1"
            assert thread.dispatcher.store is not store  # a connection of its own
            assert thread.dispatcher._loop is not asyncio.get_running_loop()
    finally:
        await thread.aclose()
        await store.aclose()
    assert not any(t.name == "webhook-dispatcher" and t.is_alive() for t in threading.enumerate())
    thread.dispatcher.wake()  # a commit after the stop: its loop is closed, the wake-up is a no-op


async def test_a_store_that_cannot_open_neither_blocks_start_nor_stop(tmp_path: Path) -> None:
    missing = tmp_path / "not-a-dir" / "file"
    missing.parent.write_text("a file where the database directory should be")
    thread = DispatcherThread(fast_settings(database_url=f"sqlite+aiosqlite:///{missing}/hooks.db"))
    t0 = time.monotonic()
    thread.start()
    await asyncio.sleep(0.3)
    await thread.aclose()
    assert time.monotonic() - t0 < 5
    assert not any(t.name == "webhook-dispatcher" and t.is_alive() for t in threading.enumerate())
