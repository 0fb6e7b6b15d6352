"""The event journal in the `ConfigStore` contract, on every backend (sqlite, mongo,
postgres): which events each change commits, with who and why; that a failed change
leaves none and a committed one always has its own (also under racing writers, and when
the event write itself fails); the audit filters; and the fan-out bookkeeping the
webhook dispatcher relies on (freeze once, mark fanned out).

Crash windows between a MongoDB commit and its relay are in `test_mongo_crash_windows.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.domain import (
    AlreadyExists,
    Handoff,
    InUse,
    InvalidReference,
    NotFound,
    Route,
    SessionRecord,
    SessionStatus,
    StoreUnavailable,
    Turn,
    VersionConflict,
)
from app.domain.events import EVENT_ID_RE, EVENT_TYPES, ChangeContext, EventKind, change_types
from app.store import ConfigStore
from app.store.base import AppendTurn, FinishSession, RecordHandoff, StartSession
from tests.store.conftest import BACKENDS
from tests.store.test_contract import now_ms

ADMIN = ChangeContext(actor="admin", note="because")


async def events_of(store, **kw: Any) -> list[tuple[str, dict[str, Any]]]:
    events, total = await store.list_events(limit=200, **kw)
    assert total == len(events)
    return [(e.type, e.data) for e in reversed(events)]  # oldest first


async def types_of(store, **kw: Any) -> list[str]:
    return [t for t, _ in await events_of(store, **kw)]


# ------------------------------------------------------------------ config changes


async def test_agent_changes_commit_their_events_with_actor_and_note(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"), ctx=ADMIN)
    await store.update_agent_config("agent-a", {"description": "two"}, ctx=ChangeContext(actor="alice"))
    await store.update_agent_config("agent-a", make_agent("agent-a", description="three"))
    await store.rollback("agent-a", 1, ctx=ChangeContext(actor="bob", note="v2 was wrong"))
    await store.delete_agent_config("agent-a", ctx=ADMIN)

    events, total = await store.list_events(limit=50)
    assert total == 6
    events.reverse()
    assert [(e.type, e.data.get("version"), e.data.get("change")) for e in events] == [
        ("agent.created", 1, None),
        ("agent.version_created", 1, "create"),
        ("agent.version_created", 2, "patch"),
        ("agent.version_created", 3, "replace"),
        ("agent.version_created", 4, "rollback"),
        ("agent.deleted", None, None),
    ]
    assert events[4].data["rolled_back_to"] == 1
    assert [(e.actor, e.note) for e in events] == [
        ("admin", "because"), ("admin", "because"), ("alice", None), (None, None), ("bob", "v2 was wrong"),
        ("admin", "because"),
    ]
    assert all(e.agent_id == "agent-a" for e in events)
    assert all(EVENT_ID_RE.match(e.id) for e in events)
    assert len({e.id for e in events}) == 6
    assert [e.at for e in events] == sorted(e.at for e in events)


async def test_route_changes_commit_the_new_table(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    await store.create_agent_config(make_agent("agent-b"))
    await store.put_route(Route(purpose="support", agent_id="agent-a", is_default=True), ctx=ADMIN)
    await store.replace_routes([Route(purpose="sales", agent_id="agent-b", phone_numbers=["+15550001111"]),
                                Route(purpose="support", agent_id="agent-a")], ctx=ADMIN)
    await store.delete_route("sales", ctx=ChangeContext(actor="carol"))

    got = await events_of(store, types=["routes.changed"])
    assert got == [
        ("routes.changed", {"change": "put", "purpose": "support",
                            "routes": [{"purpose": "support", "agent_id": "agent-a", "is_default": True,
                                        "phone_numbers": []}]}),
        ("routes.changed", {"change": "replace", "purpose": None,
                            "routes": [{"purpose": "sales", "agent_id": "agent-b", "is_default": False,
                                        "phone_numbers": ["+15550001111"]},
                                       {"purpose": "support", "agent_id": "agent-a", "is_default": False,
                                        "phone_numbers": []}]}),
        ("routes.changed", {"change": "delete", "purpose": "sales",
                            "routes": [{"purpose": "support", "agent_id": "agent-a", "is_default": False,
                                        "phone_numbers": []}]}),
    ]
    events, _ = await store.list_events(types=["routes.changed"], actor="carol")
    assert [e.data["change"] for e in events] == ["delete"]


async def test_failed_changes_leave_no_event(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    await store.create_agent_config(make_agent("agent-b"))
    await store.put_route(Route(purpose="support", agent_id="agent-a"))
    before = await types_of(store)

    with pytest.raises(AlreadyExists):
        await store.create_agent_config(make_agent("agent-a"), ctx=ADMIN)
    with pytest.raises(VersionConflict):
        await store.update_agent_config("agent-a", {"description": "x"}, expected_version=7, ctx=ADMIN)
    with pytest.raises(ValidationError):
        await store.update_agent_config("agent-a", {"name": ""}, ctx=ADMIN)
    with pytest.raises(NotFound):
        await store.update_agent_config("agent-x", {"name": "x"}, ctx=ADMIN)
    with pytest.raises(NotFound):
        await store.rollback("agent-a", 9, ctx=ADMIN)
    with pytest.raises(InUse):
        await store.delete_agent_config("agent-a", ctx=ADMIN)
    with pytest.raises(VersionConflict):
        await store.delete_agent_config("agent-b", expected_version=5, ctx=ADMIN)
    with pytest.raises(InvalidReference):
        await store.put_route(Route(purpose="sales", agent_id="no-such-agent"), ctx=ADMIN)
    with pytest.raises(NotFound):
        await store.delete_route("no-such-purpose", ctx=ADMIN)
    with pytest.raises(NotFound):
        await store.finish_session("no-such-session", SessionStatus.completed)
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="agent-a"))
    with pytest.raises(AlreadyExists):
        await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="agent-a"))

    assert await types_of(store) == [*before, "session.started"]


async def test_racing_writers_commit_exactly_one_event_per_version(store, open_another, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    other = await open_another()

    async def patch(s, i: int) -> None:
        await s.update_agent_config("agent-a", {"description": f"d{i}"}, ctx=ChangeContext(actor=f"w{i}"))

    await asyncio.gather(*(patch(store if i % 2 else other, i) for i in range(12)))
    versions = [v.version for v in await store.list_versions("agent-a")]
    assert versions == list(range(1, 14))
    got = [d["version"] for t, d in await events_of(store, types=["agent.version_created"])]
    assert sorted(got) == versions  # one event per version, none for the lost attempts


@pytest.fixture(params=["sqlite", "postgres"])
async def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConfigStore]:
    s = BACKENDS[request.param](request, tmp_path).new_store()
    await s.start()
    try:
        yield s
    finally:
        await s.aclose()


async def test_a_change_whose_event_cannot_be_written_does_not_happen(sql_store, make_agent, monkeypatch):
    """No change without its event: when writing the event fails (here: the database
    refuses it), the change fails with it and nothing of it is left. (On MongoDB the
    event is part of the commit-point document, so it cannot fail separately; its
    crash windows are in test_mongo_crash_windows.)"""
    store = sql_store
    await store.create_agent_config(make_agent("agent-a"))
    from app.store.sql import configs as sql_configs, routes as sql_routes, sessions as sql_sessions

    def refuse(c, events):
        raise StoreUnavailable("event table refused the row")

    for mod in (sql_configs, sql_routes, sql_sessions):
        monkeypatch.setattr(mod, "insert_events", refuse)
    with pytest.raises(StoreUnavailable):
        await store.update_agent_config("agent-a", {"description": "two"})
    with pytest.raises(StoreUnavailable):
        await store.put_route(Route(purpose="support", agent_id="agent-a"))
    with pytest.raises(StoreUnavailable):
        await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="agent-a"))
    monkeypatch.undo()
    assert [v.version for v in await store.list_versions("agent-a")] == [1]
    assert await store.list_routes() == []
    with pytest.raises(NotFound):
        await store.get_session("s-1")
    assert await types_of(store) == ["agent.created", "agent.version_created"]


# ------------------------------------------------------------------ session events


async def test_session_events_start_handoff_end(store):
    rec = SessionRecord(session_id="s-1", room="room-1", agent_id="agent-a", config_version=3, user_id="u1",
                        route_reason="purpose support")
    await store.start_session(rec)
    await store.append_turn("s-1", Turn(seq=0, role="user", text="hi"))
    await store.record_handoff("s-1", Handoff(from_agent="agent-a", to_agent="agent-b", reason="billing"))
    await store.update_session("s-1", agent_id="agent-b")
    await store.finish_session("s-1", SessionStatus.completed, "user hung up")

    got = await events_of(store)
    assert [t for t, _ in got] == ["session.started", "session.handoff", "session.ended"]
    started, handoff, ended = (d for _, d in got)
    assert started["session_id"] == "s-1" and started["config_version"] == 3 and started["user_id"] == "u1"
    assert (handoff["from_agent"], handoff["to_agent"], handoff["reason"]) == ("agent-a", "agent-b", "billing")
    assert (ended["status"], ended["end_reason"]) == ("completed", "user hung up")
    entry = await store.get_event((await store.list_events(types=["session.ended"]))[0][0].id)
    assert entry.rendered is False  # a stub until it is fanned out
    assert await store.list_events(types=change_types()) == ([], 0)  # sessions are not audit events


async def test_a_batch_commits_the_events_of_every_op(store):
    t0 = now_ms()
    ops = [
        StartSession(SessionRecord(session_id="s-1", room="r", agent_id="agent-a", started_at=t0)),
        AppendTurn(Turn(seq=0, role="user", text="hi")),
        RecordHandoff(Handoff(from_agent="agent-a", to_agent="agent-b")),
        AppendTurn(Turn(seq=1, role="assistant", text="hello")),
        FinishSession(SessionStatus.failed, "error", "boom"),
    ]
    await store.apply_session_writes("s-1", ops)
    assert await types_of(store) == ["session.started", "session.handoff", "session.ended"]
    with pytest.raises(NotFound):  # a batch that fails leaves none of its events
        await store.apply_session_writes("s-2", [AppendTurn(Turn(seq=0, role="user", text="x")),
                                                 FinishSession(SessionStatus.completed)])
    assert len(await types_of(store)) == 3


async def test_abandoned_sessions_end_with_an_event_each(store):
    old = now_ms() - timedelta(minutes=10)
    await store.start_session(SessionRecord(session_id="s-stale", room="r", agent_id="agent-a", started_at=old))
    await store.start_session(SessionRecord(session_id="s-live", room="r", agent_id="agent-b", owner="me"))
    await store.start_session(SessionRecord(session_id="s-done", room="r", agent_id="agent-c"))
    await store.finish_session("s-done", SessionStatus.completed)

    assert await store.abandon_stale_sessions(now_ms() - timedelta(minutes=1), "owner stopped") == 1
    ended = [d for t, d in await events_of(store, types=["session.ended"])]
    assert [(d["session_id"], d["status"]) for d in ended] == [("s-done", "completed"), ("s-stale", "abandoned")]
    assert ended[1]["end_reason"] == "owner stopped" and ended[1]["agent_id"] == "agent-a"

    assert await store.abandon_active_sessions("server shutting down") == 1
    ended = [d for t, d in await events_of(store, types=["session.ended"])]
    assert [(d["session_id"], d["status"]) for d in ended][-1] == ("s-live", "abandoned")
    assert await store.abandon_active_sessions("again") == 0  # nothing left: no more events
    assert len(await events_of(store, types=["session.ended"])) == 3


# ------------------------------------------------------------------ audit reads


async def test_audit_filters_and_paging(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"), ctx=ChangeContext(actor="alice"))
    mid = now_ms()
    await asyncio.sleep(0.01)
    await store.create_agent_config(make_agent("agent-b"), ctx=ChangeContext(actor="bob"))
    await store.update_agent_config("agent-a", {"description": "x"}, ctx=ChangeContext(actor="bob"))
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="agent-a"))

    audit = change_types()
    events, total = await store.list_events(types=audit)
    assert total == 5 and all(e.type in audit for e in events)
    assert [e.at for e in events] == sorted((e.at for e in events), reverse=True)  # newest first
    assert (await store.list_events(types=audit, agent_id="agent-a"))[1] == 3
    assert (await store.list_events(types=audit, actor="bob"))[1] == 3
    assert (await store.list_events(types=audit, actor="alice", agent_id="agent-b"))[1] == 0
    assert (await store.list_events(types=audit, since=mid))[1] == 3
    assert (await store.list_events(types=audit, until=mid))[1] == 2
    assert (await store.list_events(types=["agent.created"]))[1] == 2
    page, total = await store.list_events(types=audit, offset=1, limit=2)
    assert total == 5 and [e.id for e in page] == [e.id for e in events[1:3]]
    assert (await store.list_events(offset=50))[0] == []
    assert (await store.list_events())[1] == 6  # the session event too


async def test_events_survive_reopen_and_are_seen_by_another_instance(store, open_another, make_agent):
    await store.create_agent_config(make_agent("agent-a"), ctx=ADMIN)
    other = await open_another()
    events, total = await other.list_events()
    assert total == 2 and {e.actor for e in events} == {"admin"}
    assert (await other.get_event(events[0].id)).event == events[0]
    with pytest.raises(NotFound):
        await other.get_event("evt_nope")


# ------------------------------------------------------------------ fan-out bookkeeping


async def test_freeze_renders_a_stub_once_and_fanout_marks(store):
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="agent-a"))
    await store.finish_session("s-1", SessionStatus.completed, "done")
    pending = await store.unfanned_events()
    assert [p.event.type for p in pending] == ["session.started", "session.ended"]
    assert [p.rendered for p in pending] == [True, False]
    ended = pending[1].event

    first = await store.freeze_event(ended.id, "agent-a", {"session_id": "s-1", "transcript": [{"a.b": 1}]})
    second = await store.freeze_event(ended.id, "agent-z", {"session_id": "s-1", "transcript": []})
    assert first.rendered and second.rendered
    assert first.event.data == second.event.data == {"session_id": "s-1", "transcript": [{"a.b": 1}]}
    assert second.event.agent_id == "agent-a"
    assert (await store.get_event(ended.id)).event.data["transcript"] == [{"a.b": 1}]
    with pytest.raises(NotFound):
        await store.freeze_event("evt_missing", None, {})

    await store.mark_fanned_out([pending[0].event.id])
    assert [p.event.id for p in await store.unfanned_events()] == [ended.id]
    await store.mark_fanned_out([ended.id])
    assert await store.unfanned_events() == []
    assert await store.relay_events(grace_s=0) == 0  # nothing was left behind


def test_registry_knows_every_emitted_type_and_leaves_room():
    assert set(change_types()) >= {"agent.created", "agent.version_created", "agent.deleted", "routes.changed"}
    assert {n for n, t in EVENT_TYPES.items() if t.kind is EventKind.session} >= {
        "session.started", "session.ended", "session.handoff"}
    from pydantic import BaseModel

    from app.domain.events import register_event_type

    class Published(BaseModel):
        agent_id: str

    try:
        register_event_type("agent.published_test", EventKind.change, "test", Published)
        assert "agent.published_test" in change_types()
        with pytest.raises(ValueError):
            register_event_type("Not A Type", EventKind.change, "bad", Published)
    finally:
        EVENT_TYPES.pop("agent.published_test", None)
