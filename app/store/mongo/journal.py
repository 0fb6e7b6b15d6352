"""The event journal on MongoDB: the `events` collection, and the relay that fills it.

MongoDB gives no multi-document transaction here (package docstring), so an event
cannot be inserted "with" its change. Instead every write embeds its events in its own
commit-point document, in a `pending_events` array (the version document of an agent
write, the tombstone of a delete, the routes table, the session document), in the same
single-document write. Right after that write the writer *relays* them: inserts them
into `events` (`_id` = the event id, so a second relay is a no-op) and then pulls them
from the array. A process that dies in between leaves them embedded; `relay_sweep`
(run at start and periodically by the webhook dispatcher) finishes the job. So an event
exists exactly when its change committed, and reaches the journal at most one sweep
interval late after a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import BulkWriteError, PyMongoError

from app.domain.events import Event
from app.store.backend import EventFilter, JournalEntry
from app.store.event_rules import RENDERED_LATER
from app.store.mongo.client import Db, MongoDatabase, escape_keys, mapped, ms, unescape_keys

log = logging.getLogger(__name__)

PENDING = "pending_events"
"""The array of not-yet-relayed events in a commit-point document."""
HAS_PENDING = {f"{PENDING}.id": {"$exists": True}}
"""Filter: documents holding events still to relay (sparse index on `pending_events.id`)."""


def embedded(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Events as stored inside a commit-point document."""
    return [{"id": ev.id, "type": ev.type, "at": ms(ev.at), "agent_id": ev.agent_id, "actor": ev.actor,
             "note": ev.note, "data": escape_keys(ev.data)} for ev in events]


def push_pending(events: Sequence[Event]) -> dict[str, Any]:
    """The `$push` clause adding `events` to a document's pending array."""
    return {PENDING: {"$each": embedded(events)}}


