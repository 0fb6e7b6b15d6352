"""Tests stored with an agent and their runs, on MongoDB.

`agent_tests` (`_id` = `{agent_id, name}`, so the primary key decides between racing
creators): each write is one document write carrying its journal events
(`pending_events`, relayed right after, or by the sweep after a crash; a delete first
marks the document `deleted` with its event, like webhook endpoints).
`test_runs` (`_id` = run id): the whole `TestRun`, replaced as the run progresses.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from app.domain.agent_tests import AgentTest, TestRun, TestRunStatus
from app.domain.events import Event
from app.store.mongo.client import Db, MongoDatabase, mapped, ms
from app.store.mongo.journal import PENDING, embedded, mark_deleted, push_pending, relay_found, relay_now

_LIVE = {"deleted": {"$ne": True}}
_UNFINISHED = {"$in": [TestRunStatus.queued.value, TestRunStatus.running.value]}


async def ensure_indexes(db: Db) -> None:
    await db.agent_tests.create_index([("agent_id", ASCENDING), ("name", ASCENDING)], name="agent_name")
    await db.agent_tests.create_index([(f"{PENDING}.id", ASCENDING)], sparse=True, name="pending_events")
    await db.test_runs.create_index(
        [("agent_id", ASCENDING), ("version", ASCENDING), ("created_at", DESCENDING)], name="agent_version_created")
    await db.test_runs.create_index([("status", ASCENDING)], name="status")


def _key(agent_id: str, name: str) -> dict[str, str]:
    return {"agent_id": agent_id, "name": name}


def _test(doc: dict[str, Any]) -> AgentTest:
    return AgentTest(agent_id=doc["agent_id"], name=doc["name"], content=doc["content"],
                     created_at=doc["created_at"], updated_at=doc["updated_at"])


def _run_doc(run: TestRun) -> dict[str, Any]:
    return {"_id": run.id, "agent_id": run.agent_id, "version": run.version, "status": run.status.value,
            "created_at": ms(run.created_at), "data": run.model_dump(mode="json")}


class MongoAgentTests:
    def __init__(self, mdb: MongoDatabase) -> None:
        self.mdb = mdb

    @mapped
    async def create(self, test: AgentTest, events: list[Event]) -> bool:
        db = await self.mdb.ready()
        key = _key(test.agent_id, test.name)
        # a deleted document whose delete did not finish: its events are relayed, then it goes
        await self._remove(db, key)
        doc: dict[str, Any] = {"_id": key, **key, "content": test.content,
                               "created_at": ms(test.created_at), "updated_at": ms(test.updated_at)}
        if events:
            doc[PENDING] = embedded(events)
        try:
            await db.agent_tests.insert_one(doc)
        except DuplicateKeyError:
            return False
        await relay_now(db, "agent_tests", key, events)
        return True

    @mapped
    async def replace(self, test: AgentTest, events: list[Event]) -> bool:
        db = await self.mdb.ready()
        key = _key(test.agent_id, test.name)
        update: dict[str, Any] = {"$set": {"content": test.content, "updated_at": ms(test.updated_at)}}
        if events:
            update["$push"] = push_pending(events)
        res = await db.agent_tests.update_one({"_id": key, **_LIVE}, update)
        if not res.matched_count:
            return False
        await relay_now(db, "agent_tests", key, events)
        return True

    @mapped
    async def delete(self, agent_id: str, name: str, events: list[Event]) -> bool:
        db = await self.mdb.ready()
        key = _key(agent_id, name)
        if not await mark_deleted(db, "agent_tests", key, events):
            return False
        await self._remove(db, key)
        return True

    @staticmethod
    async def _remove(db: Db, key: dict[str, str]) -> None:
        """Finish a committed delete: relay what a crash left embedded, then drop the document."""
        await relay_found(db, "agent_tests", {"_id": key, "deleted": True})
        await db.agent_tests.delete_one({"_id": key, "deleted": True, f"{PENDING}.id": {"$exists": False}})

    @mapped
    async def get(self, agent_id: str, name: str) -> AgentTest | None:
        db = await self.mdb.ready()
        doc = await db.agent_tests.find_one({"_id": _key(agent_id, name), **_LIVE})
        return None if doc is None else _test(doc)

    @mapped
    async def list(self, agent_id: str) -> list[AgentTest]:
        db = await self.mdb.ready()
        docs = await db.agent_tests.find({"agent_id": agent_id, **_LIVE}).sort("name", ASCENDING).to_list()
        return [_test(doc) for doc in docs]


    @mapped
    async def forget_agent(self, agent_id: str) -> None:
        db = await self.mdb.ready()
        await db.agent_tests.delete_many({"agent_id": agent_id})
        await db.test_runs.delete_many({"agent_id": agent_id})


class MongoTestRuns:
    def __init__(self, mdb: MongoDatabase) -> None:
        self.mdb = mdb

    @mapped
    async def add(self, run: TestRun) -> None:
        db = await self.mdb.ready()
        await db.test_runs.insert_one(_run_doc(run))

    @mapped
    async def save(self, run: TestRun) -> bool:
        db = await self.mdb.ready()
        doc = _run_doc(run)
        res = await db.test_runs.update_one(
            {"_id": run.id, "status": _UNFINISHED}, {"$set": {"status": doc["status"], "data": doc["data"]}})
        return bool(res.matched_count)

    @mapped
    async def get(self, run_id: str) -> TestRun | None:
        db = await self.mdb.ready()
        doc = await db.test_runs.find_one({"_id": run_id})
        return None if doc is None else TestRun.model_validate(doc["data"])

    @mapped
    async def list(self, agent_id: str, version: int | None, limit: int) -> list[TestRun]:
        db = await self.mdb.ready()
        q: dict[str, Any] = {"agent_id": agent_id}
        if version is not None:
            q["version"] = version
        docs = await db.test_runs.find(q).sort([("created_at", DESCENDING), ("_id", DESCENDING)]).limit(limit).to_list()
        return [TestRun.model_validate(doc["data"]) for doc in docs]

    @mapped
    async def abandon_unfinished(self, now: datetime, reason: str, created_before: datetime | None) -> int:
        db = await self.mdb.ready()
        q: dict[str, Any] = {"status": _UNFINISHED}
        if created_before is not None:
            q["created_at"] = {"$lt": ms(created_before)}
        n = 0
        async for doc in db.test_runs.find(q):
            done = TestRun.model_validate(doc["data"]).model_copy(
                update={"status": TestRunStatus.abandoned, "finished_at": now, "error": reason})
            res = await db.test_runs.update_one(
                {"_id": doc["_id"], "status": _UNFINISHED},
                {"$set": {"status": done.status.value, "data": done.model_dump(mode="json")}})
            n += res.modified_count
        return n
