"""Webhook endpoints and deliveries on MongoDB.

`webhooks` (`_id` = endpoint id): every write is one conditional document write (on
`rev`) carrying its journal events (`pending_events`, relayed after). A delete first
marks the document `deleted` with its event (the commit point: readers skip it), then
relays, drops the deliveries and the document; the journal sweep finishes a delete a
crash interrupted (`finish_deletes`).

`webhook_deliveries` (`_id` = delivery id, unique `(event_id, webhook_id)`): an attempt
is claimed with `find_one_and_update` conditional on the attempt count and the lease,
so two processes never hold the same attempt.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import BulkWriteError

from app.domain.events import Event
from app.domain.webhooks import Delivery, DeliveryStatus, StoredWebhook
from app.store.backend import DeliveryInFlight
from app.store.mongo.client import Db, MongoDatabase, mapped, ms
from app.store.mongo.journal import PENDING, embedded, mark_deleted, push_pending, relay_now

_LIVE = {"deleted": {"$ne": True}}
_HOOK_TIMES = ("created_at", "updated_at", "previous_secret_expires_at")
_DELIVERY_TIMES = ("next_attempt_at", "window_ends_at", "last_attempt_at", "delivered_at", "created_at")


def _ms_fields(values: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: ms(v) if k in names and isinstance(v, datetime) else v for k, v in values.items()}


def _hook_doc(hook: StoredWebhook) -> dict[str, Any]:
    doc = _ms_fields(hook.model_dump(mode="python"), _HOOK_TIMES)
    doc["_id"] = doc.pop("id")
    return doc


def _hook(doc: dict[str, Any]) -> StoredWebhook:
    d = {k: v for k, v in doc.items() if k not in ("rev", "deleted", PENDING)}
    d["id"] = d.pop("_id")
    return StoredWebhook.model_validate(d)


def _delivery_doc(x: Delivery) -> dict[str, Any]:
    doc = _ms_fields(x.model_dump(mode="python"), _DELIVERY_TIMES)
    doc["_id"] = doc.pop("id")
    doc["status"] = x.status.value
    doc["lease_owner"] = None
    doc["lease_until"] = None
    return doc


def _delivery(doc: dict[str, Any]) -> Delivery:
    d = {k: v for k, v in doc.items() if k not in ("lease_owner", "lease_until")}
    d["id"] = d.pop("_id")
    return Delivery.model_validate(d)


async def ensure_indexes(db: Db) -> None:
    await db.webhook_deliveries.create_index(
        [("event_id", ASCENDING), ("webhook_id", ASCENDING)], unique=True, name="event_webhook_unique")
    await db.webhook_deliveries.create_index(
        [("webhook_id", ASCENDING), ("status", ASCENDING), ("next_attempt_at", ASCENDING)], name="due")
    await db.webhook_deliveries.create_index([("created_at", DESCENDING), ("_id", ASCENDING)], name="created")
    await db.webhooks.create_index([(f"{PENDING}.id", ASCENDING)], sparse=True, name="pending_events")


class MongoWebhooks:
    def __init__(self, mdb: MongoDatabase) -> None:
        self.mdb = mdb

    @mapped
    async def create(self, hook: StoredWebhook, rev: int, events: list[Event]) -> None:
        db = await self.mdb.ready()
        doc = {**_hook_doc(hook), "rev": rev}
        if events:
            doc[PENDING] = embedded(events)
        await db.webhooks.insert_one(doc)
        await relay_now(db, "webhooks", hook.id, events)

    @mapped
    async def get(self, webhook_id: str) -> tuple[StoredWebhook, int] | None:
        db = await self.mdb.ready()
        doc = await db.webhooks.find_one({"_id": webhook_id, **_LIVE})
        return None if doc is None else (_hook(doc), int(doc.get("rev", 0)))

    @mapped
    async def replace(self, hook: StoredWebhook, rev: int, events: list[Event]) -> bool:
        db = await self.mdb.ready()
        values = {k: v for k, v in _hook_doc(hook).items() if k != "_id"}
        update: dict[str, Any] = {"$set": {**values, "rev": rev + 1}}
        if events:
            update["$push"] = push_pending(events)
        res = await db.webhooks.update_one({"_id": hook.id, "rev": rev, **_LIVE}, update)
        if not res.matched_count:
            return False
        await relay_now(db, "webhooks", hook.id, events)
        return True

    @mapped
    async def delete(self, webhook_id: str, events: list[Event]) -> bool:
        db = await self.mdb.ready()
        if not await mark_deleted(db, "webhooks", webhook_id, events):
            return False
        await self._remove(db, webhook_id)
        return True

    @staticmethod
    async def _remove(db: Db, webhook_id: str) -> None:
        await db.webhook_deliveries.delete_many({"webhook_id": webhook_id})
        await db.webhooks.delete_one({"_id": webhook_id, "deleted": True, f"{PENDING}.id": {"$exists": False}})

    async def finish_deletes(self, db: Db) -> None:
        """Part of the journal sweep (after the relay): remove endpoints whose delete
        committed but did not finish."""
        async for doc in db.webhooks.find({"deleted": True}, {"_id": 1}):
            await self._remove(db, doc["_id"])

    @mapped
    async def all(self) -> list[StoredWebhook]:
        db = await self.mdb.ready()
        docs = await db.webhooks.find(_LIVE).sort([("created_at", ASCENDING), ("_id", ASCENDING)]).to_list()
        return [_hook(doc) for doc in docs]


class MongoDeliveries:
    def __init__(self, mdb: MongoDatabase) -> None:
        self.mdb = mdb

    @mapped
    async def add(self, deliveries: list[Delivery]) -> int:
        if not deliveries:
            return 0
        db = await self.mdb.ready()
        try:
            res = await db.webhook_deliveries.insert_many([_delivery_doc(x) for x in deliveries], ordered=False)
            return len(res.inserted_ids)
        except BulkWriteError as e:
            errors = e.details.get("writeErrors", [])
            if any(err.get("code") != 11000 for err in errors):
                raise
            return int(e.details.get("nInserted", len(deliveries) - len(errors)))

    @mapped
    async def claim(
        self, webhook_id: str, now: datetime, owner: str, lease_until: datetime, limit: int
    ) -> list[Delivery]:
        db = await self.mdb.ready()
        now = ms(now)
        due = {"webhook_id": webhook_id, "status": DeliveryStatus.pending.value, "next_attempt_at": {"$lte": now},
               "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]}
        picked = await db.webhook_deliveries.find(due, {"_id": 1, "attempts": 1}).sort(
            "next_attempt_at", ASCENDING).limit(limit).to_list()
        won = []
        for p in picked:
            doc = await db.webhook_deliveries.find_one_and_update(
                {**due, "_id": p["_id"], "attempts": p["attempts"]},
                {"$set": {"lease_owner": owner, "lease_until": ms(lease_until), "last_attempt_at": now},
                 "$inc": {"attempts": 1}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                won.append(_delivery(doc))
        return won

    @mapped
    async def finish(self, delivery_id: str, owner: str, attempt: int, values: dict[str, Any]) -> bool:
        db = await self.mdb.ready()
        res = await db.webhook_deliveries.update_one(
            {"_id": delivery_id, "lease_owner": owner, "attempts": attempt},
            {"$set": {**_ms_fields(values, _DELIVERY_TIMES), "lease_owner": None, "lease_until": None}},
        )
        return bool(res.matched_count)

    @mapped
    async def get(self, delivery_id: str) -> Delivery | None:
        db = await self.mdb.ready()
        doc = await db.webhook_deliveries.find_one({"_id": delivery_id})
        return None if doc is None else _delivery(doc)

    @mapped
    async def resend(self, delivery_id: str, now: datetime, window_ends_at: datetime) -> Delivery | None:
        db = await self.mdb.ready()
        now = ms(now)
        doc = await db.webhook_deliveries.find_one({"_id": delivery_id})
        if doc is None:
            return None
        lease = doc.get("lease_until")
        if lease is not None and lease >= now and doc["status"] == DeliveryStatus.pending.value:
            raise DeliveryInFlight
        doc = await db.webhook_deliveries.find_one_and_update(
            {"_id": delivery_id, "attempts": doc["attempts"]},
            {"$set": {"status": DeliveryStatus.pending.value, "next_attempt_at": now,
                      "window_ends_at": ms(window_ends_at), "lease_owner": None, "lease_until": None}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:  # an attempt started meanwhile
            raise DeliveryInFlight
        return _delivery(doc)

    @mapped
    async def count_due(self, now: datetime) -> int:
        db = await self.mdb.ready()
        enabled = [d["_id"] async for d in db.webhooks.find({**_LIVE, "enabled": True}, {"_id": 1})]
        return int(await db.webhook_deliveries.count_documents({
            "webhook_id": {"$in": enabled}, "status": DeliveryStatus.pending.value,
            "next_attempt_at": {"$lte": ms(now)}}))

    @mapped
    async def list(
        self, webhook_id: str | None, status: DeliveryStatus | None, offset: int, limit: int
    ) -> tuple[list[Delivery], int]:
        db = await self.mdb.ready()
        q: dict[str, Any] = {}
        if webhook_id is not None:
            q["webhook_id"] = webhook_id
        if status is not None:
            q["status"] = status.value
        total = await db.webhook_deliveries.count_documents(q)
        if limit <= 0 or offset >= total:
            return [], total
        docs = await db.webhook_deliveries.find(q).sort([("created_at", DESCENDING), ("_id", ASCENDING)]).skip(
            max(offset, 0)).limit(limit).to_list()
        return [_delivery(doc) for doc in docs], total


__all__ = ["MongoDeliveries", "MongoWebhooks", "ensure_indexes"]
