"""The event journal on SQL: the `events` table. Writers insert their events with
`insert_events` inside the change's own transaction, so the journal needs no relay."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.domain.events import Event
from app.store.backend import EventFilter, JournalEntry
from app.store.event_rules import RENDERED_LATER
from app.store.sql.database import SQLDatabase
from app.store.sql.tables import events_t

e = events_t


def insert_events(c: Connection, events: list[Event]) -> None:
    """Part of the caller's transaction: the events commit (or roll back) with its change."""
    if events:
        c.execute(e.insert(), [
            dict(id=ev.id, type=ev.type, at=ev.at, agent_id=ev.agent_id, actor=ev.actor, note=ev.note,
                 data=ev.data, rendered=ev.type not in RENDERED_LATER, fanout_pending=True)
            for ev in events
        ])


def _entry(row: Any) -> JournalEntry:
    event = Event(id=row.id, type=row.type, at=row.at, agent_id=row.agent_id, actor=row.actor,
                  note=row.note, data=row.data or {})
    return JournalEntry(event, bool(row.rendered))


class SQLJournal:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db

    async def get(self, event_id: str) -> JournalEntry | None:
        row = await self._db.read(lambda c: c.execute(sa.select(e).where(e.c.id == event_id)).first())
        return None if row is None else _entry(row)

    async def unfanned(self, limit: int) -> list[JournalEntry]:
        stmt = sa.select(e).where(e.c.fanout_pending.is_(True)).order_by(e.c.seq).limit(limit)
        rows = await self._db.read(lambda c: c.execute(stmt).all())
        return [_entry(r) for r in rows]

    async def freeze(self, event_id: str, agent_id: str | None, data: dict[str, Any]) -> JournalEntry | None:
        def run(c: Connection) -> Any:
            c.execute(e.update().where(e.c.id == event_id, e.c.rendered.is_(False))
                      .values(data=data, agent_id=agent_id, rendered=True))
            return c.execute(sa.select(e).where(e.c.id == event_id)).first()

        row = await self._db.write(run)
        return None if row is None else _entry(row)

    async def fanned_out(self, event_ids: list[str]) -> None:
        stmt = e.update().where(e.c.id.in_(event_ids)).values(fanout_pending=False)
        await self._db.write(lambda c: c.execute(stmt))

    async def relay(self, grace_s: float) -> int:
        return 0  # events commit in the change's own transaction: nothing is ever left behind

    async def list(self, flt: EventFilter, offset: int, limit: int) -> tuple[list[Event], int]:
        cond: list[Any] = []
        if flt.types is not None:
            cond.append(e.c.type.in_(flt.types))
        if flt.agent_id is not None:
            cond.append(e.c.agent_id == flt.agent_id)
        if flt.actor is not None:
            cond.append(e.c.actor == flt.actor)
        if flt.since is not None:
            cond.append(e.c.at >= flt.since)
        if flt.until is not None:
            cond.append(e.c.at < flt.until)
        stmt = sa.select(e).where(*cond).order_by(e.c.at.desc(), e.c.seq.desc()).offset(offset).limit(limit)
        count = sa.select(sa.func.count()).select_from(e).where(*cond)

        def run(c: Connection) -> tuple[list[Event], int]:
            return [_entry(r).event for r in c.execute(stmt).all()], int(c.scalar(count) or 0)

        return await self._db.read(run)
