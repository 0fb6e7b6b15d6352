"""`ConfigStore` on MongoDB with pymongo's native async client (`AsyncMongoClient`).

Chosen by `open_store()` for `mongodb://` and `mongodb+srv://` URLs; the database is
the one named in the URL path (default `voice`). Documents are envelopes around the
domain models in `app.domain` (an agent version keeps the whole validated config as
its `data`), exactly like the SQL rows: there is one definition of a config.

Collections
-----------
- `agent_configs`: one immutable document per version, `{agent_id, version, gen, enabled,
  created_at, data}`, unique index `(agent_id, version)`.
- `agent_heads`: one document per agent, `_id = agent_id`, `{gen, current_version,
  enabled, created_at, updated_at}` plus the delete markers below. Readers only ever
  see the version the head points at and older ones of the same `gen`.
- `routes`: ONE document (`_id: "table"`) holding the whole routing table and a
  revision counter `rev`. Every route write is a compare-and-swap on `rev`, so
  `replace_routes` is a single atomic document replace, "at most one default" is
  checked on the whole table before it is written, and two writers cannot interleave.
  (A routing table is a handful of purposes; the 16 MB document limit is ~100k routes.)
- `sessions` (`_id = session_id`) and `session_turns` (unique `(session_id, seq)`).
- `meta`: `config_epoch` and `schema_version` counters.

Atomicity without multi-document transactions
---------------------------------------------
Standalone MongoDB and SecantusDB do not guarantee multi-document transactions, so no
operation needs one. Every write has a single *commit point*, a one-document write,
and every other step is either invisible to readers before it or repairable after it:

- **Create**: insert version 1 (commit point; the unique index lets exactly one of
  several concurrent creators win), then insert the head. A crash in between leaves a
  version-1 document without a head: invisible to readers (they go through heads). The
  next create of that id hits the unique index, finds no head and *rolls the orphan
  forward* (inserts its head): the crashed create had committed, its caller just never
  heard back. It then reports `AlreadyExists`, as it would have anyway.
- **Update / rollback**: read the head (version N, generation G), validate the new
  content, insert version N+1 (commit point; the unique index is the conflict check, so
  there is no read-modify-write race), then advance the head with a conditional update
  `{_id, gen: G, current_version < N+1}`. A crash in between leaves N+1 written and the
  head at N; readers keep seeing N (never a version above the head). The next writer
  collides on N+1, advances the head to it on the crashed writer's behalf and reports
  `VersionConflict` (or, without `expected_version`, retries on top of N+1). A writer
  whose head advance finds the head already moved past N+1 by such a helper has still
  succeeded: its document is what the head points at.
- **Delete**: (1) set a `deleting` intent token on the head (readers ignore it);
  (2) read the routes table; if a route uses the agent, clear the intent and raise
  `InUse`; (3) bump the routes table `rev` without changing it (a fence: a route write
  racing with us fails its CAS and re-checks, seeing our intent); (4) tombstone the
  head, conditional on our token still being there (commit point: readers treat a
  tombstoned head as absent); (5) delete the generation's versions, then the head.
  A crash after (4) leaves a tombstone that the next create of that id finishes off; a
  crash before (4) leaves only an intent that any route write may clear.
  A route write that finds an intent on an agent it references *clears* it (only if it
  is still that token) before its own CAS, which makes the pending delete's step (4)
  fail; the delete then starts over and sees the route. So a route can never end up
  pointing at a deleted agent, without locks or timeouts.
- **Generations**: every create picks a fresh `gen`; heads and versions carry it, and
  reads and deletes filter on it. A version left over from a deleted generation (say, an
  update that raced a delete) can therefore never be served for a later agent with the
  same id; when a new write collides with such a leftover it deletes it and retries.
  The parsed-config cache is keyed by `(agent_id, gen, version)` for the same reason.
- **Config epoch**: bumped right before a config write's commit point and again after
  it. The bump after the commit is what other processes' caches rely on (a slow writer
  cannot commit "behind" a reload). The bump before it covers a crash right after the
  commit: other caches still reload within their poll interval, and only a reload that
  happened inside the ~1 ms between the two writes could miss the change.
- **Sessions**: each call is one single-document write (`$set`, `$push`, insert),
  except `record_data`, which deep-merges in Python and writes back with a CAS on a
  per-session counter (`crev`), retried on a lost race, so concurrent merges never lose
  a field. Turns are inserted one document each; the unique index makes a retried
  `append_turn` a no-op.
  `apply_session_writes` (the session writer's batches) is NOT one atomic write: it
  applies the batch in order as a few single-document writes: the session insert (if
  the batch starts the session), each run of consecutive turns as one `insert_many`
  (duplicates ignored), each run of consecutive row changes (data merges, handoffs,
  fields, finish) as one update of the session document. A failure part-way leaves a
  prefix applied and says how long (`ops_applied_before`); what the caller re-applies
  is idempotent except a handoff, which could then be recorded twice.
- **Owner / heartbeat**: `owner` and `heartbeat_at` are plain fields (absent on older
  documents, read as null), so no migration is needed and the schema version stays 1.

Untrusted values never become operators: ids used in filters must be strings (or
ints for versions), and every dict key stored from configs, collected data or metrics
is escaped (`%` -> `%25`, `$` -> `%24`, `.` -> `%2E`, NUL -> `%00`) and unescaped on
read, so `{"$where": ...}` or `"a.b"` keys are stored verbatim and never interpreted.

Times: BSON dates keep milliseconds, so every time this store stamps is truncated to
milliseconds before it is returned, and a re-read equals what a write returned.

Outages: connection errors (`ConnectionFailure` and subclasses: `AutoReconnect`,
`NetworkTimeout`, `ServerSelectionTimeoutError`...) become `StoreUnavailable`, found
within `serverSelectionTimeoutMS` (2 s unless the URL sets it). After an outage the
indexes and counters are re-ensured before the next operation (the server may have
come back empty).

Change notification across processes uses the `config_epoch` poll (the config cache
polls it every 0.5 s), which works on any deployment; change streams are not needed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from pydantic import TypeAdapter
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidOperation,
    PyMongoError,
)
from pymongo.uri_parser import parse_uri

from app.domain import (
    AgentConfig,
    AgentConfigInput,
    AlreadyExists,
    CorruptRecord,
    Handoff,
    InUse,
    InvalidInput,
    InvalidReference,
    NotFound,
    Route,
    SessionRecord,
    SessionStatus,
    StoreUnavailable,
    Turn,
    VersionConflict,
    patched_input,
)
from app.domain.models import deep_merge, utcnow
from app.store.base import (
    OPS_APPLIED_ATTR,
    AppendTurn,
    ChangeListener,
    FinishSession,
    RecordData,
    RecordHandoff,
    SessionWrite,
    StartSession,
    UpdateSession,
    log_corrupt_once,
    parse_stored_config,
    skip_corrupt,
)

log = logging.getLogger("app.store.mongo")

SCHEMA_VERSION = 1
DEFAULT_DATABASE = "voice"
_EPOCH = "config_epoch"
_SCHEMA = "schema_version"
_TABLE = "table"
_PARSED_CACHE_MAX = 4096
_MAX_ATTEMPTS = 100  # lost CAS races before giving up (each is a real concurrent write)

_CLIENT_DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 2000,
    "connectTimeoutMS": 2000,
    "socketTimeoutMS": 20000,
    "appname": "voice-platform",
}

P = ParamSpec("P")
T = TypeVar("T")


# ------------------------------------------------------------------------ helpers


def _ms(dt: datetime) -> datetime:
    """What a BSON date keeps: UTC, millisecond precision."""
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def _now() -> datetime:
    return _ms(utcnow())


_ESC = {"%": "%25", "$": "%24", ".": "%2E", "\x00": "%00"}
_ESC_RE = re.compile(r"[%$.\x00]")
_UNESC = {v: k for k, v in _ESC.items()}
_UNESC_RE = re.compile(r"%(?:25|24|2E|00)")


def _escape_key(key: str) -> str:
    return _ESC_RE.sub(lambda m: _ESC[m.group()], key)


def _unescape_key(key: str) -> str:
    return _UNESC_RE.sub(lambda m: _UNESC[m.group()], key)


def escape_keys(value: Any) -> Any:
    """Recursively escape dict keys so none is an operator (`$...`) or a path (`a.b`)."""
    if isinstance(value, Mapping):
        return {_escape_key(str(k)): escape_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escape_keys(v) for v in value]
    return value


def unescape_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {_unescape_key(k): unescape_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescape_keys(v) for v in value]
    return value


def _str_id(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    return value


def _mapped(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Driver outages become `StoreUnavailable`; domain errors pass through."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        self: MongoStore = args[0]  # type: ignore[assignment]
        try:
            return await fn(*args, **kwargs)
        except ConnectionFailure as e:
            self._schema_ok = False  # the server may come back empty: re-ensure indexes
            raise StoreUnavailable(f"database unreachable: {type(e).__name__}") from e
        except DocumentTooLarge as e:
            raise InvalidInput("record too large for the database (16 MB per document)") from e
        except InvalidOperation as e:  # e.g. used after aclose()
            raise StoreUnavailable(f"store is not usable: {e}") from e
        except PyMongoError as e:
            if getattr(e, "timeout", False):
                self._schema_ok = False
                raise StoreUnavailable(f"database timeout: {type(e).__name__}") from e
            raise

    return wrapper


async def _backoff(attempt: int) -> None:
    await asyncio.sleep(min(0.002 * (2 ** min(attempt, 6)), 0.1) * random.random())


_SESSION_FIELD_TYPES = {
    name: TypeAdapter(SessionRecord.model_fields[name].annotation)
    for name in ("agent_id", "config_version", "user_id", "degraded", "route_reason", "metrics", "error", "room")
}


# -------------------------------------------------------------------------- store


class MongoStore:
    """The MongoDB implementation of `app.store.base.ConfigStore`."""

    def __init__(self, database_url: str, **client_options: Any) -> None:
        self.url = database_url
        parsed = parse_uri(database_url)  # raises on a malformed URL, before any I/O
        self._db_name = parsed.get("database") or DEFAULT_DATABASE
        given = {k.lower() for k in parsed.get("options", {})}
        self._client_options = {k: v for k, v in _CLIENT_DEFAULTS.items() if k.lower() not in given}
        self._client_options.update(client_options)
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._db: AsyncDatabase[dict[str, Any]] | None = None
        self._schema_ok = False
        self._schema_lock = asyncio.Lock()
        self._listeners: list[ChangeListener] = []
        self._parsed: dict[tuple[str, str, int], AgentConfig] = {}
        self._corrupt_seen: set[tuple[str, int]] = set()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect and ensure indexes/counters. Idempotent; raises `StoreUnavailable`
        (within ~serverSelectionTimeoutMS) if the server cannot be reached. Called again
        after an outage it keeps the existing client (the driver reconnects by itself)."""
        created = self._client is None
        if created:
            self._client = AsyncMongoClient(
                self.url, tz_aware=True, tzinfo=UTC, connect=False, **self._client_options
            )
            self._db = self._client.get_database(self._db_name)
        try:
            await self._ensure_schema(force=True)
        except StoreUnavailable:
            if created:
                await self.aclose()
            raise

    async def aclose(self) -> None:
        client, self._client, self._db = self._client, None, None
        self._schema_ok = False
        if client is not None:
            await client.aclose()

    @_mapped
    async def _ensure_schema(self, *, force: bool = False) -> None:
        async with self._schema_lock:
            if self._schema_ok and not force:
                return
            db = self._dbh()
            await db.command("ping")
            await db.agent_configs.create_index(
                [("agent_id", ASCENDING), ("version", ASCENDING)], unique=True, name="agent_version_unique"
            )
            await db.agent_heads.create_index([("enabled", ASCENDING), ("_id", ASCENDING)], name="enabled_id")
            await db.session_turns.create_index(
                [("session_id", ASCENDING), ("seq", ASCENDING)], unique=True, name="session_seq_unique"
            )
            await db.sessions.create_index([("started_at", DESCENDING), ("_id", ASCENDING)], name="started")
            await db.sessions.create_index(
                [("agent_id", ASCENDING), ("started_at", DESCENDING)], name="agent_started"
            )
            await db.sessions.create_index(
                [("status", ASCENDING), ("started_at", DESCENDING)], name="status_started"
            )
            for coll, _id, init in (
                ("meta", _EPOCH, {"value": 0}),
                ("meta", _SCHEMA, {"value": SCHEMA_VERSION}),
                ("routes", _TABLE, {"rev": 0, "routes": []}),
            ):
                try:
                    await db[coll].update_one({"_id": _id}, {"$setOnInsert": init}, upsert=True)
                except DuplicateKeyError:  # another process created it first
                    pass
            schema = await db.meta.find_one({"_id": _SCHEMA})
            if schema and int(schema.get("value", 0)) > SCHEMA_VERSION:
                log.warning(
                    "database schema version %s is newer than this build's %s", schema["value"], SCHEMA_VERSION
                )
            self._schema_ok = True

    def _dbh(self) -> AsyncDatabase[dict[str, Any]]:
        if self._db is None:
            raise StoreUnavailable("store is not started")
        return self._db

    async def _ready(self) -> AsyncDatabase[dict[str, Any]]:
        db = self._dbh()
        if not self._schema_ok:
            await self._ensure_schema()
        return db

    @_mapped
    async def ping(self) -> None:
        db = await self._ready()
        # Not a bare `ping`: reading the schema marker also notices a server that came
        # back empty (the driver reconnects silently), and puts the indexes back.
        if await db.meta.find_one({"_id": _SCHEMA}, {"_id": 1}) is None:
            log.warning("database %r lost its schema marker (server restarted empty?); re-creating indexes",
                        self._db_name)
            await self._ensure_schema(force=True)

    def add_change_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:  # a broken listener must not fail a committed write
                log.exception("config change listener failed")

    @_mapped
    async def config_epoch(self) -> int:
        db = await self._ready()
        doc = await db.meta.find_one({"_id": _EPOCH}, {"value": 1})
        if doc is None:  # the server came back empty: indexes and counters are gone too
            await self._ensure_schema(force=True)
            return 0
        return int(doc["value"])

    async def _bump_epoch(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        await db.meta.update_one({"_id": _EPOCH}, {"$inc": {"value": 1}}, upsert=True)

    def _lock(self, key: str) -> asyncio.Lock:
        """In-process serialisation of writers to one agent/session (fewer lost CAS
        races); correctness across processes comes from the conditional writes."""
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    # ------------------------------------------------------------- agent configs

    def _parse(self, doc: Mapping[str, Any]) -> AgentConfig:
        key = (doc["agent_id"], doc["gen"], doc["version"])
        cfg = self._parsed.get(key)
        if cfg is None:
            cfg = parse_stored_config(unescape_keys(doc["data"]), doc["agent_id"], doc["version"])
            if len(self._parsed) >= _PARSED_CACHE_MAX:
                self._parsed.pop(next(iter(self._parsed)))
            self._parsed[key] = cfg
        return cfg

    @staticmethod
    def _version_doc(cfg: AgentConfig, gen: str) -> dict[str, Any]:
        return {
            "agent_id": cfg.agent_id,
            "version": cfg.version,
            "gen": gen,
            "enabled": cfg.enabled,
            "created_at": cfg.updated_at,
            "data": escape_keys(cfg.model_dump(mode="json")),
        }

    @staticmethod
    def _head_doc(cfg: AgentConfig, gen: str) -> dict[str, Any]:
        return {
            "_id": cfg.agent_id,
            "gen": gen,
            "current_version": cfg.version,
            "enabled": cfg.enabled,
            "created_at": cfg.created_at,
            "updated_at": cfg.updated_at,
        }

    async def _live_head(self, db: AsyncDatabase[dict[str, Any]], agent_id: str) -> dict[str, Any]:
        head = await db.agent_heads.find_one({"_id": agent_id, "deleted": {"$ne": True}})
        if head is None:
            raise NotFound(f"agent {agent_id!r} not found", agent_id=agent_id)
        return head

    async def _advance_head(
        self, db: AsyncDatabase[dict[str, Any]], agent_id: str, gen: str, version: int,
        enabled: bool, updated_at: datetime,
    ) -> bool:
        res = await db.agent_heads.update_one(
            {"_id": agent_id, "gen": gen, "deleted": {"$ne": True}, "current_version": {"$lt": version}},
            {"$set": {"current_version": version, "enabled": enabled, "updated_at": updated_at}},
        )
        return res.matched_count == 1

    async def _settle_slot(self, db: AsyncDatabase[dict[str, Any]], head: Mapping[str, Any], version: int) -> int | None:
        """Someone else holds version slot `version` of this agent. If it is a committed
        write of the live generation, make sure the head reaches it (a writer may have
        crashed before advancing it) and return that version; if it is a leftover of a
        deleted generation, remove it and return None (the slot is free again)."""
        doc = await db.agent_configs.find_one({"agent_id": head["_id"], "version": version})
        if doc is None:
            return None
        if doc["gen"] != head["gen"]:
            await db.agent_configs.delete_one({"_id": doc["_id"], "gen": doc["gen"]})
            return None
        await self._advance_head(db, head["_id"], head["gen"], version, doc["enabled"], doc["created_at"])
        return version

    async def _finish_delete(self, db: AsyncDatabase[dict[str, Any]], agent_id: str, gen: str) -> None:
        """Remove a tombstoned generation: its versions first, then the head."""
        await db.agent_configs.delete_many({"agent_id": agent_id, "gen": gen})
        await db.agent_heads.delete_one({"_id": agent_id, "gen": gen, "deleted": True})

    @_mapped
    async def create_agent_config(self, data: AgentConfigInput) -> AgentConfig:
        db = await self._ready()
        now = _now()
        cfg = AgentConfig.model_validate(
            {**data.model_dump(), "version": 1, "created_at": now, "updated_at": now}
        )
        aid = cfg.agent_id
        gen = uuid.uuid4().hex
        async with self._lock(aid):
            for attempt in range(_MAX_ATTEMPTS):
                await self._bump_epoch(db)
                try:
                    await db.agent_configs.insert_one(self._version_doc(cfg, gen))
                except DuplicateKeyError:
                    head = await db.agent_heads.find_one({"_id": aid})
                    if head is not None and head.get("deleted"):
                        await self._finish_delete(db, aid, head["gen"])  # a delete that crashed midway
                        await _backoff(attempt)
                        continue
                    if head is None:
                        # A create that committed its version 1 but not (yet) its head:
                        # roll it forward, it won.
                        orphan = await db.agent_configs.find_one({"agent_id": aid, "version": 1})
                        if orphan is None:
                            continue
                        try:
                            await db.agent_heads.insert_one(self._head_doc(self._parse(orphan), orphan["gen"]))
                        except DuplicateKeyError:
                            pass
                    raise AlreadyExists(f"agent {aid!r} already exists", agent_id=aid) from None
                await self._insert_head(db, cfg, gen)
                await self._bump_epoch(db)
                self._notify()
                return cfg
        raise StoreUnavailable(f"agent {aid!r}: too many concurrent writers, try again")

    async def _insert_head(self, db: AsyncDatabase[dict[str, Any]], cfg: AgentConfig, gen: str) -> None:
        """Second step of a create (version 1 is committed): point a head at it."""
        doc = self._head_doc(cfg, gen)
        for attempt in range(_MAX_ATTEMPTS):
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
                    res = await db.agent_heads.replace_one(
                        {"_id": cfg.agent_id, "gen": head["gen"], "deleted": True}, doc
                    )
                    if res.matched_count:
                        return
                    await _backoff(attempt)
                    continue
                # A live head of another generation cannot coexist with our version 1
                # (it needed that slot); never overwrite it.
                raise AssertionError(f"agent {cfg.agent_id!r}: live head of another generation") from None  # pragma: no cover
        raise StoreUnavailable(f"agent {cfg.agent_id!r}: could not write its head, try again")

    @_mapped
    async def get_agent_config(self, agent_id: str, version: int | None = None) -> AgentConfig:
        db = await self._ready()
        if not isinstance(agent_id, str) or (version is not None and (not isinstance(version, int) or isinstance(version, bool))):
            raise NotFound(f"agent {agent_id!r} not found")
        head = await db.agent_heads.find_one({"_id": agent_id, "deleted": {"$ne": True}})
        doc = None
        if head is not None:
            want = head["current_version"] if version is None else version
            if want <= head["current_version"]:
                cached = self._parsed.get((agent_id, head["gen"], want))
                if cached is not None:
                    return cached
                doc = await db.agent_configs.find_one({"agent_id": agent_id, "version": want, "gen": head["gen"]})
        if doc is None:
            what = f"agent {agent_id!r}" + (f" version {version}" if version is not None else "")
            raise NotFound(f"{what} not found", agent_id=agent_id)
        return self._parse(doc)

    @_mapped
    async def list_agent_configs(
        self, *, enabled: bool | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[AgentConfig], int]:
        db = await self._ready()
        flt: dict[str, Any] = {"deleted": {"$ne": True}}
        if enabled is not None:
            flt["enabled"] = bool(enabled)
        total = await db.agent_heads.count_documents(flt)
        if limit <= 0 or offset >= total:
            return [], total
        heads = await db.agent_heads.find(flt, {"gen": 1, "current_version": 1}).sort("_id", ASCENDING).skip(
            max(offset, 0)
        ).limit(limit).to_list()
        keys = [(h["_id"], h["gen"], h["current_version"]) for h in heads]
        missing = [k for k in keys if k not in self._parsed]
        found: dict[tuple[str, str, int], AgentConfig] = {}
        if missing:
            docs = await db.agent_configs.find(
                {"$or": [{"agent_id": a, "gen": g, "version": v} for a, g, v in missing]}
            ).to_list()
            for d in docs:
                try:
                    found[(d["agent_id"], d["gen"], d["version"])] = self._parse(d)
                except CorruptRecord as e:  # one bad version must not hide the others
                    log_corrupt_once(e, self._corrupt_seen)
        out = []
        for k in keys:
            cfg = self._parsed.get(k) or found.get(k)
            if cfg is not None:  # None only if deleted between the two reads
                out.append(cfg)
        return out, total

    @_mapped
    async def update_agent_config(
        self,
        agent_id: str,
        patch: Mapping[str, Any] | AgentConfigInput,
        expected_version: int | None = None,
    ) -> AgentConfig:
        db = await self._ready()
        if not isinstance(agent_id, str):
            raise NotFound(f"agent {agent_id!r} not found")
        async with self._lock(agent_id):
            for attempt in range(_MAX_ATTEMPTS):
                head = await self._live_head(db, agent_id)
                gen, seen = head["gen"], head["current_version"]
                if expected_version is not None and expected_version != seen:
                    raise VersionConflict(agent_id, expected_version, seen)
                try:
                    current = await self._get_version(db, agent_id, gen, seen)
                except CorruptRecord:
                    if not isinstance(patch, AgentConfigInput):
                        raise  # a patch needs a valid base; a replacement (or rollback) repairs it
                    current = None
                    created_at = head["created_at"]
                else:
                    if current is None:  # deleted under us
                        continue
                    created_at = current.created_at
                if isinstance(patch, AgentConfigInput):
                    if patch.agent_id != agent_id:
                        raise InvalidInput("agent_id cannot be changed", agent_id=agent_id)
                    new_input = patch
                else:
                    assert current is not None
                    new_input = patched_input(current, dict(patch))  # ValidationError: nothing written
                now = _now()
                new = AgentConfig.model_validate(
                    {**new_input.model_dump(), "version": seen + 1,
                     "created_at": created_at, "updated_at": now}
                )
                await self._bump_epoch(db)
                try:
                    res = await db.agent_configs.insert_one(self._version_doc(new, gen))
                except DuplicateKeyError:
                    winner = await self._settle_slot(db, head, seen + 1)
                    if expected_version is not None and winner is not None:
                        raise VersionConflict(agent_id, expected_version, winner) from None
                    await _backoff(attempt)
                    continue
                if not await self._advance_head(db, agent_id, gen, seen + 1, new.enabled, now):
                    now_head = await db.agent_heads.find_one({"_id": agent_id})
                    if (
                        now_head is None or now_head["gen"] != gen or now_head.get("deleted")
                        or now_head["current_version"] < seen + 1
                    ):
                        # The agent was deleted while we wrote: our version is garbage.
                        await db.agent_configs.delete_one({"_id": res.inserted_id})
                        raise NotFound(f"agent {agent_id!r} not found", agent_id=agent_id)
                    # else: a helper already advanced the head to (or past) our version.
                await self._bump_epoch(db)
                self._notify()
                return new
        raise VersionConflict(agent_id, expected_version, None)

    async def _get_version(
        self, db: AsyncDatabase[dict[str, Any]], agent_id: str, gen: str, version: int
    ) -> AgentConfig | None:
        cached = self._parsed.get((agent_id, gen, version))
        if cached is not None:
            return cached
        doc = await db.agent_configs.find_one({"agent_id": agent_id, "version": version, "gen": gen})
        return None if doc is None else self._parse(doc)

    @_mapped
    async def delete_agent_config(self, agent_id: str, expected_version: int | None = None) -> None:
        db = await self._ready()
        if not isinstance(agent_id, str):
            raise NotFound(f"agent {agent_id!r} not found")
        if expected_version is not None and type(expected_version) is not int:
            raise VersionConflict(agent_id, None, None)
        version_cond = {} if expected_version is None else {"current_version": expected_version}
        async with self._lock(agent_id):
            for attempt in range(_MAX_ATTEMPTS):
                token = uuid.uuid4().hex
                head = await db.agent_heads.find_one_and_update(
                    {"_id": agent_id, "deleted": {"$ne": True}, **version_cond},
                    {"$set": {"deleting": token}},
                    return_document=ReturnDocument.AFTER,
                )
                if head is None:
                    live = await self._live_head(db, agent_id)  # NotFound if gone
                    raise VersionConflict(agent_id, expected_version, live["current_version"])
                # Fence: no route write may slip in between our check and our tombstone.
                for fence_attempt in range(_MAX_ATTEMPTS):
                    table = await self._routes_table(db)
                    users = sorted(r["purpose"] for r in table["routes"] if r["agent_id"] == agent_id)
                    if users:
                        await db.agent_heads.update_one(
                            {"_id": agent_id, "deleting": token}, {"$unset": {"deleting": ""}}
                        )
                        raise InUse(f"agent {agent_id!r} is used by route(s): {', '.join(users)}", routes=users)
                    res = await db.routes.update_one({"_id": _TABLE, "rev": table["rev"]}, {"$inc": {"rev": 1}})
                    if res.matched_count:
                        break
                    await _backoff(fence_attempt)
                else:
                    await db.agent_heads.update_one({"_id": agent_id, "deleting": token}, {"$unset": {"deleting": ""}})
                    raise StoreUnavailable(f"agent {agent_id!r}: routes are changing too fast, try again")
                await self._bump_epoch(db)
                res = await db.agent_heads.update_one(
                    {"_id": agent_id, "gen": head["gen"], "deleting": token, "deleted": {"$ne": True},
                     **version_cond},
                    {"$set": {"deleted": True, "deleted_at": _now()}},
                )
                if not res.matched_count:  # a route write cleared our intent, or a new version: look again
                    await db.agent_heads.update_one({"_id": agent_id, "deleting": token}, {"$unset": {"deleting": ""}})
                    await _backoff(attempt)
                    continue
                await self._finish_delete(db, agent_id, head["gen"])
                await self._bump_epoch(db)
                self._notify()
                return
        raise StoreUnavailable(f"agent {agent_id!r}: too many concurrent route writes, try again")

    @_mapped
    async def list_versions(self, agent_id: str) -> list[AgentConfig]:
        db = await self._ready()
        if not isinstance(agent_id, str):
            raise NotFound(f"agent {agent_id!r} not found")
        head = await self._live_head(db, agent_id)
        docs = await db.agent_configs.find(
            {"agent_id": agent_id, "gen": head["gen"], "version": {"$lte": head["current_version"]}}
        ).sort("version", ASCENDING).to_list()
        if not docs:
            raise NotFound(f"agent {agent_id!r} not found", agent_id=agent_id)
        return skip_corrupt(self._parse, docs, self._corrupt_seen)

    async def rollback(
        self, agent_id: str, version: int, expected_version: int | None = None
    ) -> AgentConfig:
        target = await self.get_agent_config(agent_id, version)
        return await self.update_agent_config(agent_id, target.input(), expected_version)

    # -------------------------------------------------------------------- routes

    async def _routes_table(self, db: AsyncDatabase[dict[str, Any]]) -> dict[str, Any]:
        table = await db.routes.find_one({"_id": _TABLE})
        if table is None:  # the server lost its data (or someone dropped it): recreate
            try:
                await db.routes.insert_one({"_id": _TABLE, "rev": 0, "routes": []})
            except DuplicateKeyError:
                pass
            table = await db.routes.find_one({"_id": _TABLE})
            assert table is not None
        return table

    @staticmethod
    def _route(doc: Mapping[str, Any]) -> Route:
        return Route(
            purpose=doc["purpose"], agent_id=doc["agent_id"], is_default=doc["is_default"],
            updated_at=doc.get("updated_at"),
        )

    @staticmethod
    def _route_doc(route: Route, now: datetime) -> dict[str, Any]:
        return {"purpose": route.purpose, "agent_id": route.agent_id, "is_default": route.is_default,
                "updated_at": now}

    @_mapped
    async def list_routes(self) -> list[Route]:
        db = await self._ready()
        table = await self._routes_table(db)
        return sorted((self._route(r) for r in table["routes"]), key=lambda r: r.purpose)

    @_mapped
    async def get_route(self, purpose: str) -> Route:
        db = await self._ready()
        table = await self._routes_table(db)
        for r in table["routes"]:
            if r["purpose"] == purpose:
                return self._route(r)
        raise NotFound(f"route {purpose!r} not found", purpose=purpose)

    async def _check_agents(self, db: AsyncDatabase[dict[str, Any]], agent_ids: set[str]) -> None:
        """Every agent exists and is not being deleted. A pending delete's intent is
        cleared (so its tombstone step fails and it re-checks the routes)."""
        for _ in range(_MAX_ATTEMPTS):
            heads = await db.agent_heads.find(
                {"_id": {"$in": sorted(agent_ids)}}, {"deleted": 1, "deleting": 1}
            ).to_list()
            live = {h["_id"]: h for h in heads if not h.get("deleted")}
            missing = sorted(agent_ids - set(live))
            if missing:
                raise InvalidReference(f"no agent {', '.join(repr(m) for m in missing)}", agent_id=missing[0])
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

    async def _write_routes(
        self,
        mutate: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
        agent_ids: set[str],
    ) -> list[dict[str, Any]]:
        db = await self._ready()
        for attempt in range(_MAX_ATTEMPTS):
            table = await self._routes_table(db)
            new_routes = mutate([dict(r) for r in table["routes"]])
            if agent_ids:
                await self._check_agents(db, agent_ids)
            await self._bump_epoch(db)
            res = await db.routes.update_one(
                {"_id": _TABLE, "rev": table["rev"]},
                {"$set": {"routes": new_routes}, "$inc": {"rev": 1}},
            )
            if res.matched_count:
                await self._bump_epoch(db)
                self._notify()
                return new_routes
            await _backoff(attempt)
        raise StoreUnavailable("routes are changing too fast, try again")

    @_mapped
    async def put_route(self, route: Route) -> Route:
        now = _now()
        new = self._route_doc(route, now)

        def mutate(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
            out = [r for r in routes if r["purpose"] != route.purpose]
            if route.is_default:
                for r in out:
                    r["is_default"] = False
            out.append(new)
            return sorted(out, key=lambda r: r["purpose"])

        async with self._lock("\x00routes"):
            await self._write_routes(mutate, {route.agent_id})
        return route.model_copy(update={"updated_at": now})

    @_mapped
    async def replace_routes(self, routes: list[Route]) -> list[Route]:
        purposes = [r.purpose for r in routes]
        if len(set(purposes)) != len(purposes):
            raise InvalidInput("a purpose is listed twice")
        if sum(r.is_default for r in routes) > 1:
            raise InvalidInput("at most one route can be the default")
        now = _now()
        docs = sorted((self._route_doc(r, now) for r in routes), key=lambda r: r["purpose"])
        async with self._lock("\x00routes"):
            await self._write_routes(lambda _old: docs, {r.agent_id for r in routes})
        return [r.model_copy(update={"updated_at": now}) for r in sorted(routes, key=lambda r: r.purpose)]

    @_mapped
    async def delete_route(self, purpose: str) -> None:
        def mutate(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
            out = [r for r in routes if r["purpose"] != purpose]
            if len(out) == len(routes):
                raise NotFound(f"route {purpose!r} not found", purpose=purpose)
            return out

        async with self._lock("\x00routes"):
            await self._write_routes(mutate, set())

    # ------------------------------------------------------------------ sessions

    @staticmethod
    def _session_doc(record: SessionRecord) -> dict[str, Any]:
        doc = record.model_dump(mode="python", exclude={"turns", "session_id"})
        doc["_id"] = record.session_id
        doc["status"] = SessionStatus(record.status).value
        for k in ("started_at", "ended_at"):
            if doc[k] is not None:
                doc[k] = _ms(doc[k])
        doc["handoffs"] = [{**h.model_dump(mode="python"), "at": _ms(h.at)} for h in record.handoffs]
        doc["collected"] = escape_keys(record.collected)
        doc["metrics"] = escape_keys(record.metrics)
        if doc.get("heartbeat_at") is not None:
            doc["heartbeat_at"] = _ms(doc["heartbeat_at"])
        doc["crev"] = 0
        return doc

    @staticmethod
    def _turn_doc(session_id: str, turn: Turn) -> dict[str, Any]:
        return {"session_id": session_id, "seq": turn.seq, "role": turn.role, "text": turn.text,
                "at": _ms(turn.at), "agent_id": turn.agent_id}

    @staticmethod
    def _turn(doc: Mapping[str, Any]) -> Turn:
        return Turn(seq=doc["seq"], role=doc["role"], text=doc["text"], at=doc["at"], agent_id=doc.get("agent_id"))

    @staticmethod
    def _record(doc: Mapping[str, Any], turns: list[Turn] | None = None) -> SessionRecord:
        d = dict(doc)
        d["session_id"] = d.pop("_id")
        d.pop("crev", None)
        d["turns"] = turns or []
        d["collected"] = unescape_keys(d.get("collected") or {})
        d["metrics"] = unescape_keys(d.get("metrics") or [])
        d["handoffs"] = d.get("handoffs") or []
        return SessionRecord.model_validate(d)

    @_mapped
    async def start_session(self, record: SessionRecord) -> SessionRecord:
        db = await self._ready()
        return await self._insert_session(db, record)

    async def _insert_session(self, db: AsyncDatabase[dict[str, Any]], record: SessionRecord) -> SessionRecord:
        if record.owner is not None:
            # The insert is itself a sign of life: a start written late (after an
            # outage) must not look stale to `abandon_stale_sessions`.
            record = record.model_copy(update={"heartbeat_at": max(record.heartbeat_at or _now(), _now())})
        try:
            await db.sessions.insert_one(self._session_doc(record))
        except DuplicateKeyError:
            raise AlreadyExists(f"session {record.session_id!r} already exists") from None
        for turn in record.turns:
            try:
                await db.session_turns.insert_one(self._turn_doc(record.session_id, turn))
            except DuplicateKeyError:
                pass
        # What a re-read returns: times at millisecond precision.
        return record.model_copy(
            update={
                "started_at": _ms(record.started_at),
                "ended_at": _ms(record.ended_at) if record.ended_at else None,
                "turns": [t.model_copy(update={"at": _ms(t.at)}) for t in record.turns],
                "handoffs": [h.model_copy(update={"at": _ms(h.at)}) for h in record.handoffs],
                "heartbeat_at": _ms(record.heartbeat_at) if record.heartbeat_at else None,
            }
        )

    async def apply_session_writes(self, session_id: str, ops: list[SessionWrite]) -> None:
        progress = [0]
        try:
            await self._apply_session_writes(session_id, ops, progress)
        except Exception as e:
            if progress[0]:
                setattr(e, OPS_APPLIED_ATTR, progress[0])
            raise

    @_mapped
    async def _apply_session_writes(self, session_id: str, ops: list[SessionWrite], progress: list[int]) -> None:
        """See the module docstring (Sessions): runs of ops, one write each, in order;
        `progress[0]` counts the ops applied so far."""
        if not ops:
            return
        _str_id(session_id, "session_id")
        for op in ops:  # every op is checked before anything is written
            if isinstance(op, UpdateSession):
                self._session_values(op.fields)
        db = await self._ready()
        known = False  # the session exists (sessions are never deleted: once is enough)
        i = 0
        while i < len(ops):
            op = ops[i]
            if isinstance(op, StartSession):
                await self._insert_session(db, op.record)
                known, i = True, i + 1
            elif isinstance(op, AppendTurn):
                j = i
                while j < len(ops) and isinstance(ops[j], AppendTurn):
                    j += 1
                if not known:
                    await self._require_session(db, session_id)
                    known = True
                await self._insert_turns(db, session_id, [o.turn for o in ops[i:j]])  # type: ignore[union-attr]
                i = j
            else:
                j = i
                while j < len(ops) and not isinstance(ops[j], StartSession | AppendTurn):
                    j += 1
                await self._update_session_doc(db, session_id, ops[i:j])
                known, i = True, j
            progress[0] = i

    async def _insert_turns(self, db: AsyncDatabase[dict[str, Any]], session_id: str, turns: list[Turn]) -> None:
        docs = [self._turn_doc(session_id, t) for t in turns]
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

    def _session_values(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """`update_session` fields validated and encoded for the document."""
        unknown = set(fields) - self._UPDATABLE
        if unknown:
            raise InvalidInput(f"cannot update session field(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, value in fields.items():
            try:
                value = _SESSION_FIELD_TYPES[name].validate_python(value)
            except ValueError as e:
                raise InvalidInput(f"bad value for session field {name}: {e}") from None
            values[name] = escape_keys(value) if name == "metrics" else value
        return values

    async def _update_session_doc(
        self, db: AsyncDatabase[dict[str, Any]], session_id: str, ops: list[SessionWrite]
    ) -> None:
        """A run of row changes as ONE update of the session document: handoffs pushed,
        fields set (a later value wins), data merged (read + CAS on `crev`, as
        `record_data`)."""
        values: dict[str, Any] = {}
        handoffs: list[dict[str, Any]] = []
        data: list[Mapping[str, Any]] = []
        for op in ops:
            if isinstance(op, RecordData):
                data.append(op.data)
            elif isinstance(op, RecordHandoff):
                handoffs.append({**op.handoff.model_dump(mode="python"), "at": _ms(op.handoff.at)})
            elif isinstance(op, UpdateSession):
                values.update(self._session_values(op.fields))
            elif isinstance(op, FinishSession):
                values.update(status=SessionStatus(op.status).value, end_reason=op.reason, error=op.error,
                              ended_at=_ms(op.ended_at or utcnow()))
            else:  # pragma: no cover - the caller splits runs at starts and turns
                raise InvalidInput(f"not a session row change: {type(op).__name__}")
        update: dict[str, Any] = {}
        if handoffs:
            update["$push"] = {"handoffs": {"$each": handoffs}}
        if not data:
            if values:
                update["$set"] = values
            res = await db.sessions.update_one({"_id": session_id}, update)
            if not res.matched_count:
                raise NotFound(f"session {session_id!r} not found", session_id=session_id)
            return
        async with self._lock("\x00s:" + session_id):
            for attempt in range(_MAX_ATTEMPTS):
                doc = await db.sessions.find_one({"_id": session_id}, {"collected": 1, "crev": 1})
                if doc is None:
                    raise NotFound(f"session {session_id!r} not found", session_id=session_id)
                merged = unescape_keys(doc.get("collected") or {})
                for d in data:
                    merged = deep_merge(merged, d)
                crev = doc.get("crev")
                update["$set"] = {**values, "collected": escape_keys(merged), "crev": (crev or 0) + 1}
                res = await db.sessions.update_one({"_id": session_id, "crev": crev}, update)
                if res.matched_count:
                    return
                await _backoff(attempt)
        raise StoreUnavailable(f"session {session_id!r}: too many concurrent writers, try again")

    async def _require_session(self, db: AsyncDatabase[dict[str, Any]], session_id: str) -> None:
        if await db.sessions.find_one({"_id": session_id}, {"_id": 1}) is None:
            raise NotFound(f"session {session_id!r} not found", session_id=session_id)

    @_mapped
    async def append_turn(self, session_id: str, turn: Turn) -> None:
        db = await self._ready()
        _str_id(session_id, "session_id")
        # Sessions are never deleted, so a check before the insert cannot go stale.
        await self._require_session(db, session_id)
        try:
            await db.session_turns.insert_one(self._turn_doc(session_id, turn))
        except DuplicateKeyError:  # a retry of a turn already stored
            pass

    @_mapped
    async def record_data(self, session_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        db = await self._ready()
        _str_id(session_id, "session_id")
        async with self._lock("\x00s:" + session_id):
            for attempt in range(_MAX_ATTEMPTS):
                doc = await db.sessions.find_one({"_id": session_id}, {"collected": 1, "crev": 1})
                if doc is None:
                    raise NotFound(f"session {session_id!r} not found", session_id=session_id)
                merged = deep_merge(unescape_keys(doc.get("collected") or {}), data)
                crev = doc.get("crev")
                res = await db.sessions.update_one(
                    {"_id": session_id, "crev": crev},
                    {"$set": {"collected": escape_keys(merged), "crev": (crev or 0) + 1}},
                )
                if res.matched_count:
                    return merged
                await _backoff(attempt)
        raise StoreUnavailable(f"session {session_id!r}: too many concurrent writers, try again")

    @_mapped
    async def record_handoff(self, session_id: str, handoff: Handoff) -> None:
        db = await self._ready()
        _str_id(session_id, "session_id")
        res = await db.sessions.update_one(
            {"_id": session_id}, {"$push": {"handoffs": {**handoff.model_dump(mode="python"), "at": _ms(handoff.at)}}}
        )
        if not res.matched_count:
            raise NotFound(f"session {session_id!r} not found", session_id=session_id)

    _UPDATABLE = frozenset(_SESSION_FIELD_TYPES)

    @_mapped
    async def update_session(self, session_id: str, **fields: Any) -> None:
        unknown = set(fields) - self._UPDATABLE
        if unknown:
            raise InvalidInput(f"cannot update session field(s): {', '.join(sorted(unknown))}")
        if not fields:
            return
        db = await self._ready()
        _str_id(session_id, "session_id")
        values = self._session_values(fields)
        res = await db.sessions.update_one({"_id": session_id}, {"$set": values})
        if not res.matched_count:
            raise NotFound(f"session {session_id!r} not found", session_id=session_id)

    @_mapped
    async def finish_session(
        self,
        session_id: str,
        status: SessionStatus,
        reason: str | None = None,
        error: str | None = None,
        ended_at: datetime | None = None,
    ) -> None:
        db = await self._ready()
        _str_id(session_id, "session_id")
        res = await db.sessions.update_one(
            {"_id": session_id},
            {"$set": {"status": SessionStatus(status).value, "end_reason": reason, "error": error,
                      "ended_at": _ms(ended_at or utcnow())}},
        )
        if not res.matched_count:
            raise NotFound(f"session {session_id!r} not found", session_id=session_id)

    @_mapped
    async def list_sessions(
        self,
        *,
        agent_id: str | None = None,
        status: SessionStatus | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[SessionRecord], int]:
        db = await self._ready()
        flt: dict[str, Any] = {}
        if agent_id is not None:
            flt["agent_id"] = _str_id(agent_id, "agent_id")
        if status is not None:
            flt["status"] = SessionStatus(status).value
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
        docs = await db.sessions.find(flt).sort([("started_at", DESCENDING), ("_id", ASCENDING)]).skip(
            max(offset, 0)
        ).limit(limit).to_list()
        return [self._record(d) for d in docs], total

    @_mapped
    async def get_session(self, session_id: str) -> SessionRecord:
        db = await self._ready()
        _str_id(session_id, "session_id")
        doc = await db.sessions.find_one({"_id": session_id})
        if doc is None:
            raise NotFound(f"session {session_id!r} not found", session_id=session_id)
        turns = await db.session_turns.find({"session_id": session_id}).sort("seq", ASCENDING).to_list()
        return self._record(doc, [self._turn(t) for t in turns])

    @_mapped
    async def abandon_active_sessions(self, reason: str) -> int:
        db = await self._ready()
        res = await db.sessions.update_many(
            {"status": SessionStatus.active.value},
            {"$set": {"status": SessionStatus.abandoned.value, "end_reason": reason, "ended_at": _now()}},
        )
        return int(res.modified_count)

    @_mapped
    async def heartbeat(self, owner: str) -> int:
        db = await self._ready()
        res = await db.sessions.update_many(
            {"owner": _str_id(owner, "owner"), "status": SessionStatus.active.value},
            {"$set": {"heartbeat_at": _now()}},
        )
        return int(res.matched_count)

    @_mapped
    async def abandon_stale_sessions(self, cutoff: datetime, reason: str) -> int:
        db = await self._ready()
        cutoff = _ms(cutoff)
        res = await db.sessions.update_many(
            {
                "status": SessionStatus.active.value,
                "$or": [
                    {"heartbeat_at": {"$lt": cutoff}},
                    {"heartbeat_at": None, "started_at": {"$lt": cutoff}},
                ],
            },
            {"$set": {"status": SessionStatus.abandoned.value, "end_reason": reason, "ended_at": _now()}},
        )
        return int(res.modified_count)
