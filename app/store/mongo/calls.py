"""Outbound calls and campaigns on MongoDB.

- `calls` (`_id` = call id): inserted with its `call.placed` event embedded, finished
  by one update conditional on `status: dialing`.
- `campaigns` (`_id` = campaign id, `rev`): status changes are conditional on `rev`.
- `campaign_contacts` (`_id` = `<campaign id>:<seq>`): a dial is leased with
  `find_one_and_update` conditional on the contact still being due, so two runners
  never hold one contact.

A campaign is created contacts first, then the campaign document (the commit point,
carrying its event): everything reads contacts through their campaign, so contacts of a
create that died before its commit point are never seen (nor dialled).

Variables are stored as given: their names are validated identifiers (no `$`, no `.`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument

from app.domain.calls import CallOutcome, CallRecord, Campaign, CampaignStatus, Contact, ContactStatus
from app.domain.events import Event
from app.store.mongo.client import Db, MongoDatabase, mapped, ms
from app.store.mongo.journal import PENDING, push_pending, relay_now

DIALING = ContactStatus.dialing.value
PENDING_CONTACT = ContactStatus.pending.value
_TIMES = ("created_at", "ended_at", "updated_at", "next_attempt_at", "lease_until")
_CAMPAIGN_META = ("id", "status", "total", "actor", "created_at", "updated_at")


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in values.items():
        if isinstance(v, ContactStatus | CallOutcome | CampaignStatus):
            v = v.value
        elif k in _TIMES and isinstance(v, datetime):
            v = ms(v)
        out[k] = v
    return out


def _call(doc: dict[str, Any]) -> CallRecord:
    d = {k: v for k, v in doc.items() if k != PENDING}
    d["id"] = d.pop("_id")
    return CallRecord.model_validate(d)


def _campaign(doc: dict[str, Any]) -> Campaign:
    return Campaign.model_validate({**doc["settings"], "id": doc["_id"], "status": doc["status"],
                                    "total": doc["total"], "actor": doc.get("actor"),
                                    "created_at": doc["created_at"], "updated_at": doc["updated_at"]})


def _contact(doc: dict[str, Any]) -> Contact:
    return Contact.model_validate({k: v for k, v in doc.items() if k in Contact.model_fields})


async def ensure_indexes(db: Db) -> None:
    await db.calls.create_index([("created_at", DESCENDING), ("_id", DESCENDING)], name="created")
    await db.calls.create_index([("campaign_id", ASCENDING), ("created_at", DESCENDING)], name="campaign")
    await db.campaigns.create_index([("created_at", DESCENDING), ("_id", DESCENDING)], name="created")
    await db.campaigns.create_index([("status", ASCENDING)], name="status")
    await db.campaign_contacts.create_index([("campaign_id", ASCENDING), ("seq", ASCENDING)], unique=True,
                                            name="campaign_seq_unique")
    await db.campaign_contacts.create_index(
        [("campaign_id", ASCENDING), ("status", ASCENDING), ("next_attempt_at", ASCENDING)], name="due")
    for coll in ("calls", "campaigns"):
        await db[coll].create_index([(f"{PENDING}.id", ASCENDING)], sparse=True, name="pending_events")


class MongoCalls:
    def __init__(self, mdb: MongoDatabase) -> None:
        self.mdb = mdb

    @mapped
    async def insert(self, call: CallRecord, events: list[Event]) -> None:
        db = await self.mdb.ready()
        doc = _plain(call.model_dump(mode="python"))
        doc["_id"] = doc.pop("id")
        if events:
            doc[PENDING] = push_pending(events)[PENDING]["$each"]
        await db.calls.insert_one(doc)
        await relay_now(db, "calls", doc["_id"], events)

    @mapped
    async def finish(self, call_id: str, values: dict[str, Any], events: list[Event]) -> bool:
        db = await self.mdb.ready()
        update: dict[str, Any] = {"$set": _plain(values)}
        if events:
            update["$push"] = push_pending(events)
        res = await db.calls.update_one({"_id": call_id, "status": CallOutcome.dialing.value}, update)
        if not res.matched_count:
            return False
        await relay_now(db, "calls", call_id, events)
        return True

    @mapped
    async def get(self, call_id: str) -> CallRecord | None:
        db = await self.mdb.ready()
        doc = await db.calls.find_one({"_id": call_id})
        return None if doc is None else _call(doc)

    @mapped
    async def list(self, campaign_id: str | None, offset: int, limit: int) -> tuple[list[CallRecord], int]:
        db = await self.mdb.ready()
        q: dict[str, Any] = {} if campaign_id is None else {"campaign_id": campaign_id}
        total = await db.calls.count_documents(q)
        docs = await db.calls.find(q).sort([("created_at", DESCENDING), ("_id", DESCENDING)]).skip(
            offset).limit(limit).to_list()
        return [_call(d) for d in docs], total


class MongoCampaigns:
    def __init__(self, mdb: MongoDatabase) -> None:
        self.mdb = mdb

    @mapped
    async def create(self, campaign: Campaign, contacts: list[Contact], events: list[Event]) -> None:
        db = await self.mdb.ready()
        if contacts:
            docs = []
            for x in contacts:
                d = _plain(x.model_dump(mode="python"))
                d.update(_id=f"{x.campaign_id}:{x.seq}", lease_owner=None, lease_until=None)
                docs.append(d)
            await db.campaign_contacts.insert_many(docs, ordered=False)
        doc = {"_id": campaign.id, "rev": 0, "status": campaign.status.value, "total": campaign.total,
               "actor": campaign.actor, "created_at": ms(campaign.created_at), "updated_at": ms(campaign.updated_at),
               "settings": campaign.model_dump(mode="json", exclude=set(_CAMPAIGN_META))}
        if events:
            doc[PENDING] = push_pending(events)[PENDING]["$each"]
        await db.campaigns.insert_one(doc)  # the commit point
        await relay_now(db, "campaigns", campaign.id, events)

    @mapped
    async def get(self, campaign_id: str) -> tuple[Campaign, int] | None:
        db = await self.mdb.ready()
        doc = await db.campaigns.find_one({"_id": campaign_id})
        return None if doc is None else (_campaign(doc), int(doc.get("rev", 0)))

    @mapped
    async def page(self, offset: int, limit: int) -> tuple[list[Campaign], int]:
        db = await self.mdb.ready()
        total = await db.campaigns.count_documents({})
        docs = await db.campaigns.find({}).sort([("created_at", DESCENDING), ("_id", DESCENDING)]).skip(
            offset).limit(limit).to_list()
        return [_campaign(d) for d in docs], total

    @mapped
    async def running(self) -> list[Campaign]:
        db = await self.mdb.ready()
        docs = await db.campaigns.find({"status": CampaignStatus.running.value}).sort("created_at", ASCENDING).to_list()
        return [_campaign(d) for d in docs]

    @mapped
    async def set_status(self, campaign: Campaign, rev: int, events: list[Event]) -> bool:
        db = await self.mdb.ready()
        update: dict[str, Any] = {"$set": {"status": campaign.status.value, "updated_at": ms(campaign.updated_at),
                                           "rev": rev + 1}}
        if events:
            update["$push"] = push_pending(events)
        res = await db.campaigns.update_one({"_id": campaign.id, "rev": rev}, update)
        if not res.matched_count:
            return False
        await relay_now(db, "campaigns", campaign.id, events)
        return True

    @mapped
    async def progress(self, campaign_id: str) -> tuple[dict[str, int], int]:
        db = await self.mdb.ready()
        rows = await (await db.campaign_contacts.aggregate([
            {"$match": {"campaign_id": campaign_id}},
            {"$group": {"_id": "$status", "n": {"$sum": 1}, "attempts": {"$sum": "$attempts"}}},
        ])).to_list()
        return {r["_id"]: int(r["n"]) for r in rows}, sum(int(r["attempts"]) for r in rows)

    @mapped
    async def contacts(
        self, campaign_id: str, status: ContactStatus | None, offset: int, limit: int
    ) -> tuple[list[Contact], int]:
        db = await self.mdb.ready()
        q: dict[str, Any] = {"campaign_id": campaign_id}
        if status is not None:
            q["status"] = status.value
        total = await db.campaign_contacts.count_documents(q)
        docs = await db.campaign_contacts.find(q).sort("seq", ASCENDING).skip(offset).limit(limit).to_list()
        return [_contact(d) for d in docs], total

    @mapped
    async def claim(
        self, campaign_id: str, token: str, now: datetime, lease_until: datetime, limit: int, cap: int
    ) -> list[Contact]:
        db = await self.mdb.ready()
        now_ms = ms(now)
        live = await db.campaign_contacts.count_documents(
            {"campaign_id": campaign_id, "status": DIALING, "lease_until": {"$gte": now_ms}})
        due = {"campaign_id": campaign_id, "$or": [
            {"status": PENDING_CONTACT, "$or": [{"next_attempt_at": None}, {"next_attempt_at": {"$lte": now_ms}}]},
            {"status": DIALING, "lease_until": {"$lt": now_ms}},
        ]}
        taken = []
        for _ in range(max(0, min(limit, cap - live))):
            doc = await db.campaign_contacts.find_one_and_update(
                due, {"$set": {"status": DIALING, "lease_owner": token, "lease_until": ms(lease_until),
                               "updated_at": now_ms}},
                sort=[("seq", ASCENDING)], return_document=ReturnDocument.AFTER)
            if doc is None:
                break
            taken.append(_contact(doc))
        return taken

    @mapped
    async def release(self, campaign_id: str, seq: int, token: str, values: dict[str, Any]) -> bool:
        db = await self.mdb.ready()
        res = await db.campaign_contacts.update_one(
            {"campaign_id": campaign_id, "seq": seq, "lease_owner": token, "status": DIALING},
            {"$set": {**_plain(values), "lease_owner": None, "lease_until": None}})
        return bool(res.matched_count)
