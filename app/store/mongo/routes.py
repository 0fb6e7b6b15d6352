"""The route table on MongoDB: ONE document (`_id: "table"`) holding every route and a
revision counter `rev`, so a swap is a single conditional document write."""

from __future__ import annotations

from typing import Any

from pymongo.errors import DuplicateKeyError

from app.domain import Route, StoreUnavailable
from app.domain.events import Event
from app.store.backend import MissingAgents, RouteTable
from app.store.mongo.client import TABLE, Db, MongoDatabase, mapped
from app.store.mongo.journal import push_pending, relay_now
from app.store.retry import MAX_ATTEMPTS


async def routes_doc(db: Db) -> dict[str, Any]:
    table = await db.routes.find_one({"_id": TABLE})
    if table is None:  # the server lost its data (or someone dropped it): recreate
        try:
            await db.routes.insert_one({"_id": TABLE, "rev": 0, "routes": []})
        except DuplicateKeyError:
            pass
        table = await db.routes.find_one({"_id": TABLE})
        assert table is not None
    return table


class MongoRoutes:
    def __init__(self, mdb: MongoDatabase) -> None:
        self.mdb = mdb

    @mapped
    async def table(self) -> RouteTable:
        doc = await routes_doc(await self.mdb.ready())
        routes = [Route(purpose=r["purpose"], agent_id=r["agent_id"], is_default=r["is_default"],
                        updated_at=r.get("updated_at"), phone_numbers=r.get("phone_numbers") or [])
                  for r in doc["routes"]]
        return RouteTable(int(doc["rev"]), routes)

    async def _check_agents(self, db: Db, agent_ids: set[str]) -> None:
        """Every agent exists and is not being deleted. A pending delete's intent is
        cleared (so its tombstone step fails and it re-checks the routes)."""
        for _ in range(MAX_ATTEMPTS):
            heads = await db.agent_heads.find(
                {"_id": {"$in": sorted(agent_ids)}}, {"deleted": 1, "deleting": 1}
            ).to_list()
            live = {h["_id"]: h for h in heads if not h.get("deleted")}
            missing = sorted(agent_ids - set(live))
            if missing:
                raise MissingAgents(missing)
            retry = False
            for h in live.values():
                token = h.get("deleting")
                if token is not None:
                    res = await db.agent_heads.update_one(
                        {"_id": h["_id"], "deleting": token, "deleted": {"$ne": True}},
                        {"$unset": {"deleting": ""}},
                    )
                    retry = retry or not res.matched_count
            if not retry:
                return
        raise StoreUnavailable("agents are changing too fast, try again")

    @mapped
    async def swap(self, rev: int, routes: list[Route], agent_ids: set[str], events: list[Event]) -> bool:
        db = await self.mdb.ready()
        if agent_ids:
            await self._check_agents(db, agent_ids)
        docs = [{"purpose": r.purpose, "agent_id": r.agent_id, "is_default": r.is_default,
                 "updated_at": r.updated_at, "phone_numbers": list(r.phone_numbers)} for r in routes]
        await self.mdb.bump_epoch(db)
        res = await db.routes.update_one(
            {"_id": TABLE, "rev": rev},
            {"$set": {"routes": docs}, "$inc": {"rev": 1}, "$push": push_pending(events)},
        )
        if not res.matched_count:
            return False
        await relay_now(db, "routes", TABLE, events)
        await self.mdb.bump_epoch(db)
        return True
