"""Named API keys on MongoDB: the `api_keys` collection (`_id` = the key's name, unique
index on `key_hash`).

A create is one insert carrying its `key.created` event (`pending_events`, relayed
right after). A revoke first marks the document `revoked` with its event (the commit
point: from then on no reader sees the key, so it authenticates nothing), relays, then
removes the document; the journal sweep (`finish_revokes`) removes what a crash left.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.domain.events import Event
from app.domain.keys import StoredApiKey
from app.store.mongo.client import Db, MongoDatabase, mapped, ms
from app.store.mongo.journal import PENDING, embedded, push_pending, relay_found, relay_now

_LIVE = {"revoked": {"$ne": True}}


def _key(doc: dict[str, Any]) -> StoredApiKey:
    return StoredApiKey.model_validate({
        "name": doc["_id"], "role": doc["role"], "key_hash": doc["key_hash"], "created_at": doc["created_at"],
        "last_used_at": doc.get("last_used_at")})


async def ensure_indexes(db: Db) -> None:
    await db.api_keys.create_index([("key_hash", ASCENDING)], unique=True, name="key_hash_unique")
    await db.api_keys.create_index([(f"{PENDING}.id", ASCENDING)], sparse=True, name="pending_events")


class MongoKeys:
    def __init__(self, mdb: MongoDatabase) -> None:
        self.mdb = mdb

    @mapped
    async def create(self, key: StoredApiKey, events: list[Event]) -> bool:
        db = await self.mdb.ready()
        await self._finish(db, key.name)  # a revoked key of this name a crash left behind
        doc: dict[str, Any] = {"_id": key.name, "role": key.role.value, "key_hash": key.key_hash,
                               "created_at": ms(key.created_at), "last_used_at": None}
        if events:
            doc[PENDING] = embedded(events)
        try:
            await db.api_keys.insert_one(doc)
        except DuplicateKeyError:
            return False
        await relay_now(db, "api_keys", key.name, events)
        return True

    @mapped
    async def delete(self, name: str, events: list[Event]) -> StoredApiKey | None:
        db = await self.mdb.ready()
        update: dict[str, Any] = {"$set": {"revoked": True}}
        if events:
            update["$push"] = push_pending(events)
        doc = await db.api_keys.find_one_and_update(  # the commit point
            {"_id": name, **_LIVE}, update, return_document=ReturnDocument.BEFORE)
        if doc is None:
            return None
        await relay_now(db, "api_keys", name, events)
        await db.api_keys.delete_one({"_id": name, "revoked": True, f"{PENDING}.id": {"$exists": False}})
        return _key(doc)

    @staticmethod
    async def _finish(db: Db, name: str) -> None:
        await relay_found(db, "api_keys", {"_id": name, "revoked": True})
        await db.api_keys.delete_one({"_id": name, "revoked": True, f"{PENDING}.id": {"$exists": False}})

    async def finish_revokes(self, db: Db) -> None:
        """Part of the journal sweep (after the relay): remove keys whose revoke
        committed but did not finish."""
        await db.api_keys.delete_many({"revoked": True, f"{PENDING}.id": {"$exists": False}})

    @mapped
    async def touch(self, name: str, at: datetime) -> None:
        db = await self.mdb.ready()
        await db.api_keys.update_one({"_id": name, **_LIVE}, {"$set": {"last_used_at": ms(at)}})

    @mapped
    async def all(self) -> list[StoredApiKey]:
        db = await self.mdb.ready()
        docs = await db.api_keys.find(_LIVE, {PENDING: 0}).sort("_id", ASCENDING).to_list()
        return [_key(d) for d in docs]


__all__ = ["MongoKeys", "ensure_indexes"]
