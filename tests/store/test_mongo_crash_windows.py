"""MongoStore without transactions: what a writer that died between two steps leaves
behind is never served half-written, and the next write repairs it (see the module
docstring of app/store/mongo.py). Each test builds the leftover state of one crash
window directly in the database, then checks readers and writers.

Plus: untrusted keys and values never reach MongoDB as operators or paths (the
round-trip half runs on every backend).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pymongo
import pytest

from app.domain import (
    AgentConfig,
    AlreadyExists,
    InvalidInput,
    NotFound,
    Route,
    SessionRecord,
    VersionConflict,
)
from app.store import open_store
from app.store.mongo import MongoStore, escape_keys, unescape_keys
from app.store.mongo.configs import version_doc
from sim.db_servers import MongoServer


@pytest.fixture
async def mstore(secantus_server: MongoServer) -> AsyncIterator[MongoStore]:
    s = open_store(secantus_server.url(f"crash_{uuid4().hex}"))
    assert isinstance(s, MongoStore)
    await s.start()
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
def raw(secantus_server: MongoServer, mstore: MongoStore):
    """A plain synchronous client on the same database, to build crash leftovers."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mstore.url, tz_aware=True)
    try:
        yield client.get_default_database()
    finally:
        client.close()


def _version_doc(cfg: AgentConfig, gen: str) -> dict[str, Any]:
    return version_doc(cfg, gen)


def _next(cfg: AgentConfig, **changes: Any) -> AgentConfig:
    return cfg.model_copy(update={"version": cfg.version + 1, **changes})


async def test_update_crashed_before_advancing_the_head(mstore, raw, make_agent):
    v1 = await mstore.create_agent_config(make_agent("agent-a", name="one"))
    gen = raw.agent_heads.find_one({"_id": "agent-a"})["gen"]
    orphan = _next(v1, name="written by a writer that then died")
    raw.agent_configs.insert_one(_version_doc(orphan, gen))

    # readers never see a version above the head
    assert await mstore.get_agent_config("agent-a") == v1
    assert await mstore.list_versions("agent-a") == [v1]
    with pytest.raises(NotFound):
        await mstore.get_agent_config("agent-a", version=2)
    assert await mstore.list_agent_configs() == ([v1], 1)

    # the next conditional writer collides, rolls the committed write forward, conflicts
    with pytest.raises(VersionConflict) as exc:
        await mstore.update_agent_config("agent-a", {"name": "x"}, expected_version=1)
    assert (exc.value.expected, exc.value.actual) == (1, 2)
    assert (await mstore.get_agent_config("agent-a")).name == orphan.name
    # and an unconditional writer goes on top of it
    v3 = await mstore.update_agent_config("agent-a", {"name": "three"})
    assert v3.version == 3
    assert [v.version for v in await mstore.list_versions("agent-a")] == [1, 2, 3]


async def test_create_crashed_before_writing_the_head(mstore, raw, make_agent):
    now_cfg = AgentConfig.model_validate(
        {**make_agent("agent-a", name="orphan").model_dump(), "version": 1,
         "created_at": "2030-01-01T00:00:00Z", "updated_at": "2030-01-01T00:00:00Z"}
    )
    raw.agent_configs.insert_one(_version_doc(now_cfg, uuid4().hex))

    with pytest.raises(NotFound):
        await mstore.get_agent_config("agent-a")
    assert await mstore.list_agent_configs() == ([], 0)

    # the crashed create had committed: a new create rolls it forward and loses
    with pytest.raises(AlreadyExists):
        await mstore.create_agent_config(make_agent("agent-a", name="second"))
    assert (await mstore.get_agent_config("agent-a")).name == "orphan"
    assert (await mstore.update_agent_config("agent-a", {"name": "two"})).version == 2


async def test_delete_crashed_after_the_tombstone(mstore, raw, make_agent):
    await mstore.create_agent_config(make_agent("agent-a", name="old"))
    await mstore.update_agent_config("agent-a", {"name": "old two"})
    raw.agent_heads.update_one({"_id": "agent-a"}, {"$set": {"deleted": True}})  # died right after

    for call in (
        lambda: mstore.get_agent_config("agent-a"),
        lambda: mstore.list_versions("agent-a"),
        lambda: mstore.update_agent_config("agent-a", {"name": "x"}),
        lambda: mstore.delete_agent_config("agent-a"),
    ):
        with pytest.raises(NotFound):
            await call()
    assert await mstore.list_agent_configs() == ([], 0)

    new = await mstore.create_agent_config(make_agent("agent-a", name="new"))
    assert new.version == 1
    assert await mstore.list_versions("agent-a") == [new]
    assert (await mstore.update_agent_config("agent-a", {"name": "new two"})).version == 2