def _journal_doc(emb: Mapping[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in emb.items() if k != "id"}
    doc["_id"] = emb["id"]
    doc["rendered"] = emb["type"] not in RENDERED_LATER
    doc["fanout"] = True
    return doc


async def relay(db: Db, collection: str, doc_id: Any, pending: Sequence[Mapping[str, Any]]) -> int:
    """Copy `pending` (embedded in `collection`/`doc_id`) into the journal, then drop them
    from the document. Idempotent: an event already in the journal is skipped."""
    if not pending:
        return 0
    docs = [_journal_doc(p) for p in pending]
    try:
        await db.events.insert_many(docs, ordered=False)
    except BulkWriteError as e:
        if any(err.get("code") != 11000 for err in e.details.get("writeErrors", [])):
            raise
    await db[collection].update_one({"_id": doc_id}, {"$pull": {PENDING: {"id": {"$in": [p["id"] for p in pending]}}}})
    return len(pending)


async def relay_now(db: Db, collection: str, doc_id: Any, events: Sequence[Event]) -> None:
    """The writer's own relay, right after its commit. The change is committed whatever
    happens here: a failure is logged and left to the sweep, never raised to the caller."""
    if not events:
        return
    try:
        await relay(db, collection, doc_id, embedded(events))
    except PyMongoError as e:
        log.warning("journal: %d event(s) of %s %r committed but not relayed yet (%s); the sweep will",
                    len(events), collection, doc_id, type(e).__name__)


async def mark_deleted(db: Db, collection: str, doc_id: Any, events: Sequence[Event]) -> bool:
    """The commit point of a delete: one write marks the live document deleted with its
    events embedded, then they are relayed. False: no live document. The caller then
    removes the document (a crash before that leaves the sweep to finish it)."""
    update: dict[str, Any] = {"$set": {"deleted": True}}
    if events:
        update["$push"] = push_pending(events)
    res = await db[collection].update_one({"_id": doc_id, "deleted": {"$ne": True}}, update)
    if not res.matched_count:
        return False
    await relay_now(db, collection, doc_id, events)
    return True


async def relay_found(db: Db, collection: str, flt: Mapping[str, Any]) -> int:
    """Relay what documents matching `flt` (and holding pending events) carry."""
    n = 0
    async for doc in db[collection].find({**flt, **HAS_PENDING}, {PENDING: 1}):
        n += await relay(db, collection, doc["_id"], doc.get(PENDING) or [])
    return n


def _entry(doc: Mapping[str, Any]) -> JournalEntry:
    event = Event(id=doc["_id"], type=doc["type"], at=doc["at"], agent_id=doc.get("agent_id"),
                  actor=doc.get("actor"), note=doc.get("note"), data=unescape_keys(doc.get("data") or {}))
    return JournalEntry(event, bool(doc.get("rendered", True)))


async def ensure_indexes(db: Db) -> None:
    await db.events.create_index([("at", DESCENDING), ("_id", DESCENDING)], name="at")
    await db.events.create_index([("type", ASCENDING), ("at", DESCENDING)], name="type_at")
    await db.events.create_index([("agent_id", ASCENDING), ("at", DESCENDING)], name="agent_at")
    await db.events.create_index([("actor", ASCENDING), ("at", DESCENDING)], name="actor_at")
    await db.events.create_index([("fanout", ASCENDING)], sparse=True, name="fanout")
    for coll in ("agent_configs", "agent_heads", "routes", "sessions"):
        await db[coll].create_index([(f"{PENDING}.id", ASCENDING)], sparse=True, name="pending_events")


class MongoJournal:
    def __init__(self, mdb: MongoDatabase, configs: Any, webhooks: Any, keys: Any = None) -> None:
        self.mdb = mdb
        self._keys = keys  # MongoKeys: finishes revokes once their event is relayed
        self._configs = configs  # MongoConfigs: relaying version documents needs its repairs
        self._webhooks = webhooks  # MongoWebhooks: finishes deletes once their event is relayed

    @mapped
    async def get(self, event_id: str) -> JournalEntry | None:
        db = await self.mdb.ready()
        doc = await db.events.find_one({"_id": event_id})
        return None if doc is None else _entry(doc)

    @mapped
    async def unfanned(self, limit: int) -> list[JournalEntry]:
        db = await self.mdb.ready()
        docs = await db.events.find({"fanout": True}).sort([("at", ASCENDING), ("_id", ASCENDING)]).limit(
            limit).to_list()
        return [_entry(d) for d in docs]

    @mapped
    async def freeze(self, event_id: str, agent_id: str | None, data: dict[str, Any]) -> JournalEntry | None:
        db = await self.mdb.ready()
        doc = await db.events.find_one_and_update(
            {"_id": event_id, "rendered": False},
            {"$set": {"data": escape_keys(data), "agent_id": agent_id, "rendered": True}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:  # rendered already (or no such event): what is stored wins
            doc = await db.events.find_one({"_id": event_id})
        return None if doc is None else _entry(doc)

    @mapped
    async def fanned_out(self, event_ids: list[str]) -> None:
        db = await self.mdb.ready()
        await db.events.update_many({"_id": {"$in": event_ids}}, {"$unset": {"fanout": ""}})

    @mapped
    async def relay(self, grace_s: float) -> int:
        """The sweep: relay every committed change's events left embedded by a crash.
        Sessions, the routes table, tombstones and endpoints hold only committed events; version
        documents are checked against their head (`MongoConfigs.relay_versions`)."""
        db = await self.mdb.ready()
        n = 0
        for coll in ("sessions", "routes", "agent_heads", "webhooks", "api_keys", "agent_tests", "calls", "campaigns"):
            n += await relay_found(db, coll, {})
        n += int(await self._configs.relay_versions(db, grace_s))
        await self._webhooks.finish_deletes(db)
        if self._keys is not None:
            await self._keys.finish_revokes(db)
        if n:
            log.warning("journal: relayed %d event(s) a stopped process had committed but not relayed", n)
        return n

    @mapped
    async def list(self, flt: EventFilter, offset: int, limit: int) -> tuple[list[Event], int]:
        db = await self.mdb.ready()
        q: dict[str, Any] = {}
        if flt.types is not None:
            q["type"] = {"$in": list(flt.types)}
        if flt.agent_id is not None:
            q["agent_id"] = flt.agent_id
        if flt.actor is not None:
            q["actor"] = flt.actor
        at: dict[str, Any] = {}
        if flt.since is not None:
            at["$gte"] = flt.since
        if flt.until is not None:
            at["$lt"] = flt.until
        if at:
            q["at"] = at
        total = await db.events.count_documents(q)
        if limit <= 0 or offset >= total:
            return [], total
        docs = await db.events.find(q).sort([("at", DESCENDING), ("_id", DESCENDING)]).skip(
            max(offset, 0)).limit(limit).to_list()
        return [_entry(d).event for d in docs], total


__all__ = ["PENDING", "MongoJournal", "embedded", "ensure_indexes", "push_pending",
           "relay", "relay_found", "relay_now"]
