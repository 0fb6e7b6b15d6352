"""Tests stored with an agent and their runs, on SQL: `agent_tests` (a row per
`(agent_id, name)`, the primary key deciding between racing creators) and `test_runs`
(a row per run; the whole `TestRun` as JSON beside the columns we filter on)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from app.domain.agent_tests import AgentTest, TestRun, TestRunStatus
from app.domain.events import Event
from app.store.sql.database import SQLDatabase
from app.store.sql.journal import insert_events
from app.store.sql.tables import agent_tests_t, test_runs_t

t, r = agent_tests_t, test_runs_t
_UNFINISHED = (TestRunStatus.queued.value, TestRunStatus.running.value)


def _test(row: Any) -> AgentTest:
    return AgentTest(agent_id=row.agent_id, name=row.name, content=row.content,
                     created_at=row.created_at, updated_at=row.updated_at)


def _run_values(run: TestRun) -> dict[str, Any]:
    return {"id": run.id, "agent_id": run.agent_id, "version": run.version, "status": run.status.value,
            "created_at": run.created_at, "data": run.model_dump(mode="json")}


class SQLAgentTests:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db

    async def create(self, test: AgentTest, events: list[Event]) -> bool:
        def run(c: Connection) -> bool:
            if c.execute(sa.select(t.c.name).where(t.c.agent_id == test.agent_id, t.c.name == test.name)).first():
                return False
            c.execute(t.insert().values(**test.model_dump()))
            insert_events(c, events)
            return True

        try:
            return await self._db.write(run)
        except IntegrityError:  # a concurrent creator committed the same name first
            return False

    async def replace(self, test: AgentTest, events: list[Event]) -> bool:
        def run(c: Connection) -> bool:
            res = c.execute(t.update().where(t.c.agent_id == test.agent_id, t.c.name == test.name)
                            .values(content=test.content, updated_at=test.updated_at))
            if res.rowcount != 1:
                return False
            insert_events(c, events)
            return True

        return await self._db.write(run)

    async def delete(self, agent_id: str, name: str, events: list[Event]) -> bool:
        def run(c: Connection) -> bool:
            if c.execute(t.delete().where(t.c.agent_id == agent_id, t.c.name == name)).rowcount != 1:
                return False
            insert_events(c, events)
            return True

        return await self._db.write(run)

    async def get(self, agent_id: str, name: str) -> AgentTest | None:
        row = await self._db.read(
            lambda c: c.execute(sa.select(t).where(t.c.agent_id == agent_id, t.c.name == name)).first())
        return None if row is None else _test(row)

    async def list(self, agent_id: str) -> list[AgentTest]:
        rows = await self._db.read(
            lambda c: c.execute(sa.select(t).where(t.c.agent_id == agent_id).order_by(t.c.name)).all())
        return [_test(row) for row in rows]


    async def forget_agent(self, agent_id: str) -> None:
        def run(c: Connection) -> None:
            c.execute(t.delete().where(t.c.agent_id == agent_id))
            c.execute(r.delete().where(r.c.agent_id == agent_id))

        await self._db.write(run)


class SQLTestRuns:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db

    async def add(self, run: TestRun) -> None:
        await self._db.write(lambda c: c.execute(r.insert().values(**_run_values(run))))

    async def save(self, run: TestRun) -> bool:
        values = _run_values(run)
        stmt = r.update().where(r.c.id == run.id, r.c.status.in_(_UNFINISHED)).values(
            status=values["status"], data=values["data"])
        return bool(await self._db.write(lambda c: c.execute(stmt).rowcount == 1))

    async def get(self, run_id: str) -> TestRun | None:
        row = await self._db.read(lambda c: c.execute(sa.select(r.c.data).where(r.c.id == run_id)).first())
        return None if row is None else TestRun.model_validate(row.data)

    async def list(self, agent_id: str, version: int | None, limit: int) -> list[TestRun]:
        q = sa.select(r.c.data).where(r.c.agent_id == agent_id)
        if version is not None:
            q = q.where(r.c.version == version)
        q = q.order_by(r.c.created_at.desc(), r.c.id.desc()).limit(limit)
        rows = await self._db.read(lambda c: c.execute(q).all())
        return [TestRun.model_validate(row.data) for row in rows]

    async def abandon_unfinished(self, now: datetime, reason: str, created_before: datetime | None) -> int:
        q = sa.select(r.c.id, r.c.data).where(r.c.status.in_(_UNFINISHED))
        if created_before is not None:
            q = q.where(r.c.created_at < created_before)

        def run(c: Connection) -> int:
            rows = c.execute(q).all()
            for row in rows:
                done = TestRun.model_validate(row.data).model_copy(
                    update={"status": TestRunStatus.abandoned, "finished_at": now, "error": reason})
                c.execute(r.update().where(r.c.id == row.id, r.c.status.in_(_UNFINISHED))
                          .values(status=done.status.value, data=done.model_dump(mode="json")))
            return len(rows)

        return await self._db.write(run)
