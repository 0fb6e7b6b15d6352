"""Schema versions 2 (`sessions.owner`, `sessions.heartbeat_at`), 3 (`sessions.usage`,
`sessions.events`), 4 (the `events` journal table, webhooks and deliveries), 5
(`sessions.analysis` and the analysis queue columns with their index), 6
(`sessions.worst_turn_ms`, filled in from the stored metrics), 7
(`routes.phone_numbers`, `sessions.call`) 8 (the `api_keys` table) and 9 (the release
columns of `agent_heads`, `sessions.arm`) and 10 (`agent_tests`, `test_runs`) on a database an older build created:
`SQLStore.start` adds the columns, tables and index (idempotently,
also with several processes starting at once), records the version, and keeps the old
rows readable; a database newer than this build is reported, not touched."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from app.domain import AgentConfigInput, PromptConfig, Route, SessionOrder, SessionRecord, SessionStatus
from app.domain.agent_tests import AgentTestCreate
from app.domain.analysis import AnalysisConfig, AnalysisRequest, AnalysisStatus, SessionAnalysis
from app.domain.calls import CallOutcome, CallRecord, CampaignInput
from app.domain.keys import ApiKeyInput, Role, hash_key
from app.domain.phone import CallInfo
from app.domain.usage import SessionUsage, UsageGroup
from app.domain.values import utcnow
from app.store.sql import SQLStore
from app.store.sql.tables import ADDED_COLUMNS, SCHEMA_VERSION, meta_t
from tests.store.conftest import BACKENDS, StoreTarget, agent_document


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
    """A database as the version-1 build left it: one session, one route, an agent at
    version 2, no owner or release columns."""
    store = SQLStore(url)
    await store.start()
    try:
        await store.start_session(SessionRecord(session_id="s-old", room="r", agent_id="agent-a"))
        await store.create_agent_config(AgentConfigInput(
            agent_id="agent-a", name="A", prompt_config=PromptConfig(instructions="Hi")))
        await store.put_route(Route(purpose="support", agent_id="agent-a"))
        await store.create_agent_config(AgentConfigInput(agent_id="old-agent", name="Old",
                                                         prompt_config=PromptConfig(instructions="hi")))
        await store.update_agent_config("old-agent", {"description": "v2"})
    finally:
        await store.aclose()
    await _exec(
        url,
        "DROP INDEX ix_sessions_analysis_status",
        "DROP INDEX ix_sessions_worst_turn_ms",
        *(f"ALTER TABLE sessions DROP COLUMN {col}" for col in ADDED_COLUMNS["sessions"]),
        *(f"ALTER TABLE routes DROP COLUMN {col}" for col in ADDED_COLUMNS["routes"]),
        *(f"ALTER TABLE agent_heads DROP COLUMN {col}" for col in ADDED_COLUMNS["agent_heads"]),
        "DROP TABLE events",
        "DROP TABLE agent_tests",
        "DROP TABLE test_runs",
        "DROP TABLE campaign_contacts", "DROP TABLE campaigns", "DROP TABLE calls",  # version 11's
        meta_t.update().where(meta_t.c.key == "schema_version").values(value=1),
    )


async def _make_version_3(url: str) -> None:
    """A database as the version-3 build (usage and events, no analysis) left it, with a
    session that used something."""
    store = SQLStore(url)
    await store.start()
    try:
        await store.start_session(SessionRecord(session_id="s-3", room="r", agent_id="agent-a"))
        await store.update_session("s-3", usage={"llm_input_tokens": 40, "llm_output_tokens": 4})
    finally:
        await store.aclose()
    await _exec(
        url,
        "DROP INDEX ix_sessions_analysis_status",
        *(f"ALTER TABLE sessions DROP COLUMN {col}" for col in ADDED_COLUMNS["sessions"] if col.startswith("analysis")),
        "DROP TABLE events",  # version 4's journal (its webhook tables are left: create_all skips them)
        meta_t.update().where(meta_t.c.key == "schema_version").values(value=3),
    )


async def _indexes(url: str) -> set[str]:
    eng = create_async_engine(url)
    try:
        async with eng.connect() as conn:
            return await conn.run_sync(lambda c: {i["name"] for i in sa.inspect(c).get_indexes("sessions")})
    finally:
        await eng.dispose()


async def test_start_adds_the_new_columns_to_a_version_1_database(sql_target: StoreTarget) -> None:
    assert SCHEMA_VERSION == 11
    await _make_version_1(sql_target.url)
    assert "ix_sessions_analysis_status" not in await _indexes(sql_target.url)
    stores = [SQLStore(sql_target.url) for _ in range(3)]
    try:
        # several processes upgrading at once: exactly one adds each column
        assert await asyncio.gather(*(s.start() for s in stores)) == [None] * 3
        store = stores[0]
        old = await store.get_session("s-old")
        assert old.owner is None and old.heartbeat_at is None and old.status == SessionStatus.active
        assert old.usage.llm_tokens == 0 and old.events == [] and old.analysis is None  # new columns, empty
        await store.update_session("s-old", usage={"llm_input_tokens": 5}, events=[{"kind": "budget_warning"}])
        old = await store.get_session("s-old")
        assert old.usage.llm_input_tokens == 5 and [e.kind for e in old.events] == ["budget_warning"]
        await store.start_session(SessionRecord(session_id="s-new", room="r", agent_id="a", owner="me"))
        assert await store.heartbeat("me") == 1
        assert (await store.get_session("s-new")).owner == "me"
        # version 5: usage and a pending analysis are stored, claimed and summed
        pending = SessionAnalysis(
            status=AnalysisStatus.pending, requested_at=utcnow(),
            request=AnalysisRequest(agent_id="a", settings=AnalysisConfig(summary_prompt="Sum up"), model="m"),
        )
        await store.update_session("s-old", usage=SessionUsage(llm_input_tokens=7, cost_usd=0.5), analysis=pending)
        [claim] = await store.claim_analyses("me", lease_s=30, limit=5)
        assert claim.record.session_id == "s-old" and claim.claims == 1
        report = await store.usage_report(group_by=[UsageGroup.agent])
        assert [(r.agent_id, r.sessions, r.llm_input_tokens) for r in report.rows] == [("a", 1, 0), ("agent-a", 1, 7)]
        events, total = await store.list_events(types=["session.started"])
        assert total == 1 and events[0].data["session_id"] == "s-new"  # the journal table is there
        # version 7: the old route reads with no numbers, numbers and a call are stored
        assert (await store.get_route("support")).phone_numbers == []
        await store.put_route(Route(purpose="support", agent_id="agent-a", phone_numbers=["+15550001111"]))
        assert (await store.get_route("support")).phone_numbers == ["+15550001111"]
        assert old.call is None
        await store.update_session("s-old", call={"direction": "inbound", "caller_number": "+15557654321"})
        assert (await store.get_session("s-old")).call == CallInfo(direction="inbound", caller_number="+15557654321")
        # version 8: named API keys
        created = await store.create_api_key(ApiKeyInput(name="ci", role=Role.edit))
        assert [k.key_hash for k in await stores[1].api_key_table()] == [hash_key(created.secret)]
        # version 9: what was current is published (every write was), and can be changed
        release = await store.get_release("old-agent")
        assert (release.published_version, release.current_version, release.rev, release.rollout) == (2, 2, 0, None)
        assert (await store.publish("old-agent", 1)).published_version == 1
        published, _ = await store.list_published()
        assert [(p.config.agent_id, p.config.version) for p in published] == [("agent-a", 1), ("old-agent", 1)]
        assert (await store.get_session("s-old")).arm is None
        # version 10: tests stored with an agent, and their runs
        await store.create_agent_config(AgentConfigInput.model_validate(agent_document("agent-t")))
        await store.create_agent_test("agent-t", AgentTestCreate(name="t", content="name: t\nsessions: [{}]\n"))
        run, _ = await store.create_test_run("agent-t", 1)
        assert [r.id for r in await store.list_test_runs("agent-t")] == [run.id]
        # version 11: the call and campaign tables are there
        await store.create_call(CallRecord(id="call_1", to="+15551230001", status=CallOutcome.dialing, trunk="ST_1",
                                           room="r-1", created_at=utcnow()))
        assert (await store.list_calls())[1] == 1
        view = await store.create_campaign(CampaignInput.model_validate(
            {"name": "c", "purpose": "p", "contacts": [{"phone": "+15551230001"}]}))
        assert view.progress.by_status["pending"] == 1
    finally:
        for s in stores:
            await s.aclose()
    assert await _schema_version(sql_target.url) == SCHEMA_VERSION
    assert "ix_sessions_analysis_status" in await _indexes(sql_target.url)
    again = SQLStore(sql_target.url)  # idempotent: nothing left to add
    await again.start()
    await again.aclose()
    assert await _schema_version(sql_target.url) == SCHEMA_VERSION


async def test_a_version_3_database_gains_the_analysis_columns_and_keeps_its_usage(sql_target: StoreTarget) -> None:
    await _make_version_3(sql_target.url)
    store = SQLStore(sql_target.url)
    await store.start()
    try:
        old = await store.get_session("s-3")
        assert (old.usage.llm_input_tokens, old.usage.llm_output_tokens) == (40, 4) and old.analysis is None
        assert await store.claim_analyses("me", lease_s=30, limit=5) == []  # nothing pending
        report = await store.usage_report(group_by=[])
        assert (report.total.sessions, report.total.llm_input_tokens) == (1, 40)
    finally:
        await store.aclose()
    assert await _schema_version(sql_target.url) == SCHEMA_VERSION
    assert "ix_sessions_analysis_status" in await _indexes(sql_target.url)


async def test_a_version_5_database_gains_the_worst_turn_of_its_sessions(sql_target: StoreTarget) -> None:
    store = SQLStore(sql_target.url)
    await store.start()
    try:
        for sid, figures in {"s-slow": [400.0, 1800.0], "s-quick": [350.0], "s-none": []}.items():
            await store.start_session(SessionRecord(session_id=sid, room="r", agent_id="agent-a"))
            if figures:
                await store.update_session(sid, metrics=[{"turn": i, "total_ms": v} for i, v in enumerate(figures)])
    finally:
        await store.aclose()
    await _exec(
        sql_target.url,
        "DROP INDEX ix_sessions_worst_turn_ms",
        "ALTER TABLE sessions DROP COLUMN worst_turn_ms",
        meta_t.update().where(meta_t.c.key == "schema_version").values(value=5),
    )
    store = SQLStore(sql_target.url)
    await store.start()
    try:
        items, _ = await store.list_sessions(order=SessionOrder.worst_turn)
        assert [(s.session_id, s.worst_turn_ms) for s in items] == [
            ("s-slow", 1800.0), ("s-quick", 350.0), ("s-none", None)
        ]
    finally:
        await store.aclose()
    assert await _schema_version(sql_target.url) == SCHEMA_VERSION
    assert "ix_sessions_worst_turn_ms" in await _indexes(sql_target.url)


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
