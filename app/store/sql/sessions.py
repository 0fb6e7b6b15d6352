"""Session records on SQL: a row per session, a row per turn (unique (session_id, seq)).

A batch is one transaction (all or nothing): its runs merged into one row INSERT or
UPDATE per start plus the turn inserts. There is no existence SELECT in front of a
write: the UPDATE's rowcount (or the read a data merge needs anyway) tells a missing
session, and a turns-only batch inserts its first turn with `INSERT ... SELECT ... WHERE
EXISTS (session)` and looks only when nothing was inserted (a missing session, or a
retried turn already stored)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from app.domain import SessionOrder, SessionRecord, SessionStatus, Turn
from app.domain.rollout import ArmSession
from app.store.backend import Applied, Ended, NoSession, SessionExists
from app.store.session_rules import ARM_FIELDS, QUEUE_FIELDS, Run, merge_runs, project_arm_session, stored_json
from app.store.sql.database import SQLDatabase
from app.store.sql.journal import insert_events
from app.store.sql.tables import sessions_t, turns_t

s, t = sessions_t, turns_t


def _turn_values(session_id: str, turn: Turn) -> dict[str, Any]:
    return dict(session_id=session_id, seq=turn.seq, role=turn.role, text=turn.text, at=turn.at,
                agent_id=turn.agent_id)


def _record(row: Any, turns: list[Turn] | None = None) -> SessionRecord:
    doc = {k: v for k, v in row._mapping.items() if k not in QUEUE_FIELDS}
    doc["turns"] = turns or []
    doc["collected"] = doc.get("collected") or {}
    doc["handoffs"] = doc.get("handoffs") or []
    doc["metrics"] = doc.get("metrics") or []
    doc["usage"] = doc.get("usage") or {}
    doc["events"] = doc.get("events") or []
    return SessionRecord.model_validate(doc)


class SQLSessions:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db
        # The dialect's INSERT, which has ON CONFLICT DO NOTHING (None: plain inserts).
        self._insert: Callable[[sa.Table], Any] | None = (
            {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(db.dialect)
        )

    def _turns_stmt(self, src: sa.Select[Any] | None = None) -> Any:
        """A turn insert that ignores a retried turn (values bound at execute time, or from `src`)."""
        if self._insert is None:  # pragma: no cover - other backends: duplicates raise IntegrityError
            return t.insert() if src is None else t.insert().from_select(list(src.selected_columns.keys()), src)
        stmt = self._insert(t) if src is None else self._insert(t).from_select(list(src.selected_columns.keys()), src)
        return stmt.on_conflict_do_nothing(index_elements=["session_id", "seq"])

    def _apply_run(self, c: Connection, session_id: str, run: Run, applied: Applied) -> Applied:
        if run.start is not None:
            record = run.start
            doc = record.model_dump(mode="python", exclude={"turns", "usage", "analysis"})
            doc.update(stored_json(record))
            doc["status"] = record.status.value
            doc["handoffs"] = [x.model_dump(mode="json") for x in [*record.handoffs, *run.handoffs]]
            doc["collected"] = run.merged_collected(doc.get("collected") or {})
            doc["events"] = [e.model_dump(mode="json") for e in record.events]
            doc.update(run.fields)
            c.execute(s.insert().values(**doc))
            turns = [*record.turns, *run.turns]
            if turns:
                c.execute(self._turns_stmt(), [_turn_values(session_id, x) for x in turns])
            insert_events(c, run.events)
            return Applied(started=record, collected=doc["collected"] if run.data else None)

        values = dict(run.fields)
        merged: dict[str, Any] | None = None
        known = False
        if run.data or run.handoffs:
            cols = [col for col, need in ((s.c.collected, run.data), (s.c.handoffs, run.handoffs)) if need]
            stmt = sa.select(*cols).where(s.c.session_id == session_id)
            row = c.execute(stmt if self._db.sqlite else stmt.with_for_update()).first()
            if row is None:
                raise NoSession
            known = True
            if run.data:
                values["collected"] = merged = run.merged_collected(row.collected or {})
            if run.handoffs:
                values["handoffs"] = [*(row.handoffs or []), *(x.model_dump(mode="json") for x in run.handoffs)]
        if values:
            if c.execute(s.update().where(s.c.session_id == session_id).values(**values)).rowcount == 0:
                raise NoSession
            known = True
        turns = run.turns
        if turns and not known:
            first = _turn_values(session_id, turns[0])
            src = sa.select(*(sa.literal(val, t.c[k].type).label(k) for k, val in first.items())).where(
                sa.exists().where(s.c.session_id == session_id)
            )
            if c.execute(self._turns_stmt(src)).rowcount == 0 and c.scalar(
                sa.select(s.c.session_id).where(s.c.session_id == session_id)
            ) is None:
                raise NoSession
            turns = turns[1:]
        if turns:
            c.execute(self._turns_stmt(), [_turn_values(session_id, x) for x in turns])
        insert_events(c, run.events)
        return Applied(started=applied.started, collected=merged if merged is not None else applied.collected)

    async def apply(self, session_id: str, runs: list[Run]) -> Applied:
        def run(c: Connection) -> Applied:
            applied = Applied()
            for seg in merge_runs(runs):
                applied = self._apply_run(c, session_id, seg, applied)
            return applied

        try:
            return await self._db.write(run)
        except IntegrityError:
            raise SessionExists from None

    async def get(self, session_id: str) -> SessionRecord | None:
        def run(c: Connection) -> SessionRecord | None:
            row = c.execute(sa.select(s).where(s.c.session_id == session_id)).first()
            if row is None:
                return None
            rows = c.execute(sa.select(t).where(t.c.session_id == session_id).order_by(t.c.seq)).all()
            return _record(row, [Turn(seq=x.seq, role=x.role, text=x.text, at=x.at, agent_id=x.agent_id) for x in rows])

        return await self._db.read(run)

    async def arm_sessions(self, agent_id: str, since: datetime, limit: int) -> tuple[list[ArmSession], int]:
        cond = [s.c.agent_id == agent_id, s.c.started_at >= since, s.c.arm.is_not(None)]
        stmt = sa.select(*(s.c[f] for f in ARM_FIELDS)).where(*cond).order_by(s.c.started_at.desc()).limit(limit)
        count = sa.select(sa.func.count()).select_from(s).where(*cond)

        def run(c: Connection) -> tuple[list[ArmSession], int]:
            rows = c.execute(stmt).all()
            return [project_arm_session(dict(r._mapping)) for r in rows], int(c.scalar(count) or 0)

        return await self._db.read(run)

    async def list(
        self, agent_id: str | None, status: SessionStatus | None, since: datetime | None,
        until: datetime | None, order: SessionOrder, offset: int, limit: int,
    ) -> tuple[list[SessionRecord], int]:
        cond: list[Any] = []
        if agent_id is not None:
            cond.append(s.c.agent_id == agent_id)
        if status is not None:
            cond.append(s.c.status == status.value)
        if since is not None:
            cond.append(s.c.started_at >= since)
        if until is not None:
            cond.append(s.c.started_at < until)
        newest = (s.c.started_at.desc(), s.c.session_id)
        by = (s.c.worst_turn_ms.desc().nulls_last(), *newest) if order is SessionOrder.worst_turn else newest
        stmt = sa.select(s).where(*cond).order_by(*by).offset(offset).limit(limit)
        count = sa.select(sa.func.count()).select_from(s).where(*cond)

        def run(c: Connection) -> tuple[list[SessionRecord], int]:
            return [_record(x) for x in c.execute(stmt).all()], int(c.scalar(count) or 0)

        return await self._db.read(run)


class SQLLiveness:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db

    async def heartbeat(self, owner: str, now: datetime) -> int:
        stmt = s.update().where(s.c.owner == owner, s.c.status == SessionStatus.active.value).values(heartbeat_at=now)
        return await self._db.write(lambda c: int(c.execute(stmt).rowcount or 0))

    async def abandon(self, cutoff: datetime | None, reason: str, now: datetime, ended: Ended) -> int:
        cond = [s.c.status == SessionStatus.active.value]
        if cutoff is not None:
            cond.append(sa.func.coalesce(s.c.heartbeat_at, s.c.started_at) < cutoff)
        find = sa.select(s.c.session_id, s.c.agent_id).where(*cond)
        if not self._db.sqlite:
            find = find.with_for_update()  # the rows stay ours until the events are in

        def run(c: Connection) -> int:
            rows = c.execute(find).all()
            if not rows:
                return 0
            ids = [r.session_id for r in rows]
            n = 0
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                n += int(c.execute(s.update().where(s.c.session_id.in_(chunk), *cond).values(
                    status=SessionStatus.abandoned.value, end_reason=reason, ended_at=now)).rowcount or 0)
            insert_events(c, [ended(r.session_id, r.agent_id) for r in rows])
            return n

        return await self._db.write(run)
