"""The dispatcher as `dev`/`start` run it: a child process with its own store
connection, woken through a pipe by this process's commits, stopping when the pipe
closes (shutdown, or the parent's death), restarted when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from app.domain import SessionRecord
from app.store import open_store
from app.webhooks.process import DispatcherProcess
from sim.webhook_receiver import WebhookReceiver
from tests.webhooks.conftest import fast_settings, subscribe, verify


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
        return f.read().split()[2] != "Z"


async def test_delivers_from_its_own_process_woken_by_this_process_commits(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/hooks.db"
    store = open_store(url)
    await store.start()
    # A poll far longer than the test: only the wake-up through the pipe can deliver in time.
    child = DispatcherProcess(fast_settings(database_url=url, webhook_poll_interval=60), wake_from=store)
    try:
        async with WebhookReceiver() as rx:
            hook = await subscribe(store, rx.url, ["session.started"])
            child.start()
            assert child.pid is not None and child.pid != os.getpid()
            await asyncio.sleep(3)  # started and through its first round; now in its 60 s poll
            t0 = time.monotonic()
            await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
            (got,) = await rx.wait_for(1, timeout=5)
            assert time.monotonic() - t0 < 3
            verify(hook.secret, got)
            assert got.json["data"]["session_id"] == "s-1"
    finally:
        await child.aclose()
        await store.aclose()
    assert child.pid is not None and not alive(child.pid)


async def test_a_dead_dispatcher_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/hooks.db"
    store = open_store(url)
    await store.start()
    child = DispatcherProcess(fast_settings(database_url=url, webhook_poll_interval=0.2), wake_from=store)
    try:
        async with WebhookReceiver() as rx:
            await subscribe(store, rx.url, ["session.started"])
            child.start()
            first = child.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            for i in range(3):
                await store.start_session(SessionRecord(session_id=f"s-{i}", room="r", agent_id="a"))
            got = await rx.wait_for(3, timeout=20)
            assert {r.json["data"]["session_id"] for r in got} == {"s-0", "s-1", "s-2"}
            assert child.restarts >= 1 and child.pid != first
    finally:
        await child.aclose()
        await store.aclose()


async def test_it_stops_when_its_parent_goes_away(tmp_path: Path) -> None:
    """The pipe closing is all the child needs: what `kill -9` of the parent does."""
    child = DispatcherProcess(fast_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/hooks.db"))
    child.start()
    pid = child.pid
    assert pid is not None
    await asyncio.sleep(1)
    assert child._watch is not None
    child._watch.cancel()  # as if this process were gone: nobody restarts it
    assert child._wake_w is not None
    child._wake_w.close()
    child._wake_w = None
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not alive(pid)
    child._stopping = True
    await child.aclose()


async def test_a_store_that_cannot_open_neither_blocks_start_nor_stop(tmp_path: Path) -> None:
    missing = tmp_path / "not-a-dir" / "file"
    missing.parent.write_text("a file where the database directory should be")
    child = DispatcherProcess(fast_settings(database_url=f"sqlite+aiosqlite:///{missing}/hooks.db"))
    t0 = time.monotonic()
    child.start()
    await asyncio.sleep(0.5)
    await child.aclose()
    assert time.monotonic() - t0 < 8
    assert child.pid is not None and not alive(child.pid)
