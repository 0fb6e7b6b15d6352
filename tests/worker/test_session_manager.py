"""SessionManager: writes are queued in order, survive an outage by retrying, and
anything that could not be stored is reported, never silently dropped."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.domain import SessionRecord, SessionStatus, StoreUnavailable
from app.store.base import AppendTurn
from app.store.sql import SQLStore
from app.worker.sessions import SessionManager


class FlakyStore(SQLStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.down = False
        self.calls = 0

    async def append_turn(self, session_id, turn):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.down:
            raise StoreUnavailable("simulated outage")
        await super().append_turn(session_id, turn)

    async def apply_session_writes(self, session_id, ops):  # type: ignore[no-untyped-def]
        """The session writer's path: an outage fails any batch carrying a turn."""
        if any(isinstance(op, AppendTurn) for op in ops):
            self.calls += 1
            if self.down:
                raise StoreUnavailable("simulated outage")
        await super().apply_session_writes(session_id, ops)


@pytest.fixture
async def store(tmp_path):
    s = FlakyStore(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    await s.start()
    yield s
    await s.aclose()


def record(sid: str = "sess-1") -> SessionRecord:
    return SessionRecord(session_id=sid, room="room-1", agent_id="support-agent-v1", config_version=3)


async def test_turns_data_and_finish_are_stored_in_order(store: FlakyStore) -> None:
    m = SessionManager(store, record())
    await m.start()
    m.add_turn("user", "hello")
    m.add_turn("assistant", "hi, how can I help?")
    m.record_data({"caller_name": "Ada"})
    m.record_data({"scores": {"t1": 1}})
    m.record_data({"scores": {"t2": 2}})
    m.record_handoff("support-agent-v1", "sales-agent-v1", "wants a quote")
    m.finish(SessionStatus.completed, "caller said goodbye")
    await m.aclose()
    rec = await store.get_session("sess-1")
    assert [(t.seq, t.role, t.text) for t in rec.turns] == [
        (0, "user", "hello"), (1, "assistant", "hi, how can I help?")
    ]
    assert rec.collected == {"caller_name": "Ada", "scores": {"t1": 1, "t2": 2}}
    assert m.collected == rec.collected
    assert [(h.from_agent, h.to_agent) for h in rec.handoffs] == [("support-agent-v1", "sales-agent-v1")]
    assert rec.status == SessionStatus.completed and rec.end_reason == "caller said goodbye"
    assert rec.config_version == 3
    assert m.dropped == []


async def test_add_turn_does_not_wait_for_the_store(store: FlakyStore) -> None:
    store.down = True
    m = SessionManager(store, record(), flush_timeout=5)
    await m.start()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(50):
        m.add_turn("user", f"turn {i}")
    assert loop.time() - t0 < 0.05  # enqueue only
    await asyncio.sleep(0.3)
    assert store.calls >= 2  # it is retrying
    store.down = False  # the store comes back: everything lands, in order
    assert await m.flush(5)
    rec = await store.get_session("sess-1")
    assert [t.text for t in rec.turns] == [f"turn {i}" for i in range(50)]
    assert m.failed_writes >= 1
    await m.aclose()


async def test_unwritable_records_are_logged_not_silently_lost(store: FlakyStore, caplog) -> None:
    m = SessionManager(store, record(), flush_timeout=0.3)
    await m.start()
    await m.flush(5)
    store.down = True
    m.add_turn("user", "lost in the outage")
    with caplog.at_level(logging.ERROR, logger="app.worker.sessions"):
        await m.aclose()
    assert "append_turn" in m.dropped
    assert any("sess-1" in r.getMessage() and "could not be stored" in r.getMessage() for r in caplog.records)


async def test_close_event_marks_failed_on_error(store: FlakyStore) -> None:
    class Ev:
        error = RuntimeError("llm exploded")
        reason = type("R", (), {"value": "error"})()

    m = SessionManager(store, record())
    await m.start()
    m._on_close(Ev())
    await m.aclose()
    rec = await store.get_session("sess-1")
    assert rec.status == SessionStatus.failed
    assert rec.error and "llm exploded" in rec.error


async def test_bounded_queue_reports_overflow(store: FlakyStore, caplog) -> None:
    store.down = True
    m = SessionManager(store, record(), max_queue=5, flush_timeout=0.2)
    await m.start()
    with caplog.at_level(logging.ERROR, logger="app.worker.sessions"):
        for i in range(20):
            m.add_turn("user", f"t{i}")
    assert m.dropped.count("append_turn") >= 14
    assert any("queue full" in r.getMessage() for r in caplog.records)
    await m.aclose()


async def test_job_shutdown_under_a_live_call_is_abandoned(store: FlakyStore) -> None:
    class Ev:
        error = None
        reason = type("R", (), {"value": "job_shutdown"})()

    m = SessionManager(store, record())
    await m.start()
    m._on_close(Ev())
    await m.aclose()
    rec = await store.get_session("sess-1")
    assert rec.status == SessionStatus.abandoned
    assert rec.end_reason == "server shutting down"
