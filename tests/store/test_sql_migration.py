"""Schema versions 2 (`sessions.owner`, `sessions.heartbeat_at`) and 3 (the `events`
journal) on a database an older build created: `SQLStore.start` adds the columns and
the table (idempotently, also with several processes starting at once), records the
version, and keeps the old rows readable; a database newer than this build is reported,
not touched."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from app.domain import SessionRecord, SessionStatus
from app.store.sql import SQLStore
from app.store.sql.tables import SCHEMA_VERSION, meta_t
from tests.store.conftest import BACKENDS, StoreTarget


@pytest.fixture(params=["sqlite", "postgres"])
def sql_target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    return BACKENDS[request.param](request, tmp_path)


async def _exec(url: str, *statements: str | sa.Executable) -> None:
    eng = create_async_engine(url)
    try:
        async with eng.begin() as conn:
            for st in statements:
                await conn.execute(sa.text(st) if isinstance(st, str) else st)
    finally:
        await eng.dispose()


async def _schema_version(url: str) -> int:
    eng = create_async_engine(url)
    try:
        async with eng.connect() as conn:
            return int(await conn.scalar(sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")))
    finally:
        await eng.dispose()


async def _make_version_1(url: str) -> None:
    """A database as the version-1 build left it: one session, no owner columns."""
    store = SQLStore(url)
    await store.start()
    try:
        await store.start_session(SessionRecord(session_id="s-old", room="r", agent_id="agent-a"))
    finally:
        await store.aclose()
    await _exec(
        url,
        "ALTER TABLE sessions DROP COLUMN owner",
        "ALTER TABLE sessions DROP COLUMN heartbeat_at",
        "ALTER TABLE sessions DROP COLUMN usage",
        "ALTER TABLE sessions DROP COLUMN events",
        "DROP TABLE events",
        meta_t.update().where(meta_t.c.key == "schema_version").values(value=1),
    )


async def test_start_adds_the_owner_columns_to_a_version_1_database(sql_target: StoreTarget) -> None:
    assert SCHEMA_VERSION == 4
    await _make_version_1(sql_target.url)
    stores = [SQLStore(sql_target.url) for _ in range(3)]
    try:
        # several processes upgrading at once: exactly one adds each column
        assert await asyncio.gather(*(s.start() for s in stores)) == [None] * 3
        store = stores[0]
        old = await store.get_session("s-old")
        assert old.owner is None and old.heartbeat_at is None and old.status == SessionStatus.active
        assert old.usage.llm_tokens == 0 and old.events == []  # version 3's columns, empty
        await store.update_session("s-old", usage={"llm_input_tokens": 5}, events=[{"kind": "budget_warning"}])
        old = await store.get_session("s-old")
        assert old.usage.llm_input_tokens == 5 and [e.kind for e in old.events] == ["budget_warning"]
        await store.start_session(SessionRecord(session_id="s-new", room="r", agent_id="a", owner="me"))
        assert await store.heartbeat("me") == 1
        assert (await store.get_session("s-new")).owner == "me"
        events, total = await store.list_events(types=["session.started"])
        assert total == 1 and events[0].data["session_id"] == "s-new"  # the journal table is there
    finally:
        for s in stores:
            await s.aclose()
    assert await _schema_version(sql_target.url) == SCHEMA_VERSION
    again = SQLStore(sql_target.url)  # idempotent: nothing left to add
    await again.start()
    await again.aclose()
    assert await _schema_version(sql_target.url) == SCHEMA_VERSION


async def test_a_newer_database_is_reported_and_left_alone(sql_target: StoreTarget, caplog) -> None:
    store = SQLStore(sql_target.url)
    await store.start()
    await store.aclose()
    await _exec(sql_target.url, meta_t.update().where(meta_t.c.key == "schema_version").values(value=99))
    store = SQLStore(sql_target.url)
    with caplog.at_level(logging.WARNING, logger="app.store.sql"):
        await store.start()
    await store.aclose()
    assert any("newer than this build" in r.getMessage() for r in caplog.records)
    assert await _schema_version(sql_target.url) == 99
