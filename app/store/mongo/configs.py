"""Agent config versions on MongoDB: `agent_configs` (a document per version) and
`agent_heads` (a document per agent), with the commit points and repairs the package
docstring describes (Create, Update / rollback, Delete, Generations, Journal)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.domain import AgentConfig, StoreUnavailable
from app.domain.events import Event
from app.store.backend import (
    HeadMoved,
    Known,
    PublishedAgent,
    PublishStep,
    Routed,
    StoredRelease,
    StoredVersion,
    VersionKey,
)
from app.store.mongo.client import TABLE, Db, MongoDatabase, escape_keys, mapped, unescape_keys
from app.store.mongo.journal import HAS_PENDING, PENDING, embedded, push_pending, relay, relay_found, relay_now
from app.store.mongo.routes import routes_doc
from app.store.retry import MAX_ATTEMPTS, backoff

_LIVE = {"deleted": {"$ne": True}}


def version_doc(cfg: AgentConfig, gen: str, events: list[Event] | None = None) -> dict[str, Any]:
    doc = {
        "agent_id": cfg.agent_id,
        "version": cfg.version,
        "gen": gen,
        "enabled": cfg.enabled,
        "created_at": cfg.updated_at,
        "data": escape_keys(cfg.model_dump(mode="json")),
    }
    if events:
        doc[PENDING] = embedded(events)  # committed with the version: the commit point
    return doc


def _head_doc(agent_id: str, gen: str, version: int, enabled: bool, created_at: Any, updated_at: Any) -> dict[str, Any]:
    return {"_id": agent_id, "gen": gen, "current_version": version, "enabled": enabled,
            "created_at": created_at, "updated_at": updated_at, "published_version": version, "release_rev": 0}


def _rev(rev: int) -> dict[str, Any]:
    """Filter: the release is still at revision `rev` (a head from before publishing has none: 0)."""
    return {"release_rev": rev} if rev else {"$or": [{"release_rev": 0}, {"release_rev": {"$exists": False}}]}


def _published(head: Mapping[str, Any]) -> int:
    """A head from before publishing has no published version: its current one."""
    return int(head.get("published_version") or head["current_version"])


def _stored(doc: Mapping[str, Any], head_created_at: Any = None) -> StoredVersion:
    key = VersionKey(doc["agent_id"], doc["gen"], doc["version"])
    return StoredVersion(key, unescape_keys(doc["data"]), head_created_at)


class MongoConfigs:
    def __init__(self, mdb: MongoDatabase) -> None:
        self.mdb = mdb

    # ------------------------------------------------------------------- reads

    async def _version(self, db: Db, head: Mapping[str, Any], version: int, known: Known) -> StoredVersion | None:
        key = VersionKey(head["_id"], head["gen"], version)
        if key in known:
            return StoredVersion(key, None, head["created_at"])
        doc = await db.agent_configs.find_one({"agent_id": key.agent_id, "version": version, "gen": key.token})
        return None if doc is None else _stored(doc, head["created_at"])

    @mapped
    async def current(self, agent_id: str, known: Known) -> StoredVersion | None:
        db = await self.mdb.ready()
        head = await db.agent_heads.find_one({"_id": agent_id, **_LIVE})
        return None if head is None else await self._version(db, head, head["current_version"], known)

    @mapped
    async def version(self, agent_id: str, version: int, known: Known) -> StoredVersion | None:
        db = await self.mdb.ready()
        head = await db.agent_heads.find_one({"_id": agent_id, **_LIVE})
        if head is None or version > head["current_version"]:  # never a version above the head
            return None
        return await self._version(db, head, version, known)

    @mapped
    async def list_current(
        self, enabled: bool | None, offset: int, limit: int, known: Known
    ) -> tuple[list[StoredVersion], int]:
        db = await self.mdb.ready()
        flt: dict[str, Any] = dict(_LIVE)
        if enabled is not None:
            flt["enabled"] = bool(enabled)
        total = await db.agent_heads.count_documents(flt)
        if limit <= 0 or offset >= total:
            return [], total
        heads = await db.agent_heads.find(flt, {"gen": 1, "current_version": 1}).sort("_id", ASCENDING).skip(
            max(offset, 0)
        ).limit(limit).to_list()
        keys = [VersionKey(h["_id"], h["gen"], h["current_version"]) for h in heads]
        missing = [k for k in keys if k not in known]
        found: dict[VersionKey, StoredVersion] = {}
        if missing:
            docs = await db.agent_configs.find(
                {"$or": [{"agent_id": a, "gen": g, "version": v} for a, g, v in missing]}
            ).to_list()
            found = {s.key: s for s in map(_stored, docs)}
        out = []
        for k in keys:
            if k in found:
                out.append(found[k])
            elif k not in missing:
                out.append(StoredVersion(k, None))
            # else: deleted between the two reads
        return out, total

    @mapped
    async def versions(self, agent_id: str) -> list[StoredVersion]:
        db = await self.mdb.ready()
        head = await db.agent_heads.find_one({"_id": agent_id, **_LIVE})
        if head is None:
            return []
        docs = await db.agent_configs.find(
            {"agent_id": agent_id, "gen": head["gen"], "version": {"$lte": head["current_version"]}}
        ).sort("version", ASCENDING).to_list()
        return [_stored(d) for d in docs]

    # ------------------------------------------------------------------ writes

    async def _advance_head(self, db: Db, agent_id: str, gen: str, version: int, enabled: bool, updated_at: Any) -> bool:
        res = await db.agent_heads.update_one(
            {"_id": agent_id, "gen": gen, **_LIVE, "current_version": {"$lt": version}},
            {"$set": {"current_version": version, "enabled": enabled, "updated_at": updated_at}},
        )
        return res.matched_count == 1

    async def _settle_slot(self, db: Db, agent_id: str, gen: str, version: int) -> int | None:
        """Someone else holds version slot `version` of this agent. If it is a committed
        write of the live generation, make sure the head reaches it (a writer may have
        crashed before advancing it) and return that version; if it is a leftover of a
        deleted generation, remove it and return None (the slot is free again)."""
        doc = await db.agent_configs.find_one({"agent_id": agent_id, "version": version})
        if doc is None:
            return None
        if doc["gen"] != gen:
            await db.agent_configs.delete_one({"_id": doc["_id"], "gen": doc["gen"]})
            return None
        if not await self._advance_head(db, agent_id, gen, version, doc["enabled"], doc["created_at"]):
            head = await db.agent_heads.find_one({"_id": agent_id, "gen": gen})
            if head is None or head["current_version"] < version:
                return version  # above a tombstone: never current, its events never relayed
        await relay(db, "agent_configs", doc["_id"], doc.get(PENDING) or [])  # committed and current now
        return version

    async def _finish_delete(self, db: Db, agent_id: str, gen: str) -> None:
        """Remove a tombstoned generation: its versions first, then the head. Events the
        generation committed but never relayed (its versions up to the head, and the
        delete's own on the tombstone) go to the journal first."""
        head = await db.agent_heads.find_one({"_id": agent_id, "gen": gen, "deleted": True})
        if head is not None:
            await relay_found(db, "agent_configs", {
                "agent_id": agent_id, "gen": gen, "version": {"$lte": head["current_version"]}})
            await relay(db, "agent_heads", agent_id, head.get(PENDING) or [])
        await db.agent_configs.delete_many({"agent_id": agent_id, "gen": gen})
        await db.agent_heads.delete_one({"_id": agent_id, "gen": gen, "deleted": True})

    async def _roll_create_forward(self, db: Db, orphan: Mapping[str, Any]) -> None:
        """A create that committed its version 1 but not its head: give it the head."""
        try:
            await db.agent_heads.insert_one(_head_doc(
                orphan["agent_id"], orphan["gen"], 1, orphan["enabled"], orphan["created_at"], orphan["created_at"]
            ))
        except DuplicateKeyError:
            return  # someone else did (or a head of another kind is there): nothing of ours to relay
        await relay(db, "agent_configs", orphan["_id"], orphan.get(PENDING) or [])

    async def relay_versions(self, db: Db, grace_s: float) -> int:
        """The journal sweep's part for version documents still holding events: relay
        those whose version is committed (at or below its head; a version-1 create with
        no head and any version above a live head are committed writes whose writer
        died, and are rolled forward first once older than `grace_s`, so a write still
        in flight is left to its writer). Versions of another generation, or above a
        tombstone, never became current: their events are never relayed."""
        n = 0
        cutoff = self.mdb.now() - timedelta(seconds=grace_s)
        async for doc in db.agent_configs.find(HAS_PENDING):
            head = await db.agent_heads.find_one({"_id": doc["agent_id"]})
            pending = doc.get(PENDING) or []
            if head is None:
                if doc["version"] == 1 and doc["created_at"] <= cutoff:
                    await self._roll_create_forward(db, doc)
                    n += len(pending)
                continue
            if head["gen"] != doc["gen"]:
                continue
            if doc["version"] <= head["current_version"]:
                n += await relay(db, "agent_configs", doc["_id"], pending)
            elif not head.get("deleted") and doc["created_at"] <= cutoff:
                await self._settle_slot(db, doc["agent_id"], doc["gen"], doc["version"])
                n += len(pending)
        return n

    @mapped
    async def create(self, cfg: AgentConfig, events: list[Event]) -> VersionKey | None:
        db = await self.mdb.ready()
        aid, gen = cfg.agent_id, uuid.uuid4().hex
        for attempt in range(MAX_ATTEMPTS):
            await self.mdb.bump_epoch(db)
            try:
                res = await db.agent_configs.insert_one(version_doc(cfg, gen, events))
            except DuplicateKeyError:
                head = await db.agent_heads.find_one({"_id": aid})
                if head is not None and head.get("deleted"):
                    await self._finish_delete(db, aid, head["gen"])  # a delete that crashed midway
                    await backoff(attempt)
                    continue
                if head is None:
                    # A create that committed its version 1 but not (yet) its head: roll
                    # it forward, it won.
                    orphan = await db.agent_configs.find_one({"agent_id": aid, "version": 1})
                    if orphan is None:
                        continue
                    await self._roll_create_forward(db, orphan)
                return None
            await self._insert_head(db, cfg, gen)
            await relay_now(db, "agent_configs", res.inserted_id, events)
            await self.mdb.bump_epoch(db)
            return VersionKey(aid, gen, 1)
        raise StoreUnavailable(f"agent {aid!r}: too many concurrent writers, try again")

    async def _insert_head(self, db: Db, cfg: AgentConfig, gen: str) -> None:
        """Second step of a create (version 1 is committed): point a head at it."""
        doc = _head_doc(cfg.agent_id, gen, cfg.version, cfg.enabled, cfg.created_at, cfg.updated_at)
        for attempt in range(MAX_ATTEMPTS):
            try:
                await db.agent_heads.insert_one(doc)
                return
            except DuplicateKeyError:
                head = await db.agent_heads.find_one({"_id": cfg.agent_id})
                if head is None:
                    continue
                if head["gen"] == gen:  # another writer rolled our create forward
                    return
                if head.get("deleted"):  # the tombstone of a previous generation
                    await relay(db, "agent_heads", cfg.agent_id, head.get(PENDING) or [])  # its delete committed
                    res = await db.agent_heads.replace_one(
                        {"_id": cfg.agent_id, "gen": head["gen"], "deleted": True}, doc
                    )
                    if res.matched_count:
                        return
                    await backoff(attempt)
                    continue
                # A live head of another generation cannot coexist with our version 1
                # (it needed that slot); never overwrite it.
                raise AssertionError(f"agent {cfg.agent_id!r}: live head of another generation") from None  # pragma: no cover
        raise StoreUnavailable(f"agent {cfg.agent_id!r}: could not write its head, try again")

    @mapped
    async def append(
        self, head: VersionKey, cfg: AgentConfig, events: list[Event], publish: PublishStep | None = None
    ) -> VersionKey:
        db = await self.mdb.ready()
        aid, gen, version = head.agent_id, str(head.token), cfg.version
        await self.mdb.bump_epoch(db)
        try:
            res = await db.agent_configs.insert_one(version_doc(cfg, gen, events))
        except DuplicateKeyError:
            raise HeadMoved(await self._settle_slot(db, aid, gen, version)) from None
        if not await self._advance_head(db, aid, gen, version, cfg.enabled, cfg.updated_at):
            now_head = await db.agent_heads.find_one({"_id": aid})
            if (
                now_head is None or now_head["gen"] != gen or now_head.get("deleted")
                or now_head["current_version"] < version
            ):
                # The agent was deleted while we wrote: our version is garbage (and so
                # are its events, which were never relayed).
                await db.agent_configs.delete_one({"_id": res.inserted_id})
                raise HeadMoved(None)
            # else: a helper already advanced the head to (or past) our version.
        await relay_now(db, "agent_configs", res.inserted_id, events)
        if publish is not None:
            # A second single-document write: a crash before it leaves the version a draft.
            published = await db.agent_heads.update_one(
                {"_id": aid, "gen": gen, **_LIVE, **_rev(publish.rev), "current_version": {"$gte": version}},
                {"$set": {"published_version": version}, "$inc": {"release_rev": 1},
                 "$push": push_pending(publish.events)},
            )
            if published.matched_count:
                await relay_now(db, "agent_heads", aid, publish.events)
        await self.mdb.bump_epoch(db)
        return VersionKey(aid, gen, version)

    # --------------------------------------------------------------- releases

    @mapped
    async def release(self, agent_id: str) -> StoredRelease | None:
        db = await self.mdb.ready()
        head = await db.agent_heads.find_one({"_id": agent_id, **_LIVE})
        if head is None:
            return None
        return StoredRelease(agent_id, head["current_version"], _published(head), int(head.get("release_rev") or 0),
                             unescape_keys(head["rollout"]) if head.get("rollout") else None)

    @mapped
    async def set_release(
        self, agent_id: str, rev: int, published_version: int, canary_version: int | None,
        rollout: dict[str, Any] | None, events: list[Event],
    ) -> bool | None:
        db = await self.mdb.ready()
        await self.mdb.bump_epoch(db)
        res = await db.agent_heads.update_one(
            {"_id": agent_id, **_LIVE, **_rev(rev)},
            {"$set": {"published_version": published_version, "canary_version": canary_version,
                      "rollout": escape_keys(rollout) if rollout is not None else None, "release_rev": rev + 1},
             "$push": push_pending(events)},
        )
        if not res.matched_count:
            return None if await db.agent_heads.find_one({"_id": agent_id, **_LIVE}, {"_id": 1}) is None else False
        await relay_now(db, "agent_heads", agent_id, events)
        await self.mdb.bump_epoch(db)
        return True

    @mapped
    async def list_published(
        self, offset: int, limit: int, known: Known
    ) -> tuple[list[PublishedAgent], int]:
        db = await self.mdb.ready()
        total = await db.agent_heads.count_documents(dict(_LIVE))
        if limit <= 0 or offset >= total:
            return [], total
        heads = await db.agent_heads.find(
            dict(_LIVE), {"gen": 1, "current_version": 1, "published_version": 1, "canary_version": 1, "rollout": 1}
        ).sort("_id", ASCENDING).skip(max(offset, 0)).limit(limit).to_list()
        wanted: list[VersionKey] = []
        for h in heads:
            wanted.append(VersionKey(h["_id"], h["gen"], _published(h)))
            if h.get("canary_version"):
                wanted.append(VersionKey(h["_id"], h["gen"], int(h["canary_version"])))
        missing = [k for k in wanted if k not in known]
        found: dict[VersionKey, StoredVersion] = {}
        if missing:
            docs = await db.agent_configs.find(
                {"$or": [{"agent_id": a, "gen": g, "version": v} for a, g, v in missing]}
            ).to_list()
            found = {x.key: x for x in map(_stored, docs)}

        def stored(k: VersionKey) -> StoredVersion | None:
            return found.get(k) or (StoredVersion(k, None) if k not in missing else None)

        out = []
        for h in heads:
            pub = stored(VersionKey(h["_id"], h["gen"], _published(h)))
            if pub is None:
                continue  # deleted between the two reads
            canary = stored(VersionKey(h["_id"], h["gen"], int(h["canary_version"]))) if h.get("canary_version") else None
            rollout = unescape_keys(h["rollout"]) if canary is not None and h.get("rollout") else None
            out.append(PublishedAgent(pub, canary, rollout, int(h["current_version"])))
        return out, total

    @mapped
    async def delete(self, agent_id: str, expected_version: int | None, events: list[Event]) -> bool:
        db = await self.mdb.ready()
        version_cond = {} if expected_version is None else {"current_version": expected_version}
        for attempt in range(MAX_ATTEMPTS):
            token = uuid.uuid4().hex
            head = await db.agent_heads.find_one_and_update(
                {"_id": agent_id, **_LIVE, **version_cond},
                {"$set": {"deleting": token}},
                return_document=ReturnDocument.AFTER,
            )
            if head is None:
                live = await db.agent_heads.find_one({"_id": agent_id, **_LIVE})
                if live is None:
                    return False
                raise HeadMoved(live["current_version"])
            clear = ({"_id": agent_id, "deleting": token}, {"$unset": {"deleting": ""}})
            # Fence: no route write may slip in between our check and our tombstone.
            for fence_attempt in range(MAX_ATTEMPTS):
                table = await routes_doc(db)
                users = sorted(r["purpose"] for r in table["routes"] if r["agent_id"] == agent_id)
                if users:
                    await db.agent_heads.update_one(*clear)
                    raise Routed(users)
                res = await db.routes.update_one({"_id": TABLE, "rev": table["rev"]}, {"$inc": {"rev": 1}})
                if res.matched_count:
                    break
                await backoff(fence_attempt)
            else:
                await db.agent_heads.update_one(*clear)
                raise StoreUnavailable(f"agent {agent_id!r}: routes are changing too fast, try again")
            await self.mdb.bump_epoch(db)
            res = await db.agent_heads.update_one(
                {"_id": agent_id, "gen": head["gen"], "deleting": token, **_LIVE, **version_cond},
                {"$set": {"deleted": True, "deleted_at": self.mdb.now()}, "$push": push_pending(events)},
            )
            if not res.matched_count:  # a route write cleared our intent, or a new version: look again
                await db.agent_heads.update_one(*clear)
                await backoff(attempt)
                continue
            await self._finish_delete(db, agent_id, head["gen"])
            await self.mdb.bump_epoch(db)
            return True
        raise StoreUnavailable(f"agent {agent_id!r}: too many concurrent route writes, try again")
