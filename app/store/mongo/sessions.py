"""Session records on MongoDB: `sessions` (`_id = session_id`) and `session_turns` (unique
`(session_id, seq)`); a batch is applied run by run (package docstring, Sessions)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import BulkWriteError, DuplicateKeyError

from app.domain import Handoff, SessionOrder, SessionRecord, SessionStatus, StoreUnavailable, Turn
from app.domain.rollout import ArmSession
from app.store.backend import Applied, Ended, NoSession, SessionExists
from app.store.base import OPS_APPLIED_ATTR
from app.store.mongo.client import Db, MongoDatabase, escape_keys, mapped, ms, unescape_keys
from app.store.mongo.journal import PENDING, embedded, push_pending, relay_now
from app.store.retry import MAX_ATTEMPTS, backoff
from app.store.session_rules import ARM_FIELDS, QUEUE_FIELDS, Run, project_arm_session, stored_json


def _handoff_doc(h: Handoff) -> dict[str, Any]:
    return {**h.model_dump(mode="python"), "at": ms(h.at)}


def _turn_doc(session_id: str, turn: Turn) -> dict[str, Any]:
    return {"session_id": session_id, "seq": turn.seq, "role": turn.role, "text": turn.text,
            "at": ms(turn.at), "agent_id": turn.agent_id}


_DOCUMENTS = ("metrics", "usage", "analysis")
"""Fields holding JSON documents whose keys come from outside (escaped, see the package)."""


def _fields_doc(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: escape_keys(v) if k in _DOCUMENTS else ms(v) if isinstance(v, datetime) else v
            for k, v in fields.items()}


def _as_stored(record: SessionRecord) -> SessionRecord:
    """What a re-read returns: times at millisecond precision."""
    return record.model_copy(update={
        "started_at": ms(record.started_at),
        "ended_at": ms(record.ended_at) if record.ended_at else None,
        "turns": [t.model_copy(update={"at": ms(t.at)}) for t in record.turns],
        "handoffs": [h.model_copy(update={"at": ms(h.at)}) for h in record.handoffs],
        "heartbeat_at": ms(record.heartbeat_at) if record.heartbeat_at else None,
    })


def _session_doc(record: SessionRecord, events: list[Any]) -> dict[str, Any]:
    doc = _as_stored(record).model_dump(mode="python", exclude={"turns", "session_id", "usage", "analysis"})
    doc.update(_fields_doc(stored_json(record)))
    doc["_id"] = record.session_id
    doc["status"] = SessionStatus(record.status).value
    doc["collected"] = escape_keys(record.collected)
    doc["metrics"] = escape_keys(record.metrics)
    doc["events"] = [e.model_dump(mode="json") for e in record.events]
    doc["crev"] = 0
    if events:
        doc[PENDING] = embedded(events)
    return doc


def _record(doc: Mapping[str, Any], turns: list[Turn] | None = None) -> SessionRecord:
    d = {k: v for k, v in doc.items() if k not in QUEUE_FIELDS}
    d["session_id"] = d.pop("_id")
    d.pop("crev", None)
    d.pop(PENDING, None)
    d["turns"] = turns or []
    d["collected"] = unescape_keys(d.get("collected") or {})
    d["metrics"] = unescape_keys(d.get("metrics") or [])
    d["usage"] = unescape_keys(d.get("usage") or {})
    d["analysis"] = unescape_keys(d.get("analysis"))
    d["handoffs"] = d.get("handoffs") or []
    d["events"] = d.get("events") or []
    return SessionRecord.model_validate(d)


class MongoSessions:
    def __init__(self, mdb: MongoDatabase) -> None:
        self.mdb = mdb

    async def apply(self, session_id: str, runs: list[Run]) -> Applied:
        progress = [0]
        try:
            return await self._apply(session_id, runs, progress)
        except Exception as e:
            if progress[0]:
                setattr(e, OPS_APPLIED_ATTR, progress[0])
            raise

    @mapped
    async def _apply(self, session_id: str, runs: list[Run], progress: list[int]) -> Applied:
        """One write per run, in order; `progress[0]` counts the ops applied so far."""
        db = await self.mdb.ready()
        started: SessionRecord | None = None
        collected: dict[str, Any] | None = None
        known = False  # the session exists (sessions are never deleted: once is enough)
        for run in runs:
            if run.start is not None:
                started = await self._insert(db, run.start, run)
            elif run.turns:
                if not known and await db.sessions.find_one({"_id": session_id}, {"_id": 1}) is None:
                    raise NoSession
                await self._insert_turns(db, session_id, run.turns)
            elif run.changes_row:
                collected = await self._update_row(db, session_id, run) or collected
            await relay_now(db, "sessions", session_id, run.events)
            known = True
            progress[0] += run.ops
        return Applied(started=started, collected=collected)

    async def _insert(self, db: Db, record: SessionRecord, run: Run) -> SessionRecord:
        try:
            await db.sessions.insert_one(_session_doc(record, run.events))
        except DuplicateKeyError:
            raise SessionExists from None
        for turn in record.turns:
            try:
                await db.session_turns.insert_one(_turn_doc(record.session_id, turn))
            except DuplicateKeyError:
                pass
        return _as_stored(record)

    async def _insert_turns(self, db: Db, session_id: str, turns: list[Turn]) -> None:
        docs = [_turn_doc(session_id, t) for t in turns]
        if len(docs) == 1:
            try:
                await db.session_turns.insert_one(docs[0])
            except DuplicateKeyError:  # a retry of a turn already stored
                pass
            return
        try:
            await db.session_turns.insert_many(docs, ordered=False)
        except BulkWriteError as e:  # only retried turns already stored are acceptable
            if any(err.get("code") != 11000 for err in e.details.get("writeErrors", [])):
                raise

    async def _update_row(self, db: Db, session_id: str, run: Run) -> dict[str, Any] | None:
        """A run of row changes as ONE update of the session document: handoffs pushed,
        fields set, data merged (read + CAS on `crev`); returns the merged data, if any."""
        update: dict[str, Any] = {}
        values = _fields_doc(run.fields)
        push: dict[str, Any] = {}
        if run.handoffs:
            push["handoffs"] = {"$each": [_handoff_doc(h) for h in run.handoffs]}
        if run.events:
            push.update(push_pending(run.events))  # the events commit with this update
        if push:
            update["$push"] = push
        if not run.data:
            if values:
                update["$set"] = values
            res = await db.sessions.update_one({"_id": session_id}, update)
            if not res.matched_count:
                raise NoSession
            return None
        for attempt in range(MAX_ATTEMPTS):
            doc = await db.sessions.find_one({"_id": session_id}, {"collected": 1, "crev": 1})
            if doc is None:
                raise NoSession
            merged = run.merged_collected(unescape_keys(doc.get("collected") or {}))
            crev = doc.get("crev")
            update["$set"] = {**values, "collected": escape_keys(merged), "crev": (crev or 0) + 1}
            res = await db.sessions.update_one({"_id": session_id, "crev": crev}, update)
            if res.matched_count:
                return merged
            await backoff(attempt)
        raise StoreUnavailable(f"session {session_id!r}: too many concurrent writers, try again")

    @mapped
    async def get(self, session_id: str) -> SessionRecord | None:
        db = await self.mdb.ready()
        doc = await db.sessions.find_one({"_id": session_id})
        if doc is None:
            return None
        turns = await db.session_turns.find({"session_id": session_id}).sort("seq", ASCENDING).to_list()
        return _record(doc, [Turn(seq=t["seq"], role=t["role"], text=t["text"], at=t["at"],
                                  agent_id=t.get("agent_id")) for t in turns])

    @mapped
    async def arm_sessions(self, agent_id: str, since: datetime, limit: int) -> tuple[list[ArmSession], int]:
        db = await self.mdb.ready()
        flt = {"agent_id": agent_id, "started_at": {"$gte": since}, "arm": {"$in": ["stable", "canary"]}}
        total = await db.sessions.count_documents(flt)
        docs = await db.sessions.find(flt, dict.fromkeys(ARM_FIELDS, 1)).sort("started_at", DESCENDING).limit(
            max(limit, 0)).to_list()
        return [project_arm_session({**d, "collected": unescape_keys(d.get("collected") or {})}) for d in docs], total

    @mapped
    async def list(
        self, agent_id: str | None, status: SessionStatus | None, since: datetime | None,
        until: datetime | None, order: SessionOrder, offset: int, limit: int,
    ) -> tuple[list[SessionRecord], int]:
        db = await self.mdb.ready()
        flt: dict[str, Any] = {}
        if agent_id is not None:
            flt["agent_id"] = agent_id
        if status is not None:
            flt["status"] = status.value
        started: dict[str, Any] = {}
        if since is not None:
            started["$gte"] = since
        if until is not None:
            started["$lt"] = until
        if started:
            flt["started_at"] = started
        total = await db.sessions.count_documents(flt)
        if limit <= 0 or offset >= total:
            return [], total
        by = [("started_at", DESCENDING), ("_id", ASCENDING)]
        if order is SessionOrder.worst_turn:  # null sorts lowest in MongoDB: last when descending
            by.insert(0, ("worst_turn_ms", DESCENDING))
        docs = await db.sessions.find(flt).sort(by).skip(
            max(offset, 0)
        ).limit(limit).to_list()
        return [_record(d) for d in docs], total


class MongoLiveness:
    def __init__(self, mdb: MongoDatabase) -> None:
        self.mdb = mdb

    @mapped
    async def heartbeat(self, owner: str, now: datetime) -> int:
        db = await self.mdb.ready()
        res = await db.sessions.update_many(
            {"owner": owner, "status": SessionStatus.active.value}, {"$set": {"heartbeat_at": ms(now)}}
        )
        return int(res.matched_count)

    @mapped
    async def abandon(self, cutoff: datetime | None, reason: str, now: datetime, ended: Ended) -> int:
        """One conditional update per session (still active, still stale), each the commit
        point of that session's `session.ended` event."""
        db = await self.mdb.ready()
        flt: dict[str, Any] = {"status": SessionStatus.active.value}
        if cutoff is not None:
            cutoff = ms(cutoff)
            flt["$or"] = [{"heartbeat_at": {"$lt": cutoff}}, {"heartbeat_at": None, "started_at": {"$lt": cutoff}}]
        n = 0
        for doc in await db.sessions.find(flt, {"_id": 1, "agent_id": 1}).to_list():
            events = [ended(doc["_id"], doc.get("agent_id") or "")]
            res = await db.sessions.update_one(
                {"_id": doc["_id"], **flt},
                {"$set": {"status": SessionStatus.abandoned.value, "end_reason": reason, "ended_at": ms(now)},
                 "$push": push_pending(events)},
            )
            if res.modified_count:
                n += 1
                await relay_now(db, "sessions", doc["_id"], events)
        return n
