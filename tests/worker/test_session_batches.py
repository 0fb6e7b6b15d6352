"""The session writer applies what is queued as one batch (one transaction), keeps the
order through outages, isolates an op that fails for a reason other than an outage,
and hands what it could not write to `PendingWrites`, which writes it later."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from app.domain import SessionRecord, SessionStatus, StoreUnavailable, Turn
from app.store.base import AppendTurn, SessionWrite, UpdateSession
from app.worker.sessions import PendingWrites, SessionManager, instance_id
from tests.worker.recording_store import RecordingStore, recording_store


@pytest.fixture
async def store(tmp_path: Any) -> Any:
    async with recording_store(tmp_path) as s:
        yield s


def record(sid: str = "sess-1") -> SessionRecord:
    return SessionRecord(session_id=sid, room="room-1", agent_id="support-agent-v1", config_version=3)


async def test_what_is_queued_together_is_written_as_one_batch(store: RecordingStore) -> None:
    m = SessionManager(store, record())
    await m.start()  # the writer task has not run yet: everything below queues up
    for i in range(10):
        m.add_turn("user" if i % 2 else "assistant", f"t{i}")
    m.record_data({"caller_name": "Ada"})
    assert await m.flush(5)
    assert store.batches == [["start_session", *["append_turn"] * 10, "record_data"]]
    m.add_turn("user", "later")
    assert await m.flush(5)
    assert store.batches[1:] == [["append_turn"]]
    await m.aclose()
    rec = await store.get_session("sess-1")
    assert [t.text for t in rec.turns] == [*(f"t{i}" for i in range(10)), "later"]
    assert rec.status == SessionStatus.completed and rec.collected == {"caller_name": "Ada"}


async def test_the_record_names_this_process_as_owner(store: RecordingStore) -> None:
    m = SessionManager(store, record())
    await m.start()
    await m.flush(5)
    rec = await store.get_session("sess-1")
    assert rec.owner == instance_id() and rec.heartbeat_at is not None
    assert await store.heartbeat(instance_id()) == 1
    await m.aclose()


async def test_an_outage_retries_the_batch_whole_and_in_order(store: RecordingStore) -> None:
    m = SessionManager(store, record(), retry_max_delay=0.05)
    await m.start()
    await m.flush(5)
    down = True
    store.fail = lambda ops: down
    for i in range(5):
        m.add_turn("user", f"t{i}")
    await asyncio.sleep(0.2)
    for i in range(5, 8):  # queued during the outage: joins the retried batch, behind it
        m.add_turn("user", f"t{i}")
    await asyncio.sleep(0.2)
    down = False
    assert await m.flush(5)
    rec = await store.get_session("sess-1")
    assert [t.text for t in rec.turns] == [f"t{i}" for i in range(8)]
    assert m.failed_writes >= 2 and m.dropped == []
    await m.aclose()


async def test_a_bad_op_is_isolated_and_logged_the_rest_is_written(store: RecordingStore, caplog) -> None:
    m = SessionManager(store, record())
    await m.start()
    m.add_turn("user", "before")
    m._enqueue(UpdateSession({"status": "hacked"}))  # not an updatable field: InvalidInput
    m.add_turn("assistant", "after")
    with caplog.at_level(logging.ERROR, logger="app.worker.sessions"):
        assert await m.flush(5)
    rec = await store.get_session("sess-1")
    assert [t.text for t in rec.turns] == ["before", "after"]
    assert m.dropped == ["update_session"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("update_session failed permanently" in msg for msg in messages)
    assert any("update_session not stored" in msg and "hacked" in msg for msg in messages)  # the payload
    # the batch was tried once, then op by op
    assert store.batches[0] == ["start_session", "append_turn", "update_session", "append_turn"]
    assert len(store.batches) == 5
    await m.aclose()


async def test_metrics_snapshots_in_one_batch_write_only_the_last(store: RecordingStore) -> None:
    m = SessionManager(store, record())
    await m.start()
    for i in range(3):
        m.record.metrics.append({"seq": i})
        m._enqueue(UpdateSession({"metrics": list(m.record.metrics)}))
    assert await m.flush(5)
    assert len(store.batches) == 1
    assert (await store.get_session("sess-1")).metrics == [{"seq": 0}, {"seq": 1}, {"seq": 2}]
    await m.aclose()


async def test_unwritten_writes_are_spilled_and_flushed_later(store: RecordingStore) -> None:
    pending = PendingWrites(retry_max_delay=0.05)
    pending.start()
    down = True
    store.fail = lambda ops: down
    m = SessionManager(store, record(), flush_timeout=0.2, retry_max_delay=0.05, spill=pending.adopt)
    await m.start()
    m.add_turn("user", "hello")
    m.record_data({"caller_name": "Ada"})
    await m.aclose()
    assert m.spilled == 4 and m.dropped == []  # start, turn, data, finish
    assert len(pending) == 4
    await asyncio.sleep(0.2)
    assert len(pending) == 4  # still down: kept, in order
    down = False
    assert await pending.flush(5)
    assert pending.written == 4 and pending.lost == 0
    rec = await store.get_session("sess-1")
    assert [t.text for t in rec.turns] == ["hello"]
    assert rec.collected == {"caller_name": "Ada"} and rec.status == SessionStatus.completed
    assert store.batches[-1] == ["start_session", "append_turn", "record_data", "finish_session"]
    await pending.aclose()


async def test_pending_writes_log_a_bad_op_and_write_the_rest(store: RecordingStore, caplog) -> None:
    await store.start_session(record())
    pending = PendingWrites()
    pending.start()
    ops: list[SessionWrite] = [
        AppendTurn(Turn(seq=0, role="user", text="a")),
        UpdateSession({"status": "bad"}),
        AppendTurn(Turn(seq=1, role="user", text="b")),
    ]
    with caplog.at_level(logging.ERROR, logger="app.worker.sessions"):
        pending.adopt("sess-1", ops, store)
        assert await pending.flush(5)
    assert pending.written == 2 and pending.lost == 1
    assert [t.text for t in (await store.get_session("sess-1")).turns] == ["a", "b"]
    assert any("buffered update_session failed permanently" in r.getMessage() for r in caplog.records)
    await pending.aclose()


def test_instance_id_is_made_once_and_the_supervisor_makes_a_fresh_one(monkeypatch) -> None:
    monkeypatch.delenv("APP_INSTANCE_ID", raising=False)
    first = instance_id()
    assert first == instance_id()  # job processes read the same one from the environment
    fresh = instance_id(fresh=True)
    assert fresh != first and instance_id() == fresh


async def test_close_does_not_hang_on_a_store_call_that_swallows_the_cancel(store: RecordingStore) -> None:
    """A driver may catch the writer's cancellation mid-operation and report an outage
    instead (pymongo does, in places): close must still return, with the batch handed on."""

    class Swallowing(RecordingStore):
        async def apply_session_writes(self, session_id: str, ops: list[SessionWrite]) -> None:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass
            raise StoreUnavailable("simulated outage")

    pending = PendingWrites()
    sw = Swallowing(store.url)
    await sw.start()
    try:
        m = SessionManager(sw, record(), flush_timeout=0.2, retry_max_delay=0.01, spill=pending.adopt)
        await m.start()
        m.add_turn("user", "hello")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await m.aclose()
        assert loop.time() - t0 < 1.5
        assert m.spilled == 3 and len(pending) == 3  # start, turn, finish
    finally:
        await sw.aclose()
