"""MongoStore without transactions: what a writer that died between two steps leaves
behind is never served half-written, and the next write repairs it (see the module
docstring of app/store/mongo.py). Each test builds the leftover state of one crash
window directly in the database, then checks readers and writers.

Plus: untrusted keys and values never reach MongoDB as operators or paths (the
round-trip half runs on every backend).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
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
