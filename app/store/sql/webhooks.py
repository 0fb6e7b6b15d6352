"""Webhook endpoints and deliveries on SQL: `webhooks` (a row per endpoint, replaced
whole under a revision check) and `webhook_deliveries` (a row per event and endpoint,
unique on the pair; an attempt is leased by a conditional UPDATE)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from app.domain.events import Event
from app.domain.webhooks import Delivery, DeliveryStatus, StoredWebhook
from app.store.backend import DeliveryInFlight
from app.store.sql.database import SQLDatabase
from app.store.sql.journal import insert_events
from app.store.sql.tables import deliveries_t, webhooks_t

w, d = webhooks_t, deliveries_t
_HOOK_COLS = ("id", "url", "events", "agent_id", "enabled", "description", "secret", "previous_secret",
              "previous_secret_expires_at", "disabled_reason", "created_at", "updated_at")
_DELIVERY_COLS = tuple(Delivery.model_fields)


def _hook_values(hook: StoredWebhook) -> dict[str, Any]:
    return {k: getattr(hook, k) for k in _HOOK_COLS}


def _hook(row: Any) -> StoredWebhook:
    return StoredWebhook.model_validate({k: getattr(row, k) for k in _HOOK_COLS})


def _delivery(row: Any) -> Delivery:
    return Delivery.model_validate({k: getattr(row, k) for k in _DELIVERY_COLS})


def _delivery_values(x: Delivery) -> dict[str, Any]:
    values = x.model_dump(mode="python")
    values["status"] = x.status.value
    return values


class SQLWebhooks:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db

    async def create(self, hook: StoredWebhook, rev: int, events: list[Event]) -> None:
        def run(c: Connection) -> None:
            c.execute(w.insert().values(rev=rev, **_hook_values(hook)))
            insert_events(c, events)

        await self._db.write(run)

    async def get(self, webhook_id: str) -> tuple[StoredWebhook, int] | None:
        row = await self._db.read(lambda c: c.execute(sa.select(w).where(w.c.id == webhook_id)).first())
        return None if row is None else (_hook(row), int(row.rev))

    async def replace(self, hook: StoredWebhook, rev: int, events: list[Event]) -> bool:
        def run(c: Connection) -> bool:
            res = c.execute(w.update().where(w.c.id == hook.id, w.c.rev == rev)
                            .values(rev=rev + 1, **_hook_values(hook)))
            if res.rowcount != 1:
                return False
            insert_events(c, events)
            return True

        return await self._db.write(run)

    async def delete(self, webhook_id: str, events: list[Event]) -> bool:
        def run(c: Connection) -> bool:
            if c.execute(w.delete().where(w.c.id == webhook_id)).rowcount == 0:
                return False
            c.execute(d.delete().where(d.c.webhook_id == webhook_id))
            insert_events(c, events)
            return True

        return await self._db.write(run)

    async def all(self) -> list[StoredWebhook]:
        rows = await self._db.read(lambda c: c.execute(sa.select(w).order_by(w.c.created_at, w.c.id)).all())
        return [_hook(r) for r in rows]


class SQLDeliveries:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db
        self._insert: Callable[[sa.Table], Any] | None = (
            {"sqlite": sqlite.insert, "postgresql": postgresql.insert}.get(db.dialect))

    async def add(self, deliveries: list[Delivery]) -> int:
        if not deliveries:
            return 0
        rows = [_delivery_values(x) for x in deliveries]
        assert self._insert is not None, f"no INSERT ... ON CONFLICT for {self._db.dialect}"
        stmt = self._insert(d).on_conflict_do_nothing(index_elements=["event_id", "webhook_id"])

        def run(c: Connection) -> int:
            return sum(int(c.execute(stmt, row).rowcount or 0) for row in rows)

        return await self._db.write(run)

    async def claim(
        self, webhook_id: str, now: datetime, owner: str, lease_until: datetime, limit: int
    ) -> list[Delivery]:
        free = sa.or_(d.c.lease_until.is_(None), d.c.lease_until < now)
        due = [d.c.webhook_id == webhook_id, d.c.status == DeliveryStatus.pending.value,
               d.c.next_attempt_at <= now, free]
        pick = sa.select(d.c.id, d.c.attempts).where(*due).order_by(d.c.next_attempt_at).limit(limit)

        def run(c: Connection) -> list[Any]:
            won = []
            for row in c.execute(pick).all():
                # the conditional update is the claim: a concurrent claimer's lease (or
                # attempt) makes it match nothing
                res = c.execute(d.update().where(d.c.id == row.id, d.c.attempts == row.attempts, *due[1:])
                                .values(lease_owner=owner, lease_until=lease_until, attempts=row.attempts + 1,
                                        last_attempt_at=now))
                if res.rowcount == 1:
                    won.append(row.id)
            if not won:
                return []
            return list(c.execute(sa.select(d).where(d.c.id.in_(won)).order_by(d.c.next_attempt_at)).all())

        return [_delivery(r) for r in await self._db.write(run)]

    async def finish(self, delivery_id: str, owner: str, attempt: int, values: dict[str, Any]) -> bool:
        stmt = (d.update().where(d.c.id == delivery_id, d.c.lease_owner == owner, d.c.attempts == attempt)
                .values(lease_owner=None, lease_until=None, **values))
        return bool(await self._db.write(lambda c: c.execute(stmt).rowcount == 1))

    async def get(self, delivery_id: str) -> Delivery | None:
        row = await self._db.read(lambda c: c.execute(sa.select(d).where(d.c.id == delivery_id)).first())
        return None if row is None else _delivery(row)

    async def resend(self, delivery_id: str, now: datetime, window_ends_at: datetime) -> Delivery | None:
        def run(c: Connection) -> Any:
            row = c.execute(sa.select(d).where(d.c.id == delivery_id)).first()
            if row is None:
                return None
            if row.lease_until is not None and row.lease_until >= now and row.status == DeliveryStatus.pending.value:
                raise DeliveryInFlight
            c.execute(d.update().where(d.c.id == delivery_id, d.c.attempts == row.attempts).values(
                status=DeliveryStatus.pending.value, next_attempt_at=now, window_ends_at=window_ends_at,
                lease_owner=None, lease_until=None))
            return c.execute(sa.select(d).where(d.c.id == delivery_id)).first()

        row = await self._db.write(run)
        return None if row is None else _delivery(row)

    async def count_due(self, now: datetime) -> int:
        stmt = (sa.select(sa.func.count()).select_from(d).join(w, w.c.id == d.c.webhook_id)
                .where(d.c.status == DeliveryStatus.pending.value, d.c.next_attempt_at <= now, w.c.enabled.is_(True)))
        return await self._db.read(lambda c: int(c.scalar(stmt) or 0))

    async def list(
        self, webhook_id: str | None, status: DeliveryStatus | None, offset: int, limit: int
    ) -> tuple[list[Delivery], int]:
        cond: list[Any] = []
        if webhook_id is not None:
            cond.append(d.c.webhook_id == webhook_id)
        if status is not None:
            cond.append(d.c.status == status.value)
        stmt = sa.select(d).where(*cond).order_by(d.c.created_at.desc(), d.c.id).offset(offset).limit(limit)
        count = sa.select(sa.func.count()).select_from(d).where(*cond)

        def run(c: Connection) -> tuple[list[Delivery], int]:
            return [_delivery(r) for r in c.execute(stmt).all()], int(c.scalar(count) or 0)

        return await self._db.read(run)
