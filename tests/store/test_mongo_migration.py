"""Mongo schema 2 (`sessions.worst_turn_ms`) on a database an older build wrote: `start`
fills in each session's worst turn from its stored metrics and records the version."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from app.domain import SessionOrder, SessionRecord
from app.store.mongo.client import SCHEMA_VERSION
from tests.store.conftest import make_mongo_store


async def test_a_schema_1_database_gains_the_worst_turn_of_its_sessions(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = make_mongo_store(request, tmp_path)
    store = target.new_store()
    await store.start()
    try:
        for sid, figures in {"s-slow": [400.0, 1800.0], "s-quick": [350.0], "s-none": []}.items():
            await store.start_session(SessionRecord(session_id=sid, room="r", agent_id="agent-a"))
            if figures:
                await store.update_session(sid, metrics=[{"turn": i, "total_ms": v} for i, v in enumerate(figures)])
    finally:
        await store.aclose()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(target.url)
    try:
        db = client.get_default_database()
        await db.sessions.update_many({}, {"$unset": {"worst_turn_ms": ""}})  # as schema 1 wrote them
        await db.meta.update_one({"_id": "schema_version"}, {"$set": {"value": 1}})
        store = target.new_store()
        await store.start()
        try:
            items, _ = await store.list_sessions(order=SessionOrder.worst_turn)
            assert [(s.session_id, s.worst_turn_ms) for s in items] == [
                ("s-slow", 1800.0), ("s-quick", 350.0), ("s-none", None)
            ]
        finally:
            await store.aclose()
        assert (await db.meta.find_one({"_id": "schema_version"}) or {}).get("value") == SCHEMA_VERSION == 2
    finally:
        await client.close()
