"""The post-call analysis queue on MongoDB: each change is one conditional single-document
update of a session's queue fields (`session_rules.QUEUE_FIELDS`), so of several
processes exactly one holds a lease (`find_one_and_update` takes one session at a time)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument

from app.domain.analysis import AnalysisStatus
from app.domain.events import Event
from app.store.mongo.client import MongoDatabase, escape_keys, mapped, ms
from app.store.mongo.journal import push_pending, relay_now
from app.store.session_rules import queue_fields

PENDING = AnalysisStatus.pending.value


def _free(now: datetime) -> dict[str, Any]:
    return {
        "analysis_status": PENDING,
        "$or": [{"analysis_lease_until": None}, {"analysis_lease_until": {"$lt": ms(now)}}],
    }


class MongoAnalysisQueue:
    def __init__(self, mdb: MongoDatabase) -> None:
        self.mdb = mdb

    @mapped
    async def claim(self, token: str, now: datetime, lease_until: datetime, limit: int) -> list[tuple[str, int]]:
        db = await self.mdb.ready()
        taken: list[tuple[str, int]] = []
        for _ in range(limit):
            doc = await db.sessions.find_one_and_update(
                _free(now),
                {"$set": {"analysis_owner": token, "analysis_lease_until": ms(lease_until)},
                 "$inc": {"analysis_claims": 1}},
                sort=[("started_at", ASCENDING), ("_id", ASCENDING)],
                projection={"_id": 1, "analysis_claims": 1},
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                break
            taken.append((doc["_id"], int(doc.get("analysis_claims") or 0)))
        return taken

    async def _held(self, session_id: str, token: str, values: dict[str, Any], events: list[Event] | None = None) -> bool:
        """A write while `token` holds the lease. `events` are embedded in the same
        single-document update (their commit point) and relayed to the journal after."""
        db = await self.mdb.ready()
        update: dict[str, Any] = {"$set": values}
        if events:
            update["$push"] = push_pending(events)
        res = await db.sessions.update_one(
            {"_id": session_id, "analysis_owner": token, "analysis_status": PENDING}, update
        )
        if not res.matched_count:
            return False
        await relay_now(db, "sessions", session_id, events or [])
        return True

    @mapped
    async def renew(self, session_id: str, token: str, lease_until: datetime) -> bool:
        return await self._held(session_id, token, {"analysis_lease_until": ms(lease_until)})

    @mapped
    async def finish(self, session_id: str, token: str, analysis: dict[str, Any], events: list[Event]) -> bool:
        fields = queue_fields(analysis)
        fields.pop("analysis_claims")  # kept: how many runs it took
        return await self._held(session_id, token, {"analysis": escape_keys(analysis), **fields}, events)

    @mapped
    async def release(self, session_id: str, token: str) -> bool:
        return await self._held(session_id, token, {"analysis_owner": None, "analysis_lease_until": None})