async def test_leftover_version_of_a_deleted_generation_is_never_served(mstore, raw, make_agent):
    old = await mstore.create_agent_config(make_agent("agent-a", name="old"))
    old_gen = raw.agent_heads.find_one({"_id": "agent-a"})["gen"]
    await mstore.delete_agent_config("agent-a")
    # an update that raced the delete left its version 2 behind
    raw.agent_configs.insert_one(_version_doc(_next(old, name="old two"), old_gen))

    new = await mstore.create_agent_config(make_agent("agent-a", name="new"))
    v2 = await mstore.update_agent_config("agent-a", {"description": "mine"})
    assert (v2.version, v2.name, v2.description) == (2, "new", "mine")
    assert await mstore.list_versions("agent-a") == [new, v2]


async def test_delete_crashed_before_the_tombstone_does_not_block_routes(mstore, raw, make_agent):
    v1 = await mstore.create_agent_config(make_agent("agent-a"))
    raw.agent_heads.update_one({"_id": "agent-a"}, {"$set": {"deleting": "dead-token"}})
    assert await mstore.get_agent_config("agent-a") == v1  # an intent hides nothing
    await mstore.put_route(Route(purpose="support", agent_id="agent-a"))
    assert "deleting" not in raw.agent_heads.find_one({"_id": "agent-a"})
    await mstore.delete_route("support")
    await mstore.delete_agent_config("agent-a")
    with pytest.raises(NotFound):
        await mstore.get_agent_config("agent-a")


async def test_second_instance_reads_through_crash_leftovers(mstore, raw, make_agent, secantus_server):
    """A process that never saw the writes (empty parsed-config cache) agrees."""
    v1 = await mstore.create_agent_config(make_agent("agent-a"))
    gen = raw.agent_heads.find_one({"_id": "agent-a"})["gen"]
    raw.agent_configs.insert_one(_version_doc(_next(v1, name="uncommitted head"), gen))
    other = open_store(mstore.url)
    await other.start()
    try:
        assert await other.get_agent_config("agent-a") == v1
        assert await other.list_agent_configs() == ([v1], 1)
    finally:
        await other.aclose()


# ----------------------------------------------------------- operator injection


NASTY = {
    "$where": "sleep(1000)",
    "a.b": {"$gt": ""},
    "%24literal": "percent-escaped look-alike",
    "nested": {"$set": {"x": 1}, "dots.in.key": ["$unset", {"$inc": 1}]},
    "nul\x00key": 1,
}


def test_key_escaping_is_reversible_and_operator_free():
    escaped = escape_keys(NASTY)
    assert unescape_keys(escaped) == NASTY

    def keys(v: Any) -> list[str]:
        if isinstance(v, dict):
            return list(v) + [k2 for x in v.values() for k2 in keys(x)]
        if isinstance(v, list):
            return [k for x in v for k in keys(x)]
        return []

    assert not [k for k in keys(escaped) if k.startswith("$") or "." in k or "\x00" in k]


async def test_operator_like_keys_round_trip(store, make_agent):
    """Every backend stores such keys verbatim (runs on sqlite, mongo and postgres)."""
    data = make_agent(
        "agent-a",
        schema_config={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": {"code": {"type": "string"}},
            "type": "object",
            "properties": {"order_id": {"$ref": "#/$defs/code"}},
        },
        tools=[{
            "type": "http", "name": "lookup", "description": "d", "url": "https://example.com/x",
            "headers": {"X-Api.Key": "k", "$weird": "v", "100%": "w"},
        }],
    )
    created = await store.create_agent_config(data)
    assert (await store.get_agent_config("agent-a")) == created
    assert created.input() == data

    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="agent-a"))
    assert await store.record_data("s-1", NASTY) == NASTY
    assert await store.record_data("s-1", {"a.b": "replaced"}) == {**NASTY, "a.b": "replaced"}
    await store.update_session("s-1", metrics=[{"$x.y": 1}])
    got = await store.get_session("s-1")
    assert got.collected == {**NASTY, "a.b": "replaced"}
    assert got.metrics == [{"$x.y": 1}]


