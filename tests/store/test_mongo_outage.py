"""MongoDB outages, against a real SecantusDB that the test stops and restarts.

- store down at start: `start()` fails fast with `StoreUnavailable`, and works once the
  server is up (what the supervisor's reconnect loop relies on);
- outage while running: calls fail fast with `StoreUnavailable` and work again after
  the server restarts on the same port;
- a session during an outage: `SessionManager` buffers the turns and flushes them when
  the server is back; nothing is dropped;
- the server comes back empty: indexes (the uniqueness guarantees) are re-created
  before the next write;
- a store poller closed mid-operation stops within a bound, even when the driver
  swallows its cancellation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.background import STOP_GRACE
from app.domain import AlreadyExists, SessionRecord, SessionStatus, StoreUnavailable, Turn
from app.store import ConfigStore, open_store
from app.store.cache import ConfigCache
from app.worker.sessions import SessionManager
from sim.db_servers import MongoServer

# serverSelectionTimeoutMS is 2 s; allow for a slow machine.
DETECT_WITHIN_S = 4.0


@pytest.fixture
def mongo(tmp_path: Path) -> Iterator[MongoServer]:
    """A server of this test's own (not started), keeping its data on disk across restarts."""
    server = MongoServer(storage_path=tmp_path / "data")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def store(mongo: MongoServer) -> AsyncIterator[ConfigStore]:
    await mongo.astart()
    s = open_store(mongo.url("outage"))
    await s.start()
    try:
        yield s
    finally:
        await s.aclose()


async def _fails_fast(coro) -> float:
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await coro
    took = time.monotonic() - t0
    assert took < DETECT_WITHIN_S, f"outage took {took:.1f}s to detect"
    return took


async def test_store_down_at_start_fails_fast_then_starts(mongo: MongoServer, make_agent) -> None:
    s = open_store(mongo.url("late"))
    try:
        await _fails_fast(s.start())
        await _fails_fast(s.ping())  # not started: a clean StoreUnavailable, not a crash
        await mongo.astart()
        await s.start()
        await s.ping()
        assert (await s.create_agent_config(make_agent("agent-a"))).version == 1
    finally:
        await s.aclose()


async def test_outage_is_detected_fast_and_the_store_recovers(mongo: MongoServer, store, make_agent) -> None:
    created = await store.create_agent_config(make_agent("agent-a"))
    epoch = await store.config_epoch()
    await mongo.astop()

    took = await _fails_fast(store.ping())
    print(f"\noutage detected by ping in {took * 1000:.0f} ms")
    await _fails_fast(store.config_epoch())
    await _fails_fast(store.get_agent_config("agent-a"))
    await _fails_fast(store.update_agent_config("agent-a", {"name": "during outage"}))

    await mongo.astart()  # same port, same data directory
    await store.ping()
    assert await store.get_agent_config("agent-a") == created
    assert await store.config_epoch() == epoch  # the failed update wrote nothing
    assert (await store.update_agent_config("agent-a", {"name": "after"})).version == 2


async def test_turns_written_during_an_outage_land_after_reconnect(mongo: MongoServer, store) -> None:
    record = SessionRecord(session_id="s-outage", room="room-1", agent_id="agent-a", config_version=1)
    mgr = SessionManager(store, record, retry_max_delay=0.5, flush_timeout=30)
    await mgr.start()
    mgr.add_turn("assistant", "Hello, how can I help?")
    mgr.add_turn("user", "Where is my order?")
    assert await mgr.flush(10)

    await mongo.astop()
    during = [mgr.add_turn("assistant" if i % 2 else "user", f"said during the outage {i}") for i in range(6)]
    mgr.record_data({"order_id": "A-17"})
    mgr.record_handoff("agent-a", "agent-b", "billing question")
    assert not await mgr.flush(3)  # still buffered: the server is down
    assert mgr.failed_writes > 0

    await mongo.astart()
    assert await mgr.flush(30), "buffered writes were not flushed after the server came back"
    await mgr.aclose(SessionStatus.completed, "done")
    assert mgr.dropped == []

    got = await store.get_session("s-outage")
    assert [t.seq for t in got.turns] == list(range(8))
    assert [t.text for t in got.turns[2:]] == [t.text for t in during]
    assert got.collected == {"order_id": "A-17"}
    assert [(h.from_agent, h.to_agent) for h in got.handoffs] == [("agent-a", "agent-b")]
    assert got.status == SessionStatus.completed


async def test_server_back_empty_gets_its_indexes_again(tmp_path: Path, make_agent) -> None:
    with MongoServer() as mongo:  # ':memory:': a restart loses everything
        s = open_store(mongo.url("amnesia"))
        await s.start()
        try:
            await s.create_agent_config(make_agent("agent-a"))
            await mongo.astop()
            await mongo.astart()
            # The driver may reconnect silently; the supervisor's periodic ping (or the
            # cache's epoch poll) notices the empty database and re-creates the indexes.
            for _ in range(2):
                try:
                    await s.ping()
                    break
                except StoreUnavailable:  # the pooled connection broke under the driver
                    pass
            assert await s.list_agent_configs() == ([], 0)
            await s.create_agent_config(make_agent("agent-a"))
            with pytest.raises(AlreadyExists):  # the unique index is back
                await s.create_agent_config(make_agent("agent-a"))
            await s.start_session(SessionRecord(session_id="s-1", room="r", agent_id="agent-a"))
            for _ in range(2):
                await s.append_turn("s-1", Turn(seq=0, role="user", text="once"))
            assert len((await s.get_session("s-1")).turns) == 1
            assert await s.config_epoch() >= 1
        finally:
            await s.aclose()


async def test_a_poller_closed_mid_operation_stops(store) -> None:
    """The config cache's poll loop, closed while a Mongo call is in flight. On Python 3.11
    pymongo can swallow that cancel (`asyncio.wait_for` around its socket writes returns
    the result instead), so a loop that went on and an `aclose` that awaited it forever
    hung `tests/reliability/test_store_outages.py::test_mongo_stops_mid_run` at teardown.
    Closing is bounded, and the loop ends by itself (see `app.background`)."""
    stuck: list[str] = []
    swallowed = 0
    for i in range(30):
        cache = ConfigCache(store, poll_interval=0)  # always mid-poll: the race is likely
        await cache.start()
        poll = cache._poll_task
        assert poll is not None
        await asyncio.sleep((i % 20) * 0.001)
        closer = asyncio.ensure_future(cache.aclose())
        done, _ = await asyncio.wait({closer}, timeout=STOP_GRACE + 3)
        if not done:
            stuck.append(f"close {i}: aclose() did not return")
        else:
            done, _ = await asyncio.wait({poll}, timeout=5)  # the loop itself stopped too
            if not done:
                stuck.append(f"close {i}: the poll loop kept polling")
        for t in (closer, poll):  # without the fix: get them out of the way (usually one more cancel)
            for _ in range(20):
                if t.done():
                    break
                t.cancel()
                await asyncio.wait({t}, timeout=0.5)
        swallowed += not poll.cancelled()  # it ended by itself: the driver ate the cancel
    print(f"\n{swallowed} of 30 closes had their cancellation swallowed by the driver")
    assert not stuck, stuck
