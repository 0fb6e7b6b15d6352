"""The post-call analysis queue on SQL: conditional UPDATEs of a session row's queue
columns (`session_rules.QUEUE_FIELDS`).

A claim selects candidates, then takes each with an UPDATE that repeats the candidate
condition: on SQLite the write transaction holds the database lock (BEGIN IMMEDIATE), so
claimers take turns; on PostgreSQL the candidates are selected `FOR UPDATE SKIP LOCKED`,
so concurrent claimers pick disjoint rows instead of queueing on the same ones (and the
UPDATE's repeated condition would still refuse a row taken meanwhile)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.domain.analysis import AnalysisStatus
from app.domain.events import Event
from app.store.session_rules import queue_fields
from app.store.sql.database import SQLDatabase
from app.store.sql.journal import insert_events
from app.store.sql.tables import sessions_t

s = sessions_t
PENDING = AnalysisStatus.pending.value


def _free(now: datetime) -> list[Any]:
    return [
        s.c.analysis_status == PENDING,
        sa.or_(s.c.analysis_lease_until.is_(None), s.c.analysis_lease_until < now),
    ]


class SQLAnalysisQueue:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db

    async def claim(self, token: str, now: datetime, lease_until: datetime, limit: int) -> list[tuple[str, int]]:
        pick = sa.select(s.c.session_id).where(*_free(now)).order_by(s.c.started_at, s.c.session_id).limit(limit)
        if not self._db.sqlite:
            pick = pick.with_for_update(skip_locked=True)

        def run(c: Connection) -> list[tuple[str, int]]:
            taken: list[tuple[str, int]] = []
            for sid in c.execute(pick).scalars().all():
                stmt = s.update().where(s.c.session_id == sid, *_free(now)).values(
                    analysis_owner=token, analysis_lease_until=lease_until,
                    analysis_claims=sa.func.coalesce(s.c.analysis_claims, 0) + 1,
                )
                if c.execute(stmt).rowcount:
                    claims = c.scalar(sa.select(s.c.analysis_claims).where(s.c.session_id == sid))
                    taken.append((sid, int(claims or 0)))
            return taken

        return await self._db.write(run)

    async def _held(self, session_id: str, token: str, events: list[Event] | None = None, **values: Any) -> bool:
        stmt = s.update().where(
            s.c.session_id == session_id, s.c.analysis_owner == token, s.c.analysis_status == PENDING
        ).values(**values)

        def run(c: Connection) -> bool:
            if not c.execute(stmt).rowcount:
                return False
            insert_events(c, events or [])  # in the same transaction: no result without its event
            return True

        return await self._db.write(run)

    async def renew(self, session_id: str, token: str, lease_until: datetime) -> bool:
        return await self._held(session_id, token, analysis_lease_until=lease_until)

    async def finish(self, session_id: str, token: str, analysis: dict[str, Any], events: list[Event]) -> bool:
        fields = queue_fields(analysis)
        fields.pop("analysis_claims")  # kept: how many runs it took
        return await self._held(session_id, token, events, analysis=analysis, **fields)

    async def release(self, session_id: str, token: str) -> bool:
        return await self._held(session_id, token, analysis_owner=None, analysis_lease_until=None)