async def test_non_string_ids_never_become_queries(mstore, make_agent):
    await mstore.create_agent_config(make_agent("agent-a"))
    await mstore.start_session(SessionRecord(session_id="s-1", room="r", agent_id="agent-a"))
    op = {"$ne": None}
    for call in (
        lambda: mstore.get_agent_config(op),  # type: ignore[arg-type]
        lambda: mstore.get_agent_config("agent-a", op),  # type: ignore[arg-type]
        lambda: mstore.update_agent_config(op, {"name": "x"}),  # type: ignore[arg-type]
        lambda: mstore.delete_agent_config(op),  # type: ignore[arg-type]
        lambda: mstore.list_versions(op),  # type: ignore[arg-type]
    ):
        with pytest.raises(NotFound):
            await call()
    for call in (
        lambda: mstore.get_session(op),  # type: ignore[arg-type]
        lambda: mstore.record_data(op, {"a": 1}),  # type: ignore[arg-type]
        lambda: mstore.update_session(op, degraded="x"),  # type: ignore[arg-type]
        lambda: mstore.list_sessions(agent_id=op),  # type: ignore[arg-type]
        lambda: mstore.update_session("s-1", agent_id=op),
    ):
        with pytest.raises(InvalidInput):
            await call()
    assert (await mstore.get_session("s-1")).agent_id == "agent-a"


# ------------------------------------------------------------- the journal relay
#
# Every write embeds its events in its commit-point document and relays them into
# `events` right after. A process that dies in between leaves them embedded: they must
# reach the journal (exactly once) by the sweep or the next writer, and only if the
# change really committed.


LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


class ProcessDied(BaseException):
    """Stands for kill -9 right after the commit point: nothing after it runs."""


def _die(*_a: Any, **_k: Any) -> Any:
    raise ProcessDied


