"""One MongoDB database: the client, indexes and counters, outage mapping, and the
storage encodings every Mongo repository shares (escaped keys, millisecond times)."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidOperation,
    PyMongoError,
)
from pymongo.uri_parser import parse_uri

from app.domain import InvalidInput, StoreUnavailable
from app.domain.models import worst_turn_ms
from app.domain.values import utcnow

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""1: initial. 2: `sessions.worst_turn_ms` (filled in for older sessions at start)."""
DEFAULT_DATABASE = "voice"
EPOCH = "config_epoch"
_SCHEMA = "schema_version"
TABLE = "table"
"""`_id` of the one `routes` document."""

_CLIENT_DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 2000,
    "connectTimeoutMS": 2000,
    "socketTimeoutMS": 20000,
    "appname": "voice-platform",
}

Db = AsyncDatabase[dict[str, Any]]
P = ParamSpec("P")
T = TypeVar("T")


# ------------------------------------------------------------------- encodings


def ms(dt: datetime) -> datetime:
    """What a BSON date keeps: UTC, millisecond precision."""
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


_ESC = {"%": "%25", "$": "%24", ".": "%2E", "\x00": "%00"}
_ESC_RE = re.compile(r"[%$.\x00]")
_UNESC = {v: k for k, v in _ESC.items()}
_UNESC_RE = re.compile(r"%(?:25|24|2E|00)")


def escape_keys(value: Any) -> Any:
    """Recursively escape dict keys so none is an operator (`$...`) or a path (`a.b`)."""
    if isinstance(value, Mapping):
        return {_ESC_RE.sub(lambda m: _ESC[m.group()], str(k)): escape_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escape_keys(v) for v in value]
    return value


def unescape_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {_UNESC_RE.sub(lambda m: _UNESC[m.group()], k): unescape_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescape_keys(v) for v in value]
    return value


# --------------------------------------------------------------- outage mapping



async def _fill_worst_turn(db: Db) -> None:
    """Schema 2: `worst_turn_ms` of the sessions written before it existed, from their metrics
    (idempotent: a second process doing it at the same time writes the same values)."""
    filled = 0
    async for doc in db.sessions.find({"worst_turn_ms": {"$exists": False}, "metrics.0": {"$exists": True}},
                                      {"metrics": 1}):
        worst = worst_turn_ms(doc.get("metrics") or [])
        if worst is not None:
            await db.sessions.update_one({"_id": doc["_id"]}, {"$set": {"worst_turn_ms": worst}})
            filled += 1
    if filled:
        log.info("filled in the worst turn of %d earlier session(s)", filled)

class _HasDatabase(Protocol):
    @property
    def mdb(self) -> MongoDatabase: ...


S = TypeVar("S", bound=_HasDatabase)


