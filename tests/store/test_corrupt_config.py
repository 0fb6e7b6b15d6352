"""A stored config that no longer validates is contained, on every backend.

Rows were valid when written; one that fails now was edited by hand, or written by a
newer build before the app was rolled back. Before, one such row made every listing
raise, so the worker's cache could never reload (no config change applied to any
agent again) and a GET answered 422. Now: listings leave it out, fetching it alone
raises `CorruptRecord` naming it (the API's 500), and rolling back repairs it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from pydantic import SecretStr

from app.api.app import create_app
from app.domain import CorruptRecord
from app.settings import Settings
from app.store.base import ConfigStore
from app.store.cache import ConfigCache
from app.store.mongo import MongoStore
from tests.store.conftest import StoreTarget

SECRET = "s3cret-header-value"


async def corrupt(store: Any, agent_id: str, version: int) -> None:
    """Make one stored version invalid the way a newer build could: an unknown field."""
    if isinstance(store, MongoStore):
        db = await store.backend.ready()
        doc = await db.agent_configs.find_one({"agent_id": agent_id, "version": version})
        data = dict(doc["data"]) | {"added_by_a_newer_build": SECRET}
        await db.agent_configs.update_one({"_id": doc["_id"]}, {"$set": {"data": data}})
    else:
        def edit(conn: Any) -> None:
            row = conn.execute(sa.text(
                "SELECT id, data FROM agent_configs WHERE agent_id = :a AND version = :v"
            ), {"a": agent_id, "v": version}).one()
            data = (row.data if isinstance(row.data, dict) else json.loads(row.data)) | {"added_by_a_newer_build": SECRET}
            conn.execute(sa.text("UPDATE agent_configs SET data = :d WHERE id = :i"),
                         {"d": json.dumps(data), "i": row.id})

        await store.backend.write(edit)
    store._parsed.clear()  # as a fresh process would read it


async def test_corrupt_version_is_contained(
    store_target: StoreTarget, make_agent: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store: ConfigStore = store_target.new_store()
    await store.start()
    try:
        await store.create_agent_config(make_agent("good-agent"))
        await store.create_agent_config(make_agent("bad-agent"))
        await store.update_agent_config("bad-agent", {"description": "v2"})
        await corrupt(store, "bad-agent", 2)

        with pytest.raises(CorruptRecord) as err:
            await store.get_agent_config("bad-agent")
        assert "bad-agent" in err.value.message and "version 2" in err.value.message
        assert SECRET not in err.value.message
        assert (await store.get_agent_config("bad-agent", 1)).version == 1  # older versions still read

        caplog.set_level(logging.ERROR, logger="app.store")
        listed, total = await store.list_agent_configs()
        assert [c.agent_id for c in listed] == ["good-agent"] and total == 2
        await store.list_agent_configs()
        assert sum("bad-agent" in r.getMessage() for r in caplog.records) == 1  # logged once
        assert [c.version for c in await store.list_versions("bad-agent")] == [1]

        cache = ConfigCache(store, poll_interval=0.05)
        await cache.start()
        try:
            snap = await cache.current()
            assert set(snap.configs) == {"good-agent"} and not snap.stale
            # ...and config changes still apply (before: the reload failed for everyone)
            await store.update_agent_config("good-agent", {"description": "changed"})
            assert (await cache.get_agent_config("good-agent")).version == 2
        finally:
            await cache.aclose()

        repaired = await store.rollback("bad-agent", 1)
        assert repaired.version == 3
        assert (await store.get_agent_config("bad-agent")).version == 3
    finally:
        await store.aclose()


async def test_api_answers_500_naming_the_record(tmp_path, make_agent: Any) -> None:
    from app.store.sql import SQLStore

    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    await store.start()
    try:
        await store.create_agent_config(make_agent("bad-agent"))
        await corrupt(store, "bad-agent", 1)
        settings = Settings(_env_file=None, admin_api_key=SecretStr("admin-key-123456"))  # type: ignore[call-arg]
        auth = {"Authorization": "Bearer admin-key-123456"}
        async with AsyncTestClient(create_app(settings, store)) as c:
            one = await c.get("/api/v1/agents/config/bad-agent", headers=auth)
            listing = await c.get("/api/v1/agents/config", headers=auth)
        assert one.status_code == 500
        assert "bad-agent" in one.json()["detail"] and "added_by_a_newer_build" in one.json()["detail"]
        assert SECRET not in one.text
        assert listing.status_code == 200 and listing.json()["items"] == []
    finally:
        await store.aclose()