def crash_after_commit(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """From now on writers die between their commit point and their relay."""
    for mod in ("configs", "routes", "sessions"):
        monkeypatch.setattr(f"app.store.mongo.{mod}.relay_now", _die)
    # a delete relays its tombstone's event as it removes the generation
    monkeypatch.setattr("app.store.mongo.configs.MongoConfigs._finish_delete", _die)
    return monkeypatch


async def _journal(store: MongoStore) -> list[tuple[str, Any]]:
    events, _ = await store.list_events(limit=500)
    return sorted((e.type, e.id) for e in events)


async def test_every_write_kind_is_relayed_after_dying_before_its_relay(mstore, monkeypatch, make_agent):
    from app.domain import SessionStatus
    from app.domain.events import ChangeContext

    ctx = ChangeContext(actor="admin", note="n")
    await mstore.create_agent_config(make_agent("agent-b"))  # before the crashes: relayed normally
    crash_after_commit(monkeypatch)
    writes = [
        lambda: mstore.create_agent_config(make_agent("agent-a"), ctx=ctx),
        lambda: mstore.update_agent_config("agent-a", {"description": "two"}, ctx=ctx),
        lambda: mstore.put_route(Route(purpose="support", agent_id="agent-b"), ctx=ctx),
        lambda: mstore.start_session(SessionRecord(session_id="s-1", room="r", agent_id="agent-a")),
        lambda: mstore.finish_session("s-1", SessionStatus.completed, "bye"),
        lambda: mstore.start_session(SessionRecord(session_id="s-2", room="r", agent_id="agent-a")),
        lambda: mstore.abandon_active_sessions("restarted"),
        lambda: mstore.delete_agent_config("agent-a", ctx=ctx),
    ]
    for write in writes:
        with pytest.raises(ProcessDied):
            await write()
    monkeypatch.undo()

    # every change is committed ...
    with pytest.raises(NotFound):
        await mstore.get_agent_config("agent-a")
    assert (await mstore.get_route("support")).agent_id == "agent-b"
    assert (await mstore.get_session("s-1")).status.value == "completed"
    assert (await mstore.get_session("s-2")).status.value == "abandoned"
    # ... but its events are still where the dead writer left them
    assert {t for t, _ in await _journal(mstore)} == {"agent.created", "agent.version_created"}

    restarted = open_store(mstore.url)
    await restarted.start()
    try:
        assert await restarted.relay_events(grace_s=60) == 9
        assert await restarted.relay_events(grace_s=60) == 0  # idempotent
        got = await _journal(restarted)
    finally:
        await restarted.aclose()
    assert sorted(t for t, _ in got) == sorted([
        "agent.created", "agent.version_created",  # agent-b
        "agent.created", "agent.version_created", "agent.version_created", "agent.deleted",  # agent-a
        "routes.changed", "session.started", "session.ended", "session.started", "session.ended",
    ])
    events, _ = await mstore.list_events(types=["agent.version_created"], agent_id="agent-a")
    assert {(e.data["version"], e.actor, e.note) for e in events} == {(1, "admin", "n"), (2, "admin", "n")}


async def test_a_relay_that_died_half_way_never_duplicates(mstore, raw, make_agent):
    await mstore.create_agent_config(make_agent("agent-a"))
    doc = raw.events.find_one({"type": "agent.created"})
    # the journal insert landed, the pull from the version document did not
    version = raw.agent_configs.find_one({"agent_id": "agent-a"})
    entry = {k: v for k, v in doc.items() if k not in ("_id", "rendered", "fanout")}
    raw.agent_configs.update_one({"_id": version["_id"]}, {"$push": {"pending_events": {"id": doc["_id"], **entry}}})
    assert await mstore.relay_events(grace_s=0) == 1
    assert raw.events.count_documents({"type": "agent.created"}) == 1
    assert "pending_events" not in raw.agent_configs.find_one({"_id": version["_id"]}) or not raw.agent_configs.find_one(
        {"_id": version["_id"]})["pending_events"]


def _with_events(cfg: AgentConfig, gen: str, *types: str) -> dict[str, Any]:
    from app.domain.events import SYSTEM
    from app.store import event_rules

    events = event_rules.agent_created(cfg, cfg.updated_at, SYSTEM) if "create" in types else \
        event_rules.version_created(cfg, "patch", cfg.updated_at, SYSTEM)
    return version_doc(cfg, gen, events)


async def test_create_that_died_before_its_head_is_rolled_forward_with_its_events(mstore, raw, make_agent):
    cfg = AgentConfig.model_validate(
        {**make_agent("agent-a", name="orphan").model_dump(), "version": 1,
         "created_at": "2030-01-01T00:00:00Z", "updated_at": "2030-01-01T00:00:00Z"})
    raw.agent_configs.insert_one(_with_events(cfg, uuid4().hex, "create"))
    assert await mstore.relay_events(grace_s=3600) == 0  # too young to tell from a create in flight
    assert raw.events.count_documents({}) == 0

    past = AgentConfig.model_validate({**cfg.model_dump(), "updated_at": "2020-01-01T00:00:00Z"})
    raw.agent_configs.delete_many({})
    raw.agent_configs.insert_one(_with_events(past, uuid4().hex, "create"))
    assert await mstore.relay_events(grace_s=60) == 2
    assert (await mstore.get_agent_config("agent-a")).name == "orphan"  # rolled forward
    assert sorted(e.type for e in (await mstore.list_events())[0]) == ["agent.created", "agent.version_created"]


async def test_next_create_relays_an_orphan_it_rolls_forward(mstore, raw, make_agent):
    cfg = AgentConfig.model_validate(
        {**make_agent("agent-a", name="orphan").model_dump(), "version": 1,
         "created_at": "2030-01-01T00:00:00Z", "updated_at": "2030-01-01T00:00:00Z"})
    raw.agent_configs.insert_one(_with_events(cfg, uuid4().hex, "create"))
    with pytest.raises(AlreadyExists):
        await mstore.create_agent_config(make_agent("agent-a", name="second"))
    assert sorted(e.type for e in (await mstore.list_events())[0]) == ["agent.created", "agent.version_created"]


async def test_update_that_died_before_the_head_is_relayed_once_current(mstore, raw, make_agent):
    v1 = await mstore.create_agent_config(make_agent("agent-a"))
    gen = raw.agent_heads.find_one({"_id": "agent-a"})["gen"]
    young = _next(v1, name="in flight")
    raw.agent_configs.insert_one(_with_events(young, gen))
    assert await mstore.relay_events(grace_s=3600) == 0  # maybe still in flight: its writer's job
    assert (await mstore.get_agent_config("agent-a")).version == 1
    # the next writer collides, rolls it forward and relays its event
    with pytest.raises(VersionConflict):
        await mstore.update_agent_config("agent-a", {"name": "x"}, expected_version=1)
    events, _ = await mstore.list_events(types=["agent.version_created"])
    assert sorted(e.data["version"] for e in events) == [1, 2]

    old = _next(young, name="died long ago", updated_at=LONG_AGO)
    raw.agent_configs.insert_one(_with_events(AgentConfig.model_validate(old.model_dump()), gen))
    assert await mstore.relay_events(grace_s=60) == 1  # the sweep rolls it forward itself
    assert (await mstore.get_agent_config("agent-a")).name == "died long ago"
    events, _ = await mstore.list_events(types=["agent.version_created"])
    assert sorted(e.data["version"] for e in events) == [1, 2, 3]


async def test_versions_that_never_became_current_are_never_relayed(mstore, raw, make_agent):
    v1 = await mstore.create_agent_config(make_agent("agent-a"))
    gen = raw.agent_heads.find_one({"_id": "agent-a"})["gen"]
    old_version = _next(v1, updated_at=LONG_AGO)
    # of another (deleted) generation
    raw.agent_configs.insert_one(_with_events(AgentConfig.model_validate(old_version.model_dump()), "other-gen"))
    # above a tombstone: the update raced a delete that committed first
    await mstore.create_agent_config(make_agent("agent-b"))
    b = raw.agent_heads.find_one({"_id": "agent-b"})
    raw.agent_heads.update_one({"_id": "agent-b"}, {"$set": {"deleted": True}})
    bv2 = AgentConfig.model_validate({**_next(v1, agent_id="agent-b").model_dump(),
                                      "updated_at": "2020-01-01T00:00:00Z"})
    raw.agent_configs.insert_one(_with_events(bv2, b["gen"]))
    before = raw.events.count_documents({})
    assert await mstore.relay_events(grace_s=0) == 0
    assert raw.events.count_documents({}) == before
    assert gen  # the live generation is untouched
    assert (await mstore.get_agent_config("agent-a")).version == 1


async def test_delete_that_died_after_its_tombstone_is_relayed_by_the_next_create(mstore, make_agent, monkeypatch):
    await mstore.create_agent_config(make_agent("agent-a"))
    monkeypatch.setattr("app.store.mongo.configs.MongoConfigs._finish_delete", _die)
    with pytest.raises(ProcessDied):
        await mstore.delete_agent_config("agent-a")
    monkeypatch.undo()
    assert (await mstore.list_events(types=["agent.deleted"]))[1] == 0
    await mstore.create_agent_config(make_agent("agent-a", name="again"))
    assert (await mstore.list_events(types=["agent.deleted"]))[1] == 1
    assert (await mstore.list_events(types=["agent.created"]))[1] == 2


async def test_webhook_delete_that_died_after_its_commit_is_finished_by_the_sweep(mstore, raw, monkeypatch):
    from app.domain.webhooks import WebhookInput

    hook = await mstore.create_webhook(WebhookInput(url="https://example.com/h", events=["session.ended"]))
    raw.webhook_deliveries.insert_one({"_id": "dlv_x", "webhook_id": hook.id, "event_id": "evt_x"})
    monkeypatch.setattr("app.store.mongo.journal.relay_now", _die)  # after mark_deleted's commit
    with pytest.raises(ProcessDied):
        await mstore.delete_webhook(hook.id)
    monkeypatch.undo()
    with pytest.raises(NotFound):  # committed: gone for readers at once
        await mstore.get_webhook(hook.id)
    assert await mstore.list_webhooks() == []
    assert (await mstore.list_events(types=["webhook.deleted"]))[1] == 0
    assert await mstore.relay_events(grace_s=60) == 1
    assert (await mstore.list_events(types=["webhook.deleted"]))[1] == 1
    assert raw.webhooks.count_documents({}) == 0 and raw.webhook_deliveries.count_documents({}) == 0


async def test_key_revoke_that_died_after_its_commit_is_finished_by_the_sweep(mstore, raw, monkeypatch):
    from app.domain.keys import ApiKeyInput, Role

    await mstore.create_api_key(ApiKeyInput(name="jane", role=Role.edit))
    monkeypatch.setattr("app.store.mongo.keys.relay_now", _die)
    with pytest.raises(ProcessDied):
        await mstore.revoke_api_key("jane")
    monkeypatch.undo()
    # committed: no reader (the API guard included) sees the key any more
    assert await mstore.api_key_table() == [] and await mstore.list_api_keys() == []
    assert (await mstore.list_events(types=["key.revoked"]))[1] == 0
    assert await mstore.relay_events(grace_s=60) == 1
    assert (await mstore.list_events(types=["key.revoked"]))[1] == 1
    assert raw.api_keys.count_documents({}) == 0


async def test_key_create_after_a_crashed_revoke_relays_it_first(mstore, raw, monkeypatch):
    from app.domain.keys import ApiKeyInput, Role

    await mstore.create_api_key(ApiKeyInput(name="jane", role=Role.edit))
    monkeypatch.setattr("app.store.mongo.keys.relay_now", _die)
    with pytest.raises(ProcessDied):
        await mstore.revoke_api_key("jane")
    monkeypatch.undo()
    again = await mstore.create_api_key(ApiKeyInput(name="jane", role=Role.read))  # the name is free
    assert [(k.name, k.role) for k in await mstore.list_api_keys()] == [("jane", Role.read)]
    assert again.secret.startswith("vp_")
    events, _ = await mstore.list_events(types=["key.created", "key.revoked"])
    assert [e.type for e in reversed(events)] == ["key.created", "key.revoked", "key.created"]
