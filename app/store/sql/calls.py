"""Outbound calls and campaigns on SQL: `calls` (a row per dial), `campaigns` (settings as
JSON, status under a revision check) and `campaign_contacts` (a row per contact; a dial
is leased by a conditional UPDATE, like webhook deliveries and analyses)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.domain.calls import CallOutcome, CallRecord, Campaign, CampaignStatus, Contact, ContactStatus
from app.domain.events import Event
from app.store.sql.database import SQLDatabase
from app.store.sql.journal import insert_events
from app.store.sql.tables import calls_t, campaigns_t, contacts_t

c_, cp, ct = calls_t, campaigns_t, contacts_t
_CALL_COLS = tuple(CallRecord.model_fields)
_CONTACT_COLS = tuple(Contact.model_fields)
DIALING = ContactStatus.dialing.value
PENDING = ContactStatus.pending.value


def _call(row: Any) -> CallRecord:
    return CallRecord.model_validate({k: getattr(row, k) for k in _CALL_COLS})


def _campaign(row: Any) -> Campaign:
    return Campaign.model_validate({**row.settings, "id": row.id, "status": row.status, "total": row.total,
                                    "actor": row.actor, "created_at": row.created_at, "updated_at": row.updated_at})


def _contact(row: Any) -> Contact:
    return Contact.model_validate({k: getattr(row, k) for k in _CONTACT_COLS})


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.value if isinstance(v, ContactStatus | CallOutcome | CampaignStatus) else v
            for k, v in values.items()}


class SQLCalls:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db

    async def insert(self, call: CallRecord, events: list[Event]) -> None:
        def run(c: Connection) -> None:
            c.execute(c_.insert().values(_plain(call.model_dump(mode="python"))))
            insert_events(c, events)

        await self._db.write(run)

    async def finish(self, call_id: str, values: dict[str, Any], events: list[Event]) -> bool:
        def run(c: Connection) -> bool:
            res = c.execute(c_.update().where(c_.c.id == call_id, c_.c.status == CallOutcome.dialing.value)
                            .values(_plain(values)))
            if res.rowcount != 1:
                return False
            insert_events(c, events)
            return True

        return await self._db.write(run)

    async def get(self, call_id: str) -> CallRecord | None:
        row = await self._db.read(lambda c: c.execute(sa.select(c_).where(c_.c.id == call_id)).first())
        return None if row is None else _call(row)

    async def list(self, campaign_id: str | None, offset: int, limit: int) -> tuple[list[CallRecord], int]:
        where = [c_.c.campaign_id == campaign_id] if campaign_id is not None else []

        def run(c: Connection) -> tuple[list[CallRecord], int]:
            total = int(c.scalar(sa.select(sa.func.count()).select_from(c_).where(*where)) or 0)
            rows = c.execute(sa.select(c_).where(*where).order_by(c_.c.created_at.desc(), c_.c.id.desc())
                             .offset(offset).limit(limit)).all()
            return [_call(r) for r in rows], total

        return await self._db.read(run)


class SQLCampaigns:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db

    async def create(self, campaign: Campaign, contacts: list[Contact], events: list[Event]) -> None:
        settings = campaign.model_dump(mode="json", exclude={"id", "status", "total", "actor", "created_at",
                                                             "updated_at"})
        rows = [_plain(x.model_dump(mode="python")) for x in contacts]

        def run(c: Connection) -> None:
            c.execute(cp.insert().values(id=campaign.id, rev=0, status=campaign.status.value, settings=settings,
                                         total=campaign.total, actor=campaign.actor,
                                         created_at=campaign.created_at, updated_at=campaign.updated_at))
            if rows:
                c.execute(ct.insert(), rows)
            insert_events(c, events)

        await self._db.write(run)

    async def get(self, campaign_id: str) -> tuple[Campaign, int] | None:
        row = await self._db.read(lambda c: c.execute(sa.select(cp).where(cp.c.id == campaign_id)).first())
        return None if row is None else (_campaign(row), int(row.rev))

    async def page(self, offset: int, limit: int) -> tuple[list[Campaign], int]:
        def run(c: Connection) -> tuple[list[Campaign], int]:
            total = int(c.scalar(sa.select(sa.func.count()).select_from(cp)) or 0)
            rows = c.execute(sa.select(cp).order_by(cp.c.created_at.desc(), cp.c.id.desc())
                             .offset(offset).limit(limit)).all()
            return [_campaign(r) for r in rows], total

        return await self._db.read(run)

    async def running(self) -> list[Campaign]:
        rows = await self._db.read(lambda c: c.execute(
            sa.select(cp).where(cp.c.status == CampaignStatus.running.value).order_by(cp.c.created_at)).all())
        return [_campaign(r) for r in rows]

    async def set_status(self, campaign: Campaign, rev: int, events: list[Event]) -> bool:
        def run(c: Connection) -> bool:
            res = c.execute(cp.update().where(cp.c.id == campaign.id, cp.c.rev == rev).values(
                rev=rev + 1, status=campaign.status.value, updated_at=campaign.updated_at))
            if res.rowcount != 1:
                return False
            insert_events(c, events)
            return True

        return await self._db.write(run)

    async def progress(self, campaign_id: str) -> tuple[dict[str, int], int]:
        def run(c: Connection) -> tuple[dict[str, int], int]:
            rows = c.execute(sa.select(ct.c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(ct.c.attempts), 0))
                             .where(ct.c.campaign_id == campaign_id).group_by(ct.c.status)).all()
            return {r[0]: int(r[1]) for r in rows}, sum(int(r[2]) for r in rows)

        return await self._db.read(run)

    async def contacts(
        self, campaign_id: str, status: ContactStatus | None, offset: int, limit: int
    ) -> tuple[list[Contact], int]:
        where = [ct.c.campaign_id == campaign_id]
        if status is not None:
            where.append(ct.c.status == status.value)

        def run(c: Connection) -> tuple[list[Contact], int]:
            total = int(c.scalar(sa.select(sa.func.count()).select_from(ct).where(*where)) or 0)
            rows = c.execute(sa.select(ct).where(*where).order_by(ct.c.seq).offset(offset).limit(limit)).all()
            return [_contact(r) for r in rows], total

        return await self._db.read(run)

    async def claim(
        self, campaign_id: str, token: str, now: datetime, lease_until: datetime, limit: int, cap: int
    ) -> list[Contact]:
        due = sa.or_(
            sa.and_(ct.c.status == PENDING, sa.or_(ct.c.next_attempt_at.is_(None), ct.c.next_attempt_at <= now)),
            sa.and_(ct.c.status == DIALING, ct.c.lease_until < now),
        )
        live = sa.select(sa.func.count()).select_from(ct).where(
            ct.c.campaign_id == campaign_id, ct.c.status == DIALING, ct.c.lease_until >= now)
        pick = sa.select(ct.c.seq).where(ct.c.campaign_id == campaign_id, due).order_by(ct.c.seq)
        if not self._db.sqlite:
            pick = pick.with_for_update(skip_locked=True)

        def run(c: Connection) -> list[Contact]:
            # SQLite: the write transaction holds the database lock (BEGIN IMMEDIATE), so
            # the count and the takes are one step for every claimer. PostgreSQL: rows are
            # taken FOR UPDATE SKIP LOCKED; two claimers may each see the other's leases
            # only after commit, so the cap can be passed by at most one claim's worth.
            room = min(limit, cap - int(c.scalar(live) or 0))
            if room <= 0:
                return []
            taken = []
            for seq in c.execute(pick.limit(room)).scalars().all():
                res = c.execute(ct.update().where(ct.c.campaign_id == campaign_id, ct.c.seq == seq, due).values(
                    status=DIALING, lease_owner=token, lease_until=lease_until, updated_at=now))
                if res.rowcount:
                    taken.append(seq)
            if not taken:
                return []
            rows = c.execute(sa.select(ct).where(ct.c.campaign_id == campaign_id, ct.c.seq.in_(taken))
                             .order_by(ct.c.seq)).all()
            return [_contact(r) for r in rows]

        return await self._db.write(run)

    async def release(self, campaign_id: str, seq: int, token: str, values: dict[str, Any]) -> bool:
        stmt = ct.update().where(ct.c.campaign_id == campaign_id, ct.c.seq == seq, ct.c.lease_owner == token,
                                 ct.c.status == DIALING).values(lease_owner=None, lease_until=None, **_plain(values))
        return bool(await self._db.write(lambda c: c.execute(stmt).rowcount))