def mapped(
    fn: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """Driver outages become `StoreUnavailable`; domain errors pass through."""

    @functools.wraps(fn)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(self, *args, **kwargs)
        except ConnectionFailure as e:
            self.mdb.schema_ok = False  # the server may come back empty: re-ensure indexes
            raise StoreUnavailable(f"database unreachable: {type(e).__name__}") from e
        except DocumentTooLarge as e:
            raise InvalidInput("record too large for the database (16 MB per document)") from e
        except InvalidOperation as e:  # e.g. used after aclose()
            raise StoreUnavailable(f"store is not usable: {e}") from e
        except PyMongoError as e:
            if getattr(e, "timeout", False):
                self.mdb.schema_ok = False
                raise StoreUnavailable(f"database timeout: {type(e).__name__}") from e
            raise

    return wrapper


# --------------------------------------------------------------------- database


class MongoDatabase:
    """Lifecycle of the connection and schema; the `Lifecycle` half of the Mongo backend."""

    def __init__(self, database_url: str, **client_options: Any) -> None:
        self.url = database_url
        parsed = parse_uri(database_url)  # raises on a malformed URL, before any I/O
        self.db_name = parsed.get("database") or DEFAULT_DATABASE
        given = {k.lower() for k in parsed.get("options", {})}
        self._client_options = {k: v for k, v in _CLIENT_DEFAULTS.items() if k.lower() not in given}
        self._client_options.update(client_options)
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._db: Db | None = None
        self.schema_ok = False
        self._schema_lock = asyncio.Lock()

    @property
    def mdb(self) -> MongoDatabase:
        return self

    def now(self) -> datetime:
        return ms(utcnow())

    async def start(self) -> None:
        """Connect and ensure indexes/counters. Idempotent; raises `StoreUnavailable`
        (within ~serverSelectionTimeoutMS) if the server cannot be reached. Called again
        after an outage it keeps the existing client (the driver reconnects by itself)."""
        created = self._client is None
        if created:
            self._client = AsyncMongoClient(
                self.url, tz_aware=True, tzinfo=UTC, connect=False, **self._client_options
            )
            self._db = self._client.get_database(self.db_name)
        try:
            await self.ensure_schema(force=True)
        except StoreUnavailable:
            if created:
                await self.aclose()
            raise

    async def aclose(self) -> None:
        client, self._client, self._db = self._client, None, None
        self.schema_ok = False
        if client is not None:
            await client.aclose()

    @mapped
    async def ensure_schema(self, *, force: bool = False) -> None:
        async with self._schema_lock:
            if self.schema_ok and not force:
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
            await db.sessions.create_index(
                [("analysis_status", ASCENDING), ("started_at", ASCENDING)], name="analysis_queue"
            )
            await db.sessions.create_index([("worst_turn_ms", DESCENDING), ("started_at", DESCENDING)],
                                           name="worst_turn")
            from app.store.mongo import agent_tests, calls, journal, keys, webhooks  # they import this module

            await journal.ensure_indexes(db)
            await webhooks.ensure_indexes(db)
            await keys.ensure_indexes(db)
            await agent_tests.ensure_indexes(db)
            await calls.ensure_indexes(db)
            for coll, _id, init in (
                ("meta", EPOCH, {"value": 0}),
                ("meta", _SCHEMA, {"value": SCHEMA_VERSION}),
                ("routes", TABLE, {"rev": 0, "routes": []}),
            ):
                try:
                    await db[coll].update_one({"_id": _id}, {"$setOnInsert": init}, upsert=True)
                except DuplicateKeyError:  # another process created it first
                    pass
            schema = await db.meta.find_one({"_id": _SCHEMA})
            if schema and int(schema.get("value", 0)) < 2:
                await _fill_worst_turn(db)
                await db.meta.update_one({"_id": _SCHEMA}, {"$max": {"value": SCHEMA_VERSION}})
            if schema and int(schema.get("value", 0)) > SCHEMA_VERSION:
                log.warning(
                    "database schema version %s is newer than this build's %s", schema["value"], SCHEMA_VERSION
                )
            self.schema_ok = True

    def _dbh(self) -> Db:
        if self._db is None:
            raise StoreUnavailable("store is not started")
        return self._db

    async def ready(self) -> Db:
        """The database handle, indexes re-ensured first after an outage."""
        db = self._dbh()
        if not self.schema_ok:
            await self.ensure_schema()
        return db

    @mapped
    async def ping(self) -> None:
        db = await self.ready()
        # Not a bare `ping`: reading the schema marker also notices a server that came
        # back empty (the driver reconnects silently), and puts the indexes back.
        if await db.meta.find_one({"_id": _SCHEMA}, {"_id": 1}) is None:
            log.warning("database %r lost its schema marker (server restarted empty?); re-creating indexes",
                        self.db_name)
            await self.ensure_schema(force=True)

    @mapped
    async def config_epoch(self) -> int:
        db = await self.ready()
        doc = await db.meta.find_one({"_id": EPOCH}, {"value": 1})
        if doc is None:  # the server came back empty: indexes and counters are gone too
            await self.ensure_schema(force=True)
            return 0
        return int(doc["value"])

    @staticmethod
    async def bump_epoch(db: Db) -> None:
        await db.meta.update_one({"_id": EPOCH}, {"$inc": {"value": 1}}, upsert=True)
