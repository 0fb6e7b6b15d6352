"""`ConfigStore` on SQLModel/SQLAlchemy async: SQLite (aiosqlite) by default, any async URL.

Concurrency model. Agent writes conflict through a conditional update of the agent's
head row (`... WHERE current_version = :seen`) plus a unique (agent_id, version)
index, so a lost race is a `VersionConflict`, never a lost update. On SQLite, write
transactions start with `BEGIN IMMEDIATE` (take the write lock up front, wait on
`busy_timeout`) so two processes sharing the file queue instead of failing with
SQLITE_BUSY half-way; inside one process an asyncio lock serialises writers cheaply.
WAL mode lets readers (the API, the worker's cache poll) run beside a writer.
On PostgreSQL (READ COMMITTED) every agent/route write transaction first locks the
`config_epoch` row (`SELECT ... FOR UPDATE`), which serialises config writes across
processes the way `BEGIN IMMEDIATE` does on SQLite, so checks that span rows (one
default route, no route to a deleted agent) cannot be raced; session writes do not
take that lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

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
    AppendTurn,
    ChangeListener,
    FinishSession,
    RecordData,
    RecordHandoff,
    SessionWrite,
    StartSession,
    UpdateSession,
    parse_stored_config,
    skip_corrupt,
)
from app.store.sql_tables import (
    ADDED_COLUMNS,
    SCHEMA_VERSION,
    heads_t,
    meta_t,
    metadata,
    routes_t,
    sessions_t,
    turns_t,
    versions_t,
)

log = logging.getLogger("app.store.sql")

_EPOCH = "config_epoch"
_SCHEMA = "schema_version"
_PROBE = "write_probe"
_PARSED_CACHE_MAX = 4096
WRITE_PROBE_INTERVAL = 5.0
"""`ping` adds a no-op write when no write succeeded for this long (see `ping`)."""


class SQLStore:
    """The SQL implementation of `app.store.base.ConfigStore`."""

    def __init__(self, database_url: str, *, echo: bool = False) -> None:
        self.url = database_url
        self._echo = echo
        self._sqlite = sa.engine.make_url(database_url).get_backend_name() == "sqlite"
        self._engine: AsyncEngine | None = None
        self._write_engine: AsyncEngine | None = None
        self._write_lock = asyncio.Lock()
        self._listeners: list[ChangeListener] = []
        self._write_error: str | None = None
        self._last_write_ok = 0.0
        """Set by a write that failed for lack of the database, cleared by one that worked."""
        # Version rows are immutable, so a parsed config keyed by its row id never goes
        # stale; re-validating stored JSON on every read would only burn CPU.
        self._parsed: dict[tuple[int, str, int], AgentConfig] = {}
        self._corrupt_seen: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._engine is not None:
            return
        if self._sqlite:
            self._engine, self._write_engine = self._make_sqlite_engines()
        else:
            self._engine = create_async_engine(self.url, echo=self._echo, pool_pre_ping=True)
            self._write_engine = self._engine
        try:
            async with self._write_engine.begin() as conn:
                if self._write_engine.dialect.name == "postgresql":
                    # N processes starting on a fresh database at once: without this,
                    # all but one fail in CREATE TABLE (unique violation in pg_type).
                    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7301946)"))
                await conn.run_sync(metadata.create_all)
                await self._add_missing_columns(conn)
                for key in (_EPOCH, _SCHEMA):
                    exists = await conn.scalar(sa.select(meta_t.c.value).where(meta_t.c.key == key))
                    if exists is None:
                        value = SCHEMA_VERSION if key == _SCHEMA else 0
                        try:
                            async with conn.begin_nested():
                                await conn.execute(meta_t.insert().values(key=key, value=value))
                        except IntegrityError:  # another process created it first
                            pass
                    elif key == _SCHEMA and int(exists) < SCHEMA_VERSION:
                        await conn.execute(
                            meta_t.update().where(meta_t.c.key == _SCHEMA).values(value=SCHEMA_VERSION)
                        )
                        log.info("database schema upgraded from version %s to %s", exists, SCHEMA_VERSION)
                    elif key == _SCHEMA and int(exists) > SCHEMA_VERSION:
                        log.warning(
                            "database schema version %s is newer than this build's %s", exists, SCHEMA_VERSION
                        )
            if self._sqlite:
                await self._ensure_wal()
        except DBAPIError as e:
            await self.aclose()
            raise StoreUnavailable(f"cannot open database: {type(e.orig).__name__}") from e

    async def _add_missing_columns(self, conn: AsyncConnection) -> None:
        """Idempotent migration: add the columns newer builds declared (`ADDED_COLUMNS`)
        to tables an older build created. Runs inside start-up's write transaction (under
        BEGIN IMMEDIATE / the advisory lock), so concurrent starts cannot both add one."""

        def missing(sync_conn: Any) -> list[tuple[str, str]]:
            inspector = sa.inspect(sync_conn)
            out: list[tuple[str, str]] = []
            for table, cols in ADDED_COLUMNS.items():
                have = {c["name"] for c in inspector.get_columns(table)}
                out += [(table, c) for c in cols if c not in have]
            return out

        quote = conn.dialect.identifier_preparer.quote
        for table, col in await conn.run_sync(missing):
            ddl_type = metadata.tables[table].c[col].type.compile(dialect=conn.dialect)
            await conn.execute(sa.text(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(col)} {ddl_type}"))
            log.info("database migrated: added column %s.%s", table, col)

    async def _ensure_wal(self) -> None:
        """Make sure the file is in WAL mode, retrying the switch if another process held it."""
        assert self._engine is not None
        delay = 0.01
        deadline = time.monotonic() + 10.0
        while True:
            # The read engine: autocommit, so no BEGIN (the switch cannot run inside one).
            async with self._engine.connect() as conn:
                mode = await conn.exec_driver_sql("PRAGMA journal_mode")
                current = str(mode.scalar() or "").lower()
                if current in ("wal", "memory"):  # ":memory:" databases cannot use WAL
                    return
                try:
                    await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                except DBAPIError as e:
                    if time.monotonic() > deadline:
                        raise
                    log.debug("switching to WAL: %s; retrying", type(e.orig).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _make_sqlite_engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        db = sa.engine.make_url(self.url).database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).parent.mkdir(parents=True, exist_ok=True)

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let us issue BEGIN ourselves (pysqlite's implicit transactions would
            # start a deferred one and upgrade it too late to wait on the lock).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            try:
                cur.execute("PRAGMA journal_mode=WAL")
            except Exception as e:
                # Switching a fresh file to WAL needs an exclusive lock, and SQLite
                # answers BUSY at once (no busy handler: it would deadlock) when
                # another process is switching it too. WAL is a property of the file,
                # so the winner's switch counts for us; `start()` checks and retries.
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL+NORMAL: durable across process crashes
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        def make(begin_sql: str | None) -> AsyncEngine:
            # Reads (begin_sql None) run in SQLite's autocommit: one statement, its own
            # snapshot, no BEGIN/ROLLBACK round trips through aiosqlite's thread (they
            # were most of a config GET's cost). Writes take the lock up front.
            eng = create_async_engine(
                self.url, echo=self._echo, connect_args={"timeout": 10},
                pool_reset_on_return=None if begin_sql is None else "rollback",
            )
            event.listen(eng.sync_engine, "connect", on_connect)
            if begin_sql is not None:
                event.listen(eng.sync_engine, "begin", lambda conn: conn.exec_driver_sql(begin_sql))
            return eng

        return make(None), make("BEGIN IMMEDIATE")

    async def aclose(self) -> None:
        engines = {e for e in (self._engine, self._write_engine) if e is not None}
        self._engine = self._write_engine = None
        for eng in engines:
            await eng.dispose()

    async def ping(self) -> None:
        async with self._read() as conn:
            await conn.execute(sa.text("SELECT 1"))
        if self._write_error is not None or time.monotonic() - self._last_write_ok > WRITE_PROBE_INTERVAL:
            # Reads can answer while writes fail (the file or its WAL turned read-only, a
            # full disk): a ping that only reads would call that ready. So when the last
            # write failed, or none succeeded for a while, probe with a tiny write; it
            # also brings readiness back once writes work, with nothing else writing.
            try:
                async with self._tx() as conn:  # a real change: SQLite skips writing a no-op update
                    res = await conn.execute(
                        meta_t.update().where(meta_t.c.key == _PROBE).values(value=meta_t.c.value + 1)
                    )
                    if res.rowcount == 0:
                        try:
                            async with conn.begin_nested():
                                await conn.execute(meta_t.insert().values(key=_PROBE, value=1))
                        except IntegrityError:  # another process's first probe won
                            pass
            except StoreUnavailable as e:
                raise StoreUnavailable(f"writes failing ({e.message})") from None

    def add_change_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def config_epoch(self) -> int:
        async with self._read() as conn:
            return int(await conn.scalar(sa.select(meta_t.c.value).where(meta_t.c.key == _EPOCH)) or 0)

    # ----------------------------------------------------------------- plumbing

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        if self._engine is None:
            raise StoreUnavailable("store is not started")
        try:
            async with self._engine.connect() as conn:
                yield conn
        except DBAPIError as e:
            raise StoreUnavailable(f"database error: {type(e.orig).__name__}") from e
        except OSError as e:
            raise StoreUnavailable(f"database unreachable: {e.__class__.__name__}") from e

    @asynccontextmanager
    async def _tx(self, *, config_change: bool = False) -> AsyncIterator[AsyncConnection]:
        """One atomic write transaction; bumps the config epoch and notifies listeners
        (after commit) when it changes agents or routes."""
        if self._write_engine is None:
            raise StoreUnavailable("store is not started")
        lock = self._write_lock if self._sqlite else _NULL_LOCK
        async with lock:
            try:
                async with self._write_engine.begin() as conn:
                    if config_change and not self._sqlite:
                        # Serialise config writes across processes, as BEGIN IMMEDIATE
                        # does on SQLite. Under READ COMMITTED (PostgreSQL) two writers
                        # would otherwise both pass their checks: two default routes, a
                        # route to an agent deleted at the same time, or a duplicate-key
                        # error from two upserts of one new purpose. Admin writes are rare;
                        # session writes do not take this lock.
                        await conn.execute(
                            sa.select(meta_t.c.value).where(meta_t.c.key == _EPOCH).with_for_update()
                        )
                    yield conn
                    if config_change:
                        await conn.execute(
                            meta_t.update().where(meta_t.c.key == _EPOCH).values(value=meta_t.c.value + 1)
                        )
            except IntegrityError:
                raise
            except DBAPIError as e:
                self._write_error = f"database error: {type(e.orig).__name__}"
                raise StoreUnavailable(self._write_error) from e
            except OSError as e:
                self._write_error = f"database unreachable: {e.__class__.__name__}"
                raise StoreUnavailable(self._write_error) from e
        self._write_error = None
        self._last_write_ok = time.monotonic()
        if config_change:
            for listener in list(self._listeners):
                try:
                    listener()
                except Exception:  # a broken listener must not fail a committed write
                    log.exception("config change listener failed")

    def _parse(self, row: Any) -> AgentConfig:
        key = (row.id, row.agent_id, row.version)
        cfg = self._parsed.get(key)
        if cfg is None:
            cfg = parse_stored_config(row.data, row.agent_id, row.version)
            if len(self._parsed) >= _PARSED_CACHE_MAX:
                self._parsed.pop(next(iter(self._parsed)))
            self._parsed[key] = cfg
        return cfg

    def _for_update(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        return stmt if self._sqlite else stmt.with_for_update()

    # ------------------------------------------------------------- agent configs

    async def create_agent_config(self, data: AgentConfigInput) -> AgentConfig:
        now = utcnow()
        cfg = AgentConfig.model_validate(
            {**data.model_dump(), "version": 1, "created_at": now, "updated_at": now}
        )
        try:
            async with self._tx(config_change=True) as conn:
                await conn.execute(
                    heads_t.insert().values(
                        agent_id=cfg.agent_id, current_version=1, enabled=cfg.enabled,
                        created_at=now, updated_at=now,
                    )
                )
                await conn.execute(self._version_insert(cfg))
        except IntegrityError:
            raise AlreadyExists(f"agent {cfg.agent_id!r} already exists", agent_id=cfg.agent_id) from None
        return cfg

    def _version_insert(self, cfg: AgentConfig) -> sa.Insert:
        return versions_t.insert().values(
            agent_id=cfg.agent_id, version=cfg.version,
            data=cfg.model_dump(mode="json"), created_at=cfg.updated_at,
        )

    async def get_agent_config(self, agent_id: str, version: int | None = None) -> AgentConfig:
        v = versions_t
        if version is None:
            stmt = (
                sa.select(v.c.id, v.c.agent_id, v.c.version, v.c.data)
                .join(heads_t, sa.and_(heads_t.c.agent_id == v.c.agent_id,
                                       heads_t.c.current_version == v.c.version))
                .where(v.c.agent_id == agent_id)
            )
        else:
            stmt = sa.select(v.c.id, v.c.agent_id, v.c.version, v.c.data).where(v.c.agent_id == agent_id, v.c.version == version)
        async with self._read() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            what = f"agent {agent_id!r}" + (f" version {version}" if version is not None else "")
            raise NotFound(f"{what} not found", agent_id=agent_id)
        return self._parse(row)

    async def list_agent_configs(
        self, *, enabled: bool | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[AgentConfig], int]:
        v, h = versions_t, heads_t
        cond = [] if enabled is None else [h.c.enabled == enabled]
        stmt = (
            sa.select(v.c.id, v.c.agent_id, v.c.version, v.c.data)
            .join(h, sa.and_(h.c.agent_id == v.c.agent_id, h.c.current_version == v.c.version))
            .where(*cond).order_by(h.c.agent_id).offset(offset).limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
            total = await conn.scalar(sa.select(sa.func.count()).select_from(h).where(*cond))
        return skip_corrupt(self._parse, rows, self._corrupt_seen), int(total or 0)

    async def update_agent_config(
        self,
        agent_id: str,
        patch: Mapping[str, Any] | AgentConfigInput,
        expected_version: int | None = None,
    ) -> AgentConfig:
        async with self._tx(config_change=True) as conn:
            head = (
                await conn.execute(self._for_update(sa.select(heads_t).where(heads_t.c.agent_id == agent_id)))
            ).first()
            if head is None:
                raise NotFound(f"agent {agent_id!r} not found", agent_id=agent_id)
            seen = head.current_version
            if expected_version is not None and expected_version != seen:
                raise VersionConflict(agent_id, expected_version, seen)
            row = (
                await conn.execute(
                    sa.select(versions_t.c.id, versions_t.c.agent_id, versions_t.c.version, versions_t.c.data)
                    .where(versions_t.c.agent_id == agent_id, versions_t.c.version == seen)
                )
            ).one()
            if isinstance(patch, AgentConfigInput):
                if patch.agent_id != agent_id:
                    raise InvalidInput("agent_id cannot be changed", agent_id=agent_id)
                new_input = patch
                try:
                    created_at = self._parse(row).created_at
                except CorruptRecord:  # a replacement (or rollback) is how one repairs it
                    created_at = head.created_at
            else:
                current = self._parse(row)  # CorruptRecord: a patch needs a valid base
                new_input = patched_input(current, dict(patch))  # ValidationError → rolled back
                created_at = current.created_at
            now = utcnow()
            new = AgentConfig.model_validate(
                {**new_input.model_dump(), "version": seen + 1,
                 "created_at": created_at, "updated_at": now}
            )
            res = await conn.execute(
                heads_t.update()
                .where(heads_t.c.agent_id == agent_id, heads_t.c.current_version == seen)
                .values(current_version=seen + 1, enabled=new.enabled, updated_at=now)
            )
            if res.rowcount != 1:
                raise VersionConflict(agent_id, expected_version if expected_version is not None else seen, None)
            try:
                async with conn.begin_nested():
                    await conn.execute(self._version_insert(new))
            except IntegrityError:
                raise VersionConflict(agent_id, seen, seen + 1) from None
        return new

    async def delete_agent_config(self, agent_id: str, expected_version: int | None = None) -> None:
        async with self._tx(config_change=True) as conn:
            routes = (
                await conn.execute(sa.select(routes_t.c.purpose).where(routes_t.c.agent_id == agent_id))
            ).scalars().all()
            if routes:
                names = ", ".join(sorted(routes))
                raise InUse(f"agent {agent_id!r} is used by route(s): {names}", routes=sorted(routes))
            cond = [heads_t.c.agent_id == agent_id]
            if expected_version is not None:
                cond.append(heads_t.c.current_version == expected_version)
            res = await conn.execute(heads_t.delete().where(*cond))
            if res.rowcount == 0:
                current = await conn.scalar(
                    sa.select(heads_t.c.current_version).where(heads_t.c.agent_id == agent_id)
                )
                if current is not None:
                    raise VersionConflict(agent_id, expected_version, current)
                raise NotFound(f"agent {agent_id!r} not found", agent_id=agent_id)
            await conn.execute(versions_t.delete().where(versions_t.c.agent_id == agent_id))

    async def list_versions(self, agent_id: str) -> list[AgentConfig]:
        stmt = (
            sa.select(versions_t.c.id, versions_t.c.agent_id, versions_t.c.version, versions_t.c.data)
            .where(versions_t.c.agent_id == agent_id).order_by(versions_t.c.version)
        )
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        if not rows:
            raise NotFound(f"agent {agent_id!r} not found", agent_id=agent_id)
        return skip_corrupt(self._parse, rows, self._corrupt_seen)

    async def rollback(
        self, agent_id: str, version: int, expected_version: int | None = None
    ) -> AgentConfig:
        target = await self.get_agent_config(agent_id, version)
        return await self.update_agent_config(agent_id, target.input(), expected_version)

    # -------------------------------------------------------------------- routes

    @staticmethod
    def _route(row: Any) -> Route:
        return Route(purpose=row.purpose, agent_id=row.agent_id,
                     is_default=row.is_default, updated_at=row.updated_at)

    async def list_routes(self) -> list[Route]:
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(routes_t).order_by(routes_t.c.purpose))).all()
        return [self._route(r) for r in rows]

    async def get_route(self, purpose: str) -> Route:
        async with self._read() as conn:
            row = (await conn.execute(sa.select(routes_t).where(routes_t.c.purpose == purpose))).first()
        if row is None:
            raise NotFound(f"route {purpose!r} not found", purpose=purpose)
        return self._route(row)

    async def _check_agents_exist(self, conn: AsyncConnection, agent_ids: set[str]) -> None:
        found = set(
            (await conn.execute(sa.select(heads_t.c.agent_id).where(heads_t.c.agent_id.in_(agent_ids))))
            .scalars().all()
        )
        missing = sorted(agent_ids - found)
        if missing:
            raise InvalidReference(f"no agent {', '.join(repr(m) for m in missing)}", agent_id=missing[0])

    async def put_route(self, route: Route) -> Route:
        now = utcnow()
        stored = route.model_copy(update={"updated_at": now})
        async with self._tx(config_change=True) as conn:
            await self._check_agents_exist(conn, {route.agent_id})
            if route.is_default:
                await conn.execute(
                    routes_t.update().where(routes_t.c.purpose != route.purpose).values(is_default=False)
                )
            values = dict(agent_id=route.agent_id, is_default=route.is_default, updated_at=now)
            res = await conn.execute(routes_t.update().where(routes_t.c.purpose == route.purpose).values(**values))
            if res.rowcount == 0:
                await conn.execute(routes_t.insert().values(purpose=route.purpose, **values))
        return stored

    async def replace_routes(self, routes: list[Route]) -> list[Route]:
        purposes = [r.purpose for r in routes]
        if len(set(purposes)) != len(purposes):
            raise InvalidInput("a purpose is listed twice")
        if sum(r.is_default for r in routes) > 1:
            raise InvalidInput("at most one route can be the default")
        now = utcnow()
        async with self._tx(config_change=True) as conn:
            if routes:
                await self._check_agents_exist(conn, {r.agent_id for r in routes})
            await conn.execute(routes_t.delete())
            if routes:
                await conn.execute(
                    routes_t.insert(),
                    [dict(purpose=r.purpose, agent_id=r.agent_id, is_default=r.is_default, updated_at=now)
                     for r in routes],
                )
        return [r.model_copy(update={"updated_at": now}) for r in sorted(routes, key=lambda r: r.purpose)]

    async def delete_route(self, purpose: str) -> None:
        async with self._tx(config_change=True) as conn:
            res = await conn.execute(routes_t.delete().where(routes_t.c.purpose == purpose))
            if res.rowcount == 0:
                raise NotFound(f"route {purpose!r} not found", purpose=purpose)

    # ------------------------------------------------------------------ sessions
    #
    # Every session write goes through `_apply_segment`: the session writer's batches
    # (`apply_session_writes`) and the per-op methods alike, so there is one code path.
    # A batch is folded into at most one INSERT or one UPDATE of the session row plus
    # the turn inserts, in one transaction. There is no existence SELECT in front of a
    # write: the UPDATE's rowcount (or the read `record_data` needs anyway) tells a
    # missing session, and a turns-only batch inserts its first turn with
    # `INSERT ... SELECT ... WHERE EXISTS (session)` and looks only when nothing was
    # inserted (a missing session, or a retried turn already stored).

    def _session_doc(self, record: SessionRecord) -> dict[str, Any]:
        doc = record.model_dump(mode="python", exclude={"turns"})
        doc["status"] = record.status.value
        doc["handoffs"] = [h.model_dump(mode="json") for h in record.handoffs]
        return doc

    async def start_session(self, record: SessionRecord) -> SessionRecord:
        return (await self._write_session(record.session_id, [StartSession(record)])).started or record

    async def apply_session_writes(self, session_id: str, ops: list[SessionWrite]) -> None:
        if ops:
            await self._write_session(session_id, ops)

    async def _write_session(self, session_id: str, ops: list[SessionWrite]) -> _Applied:
        segments = _segments(ops)  # validates first: a bad op fails before any I/O
        try:
            async with self._tx() as conn:
                applied = _Applied()
                for seg in segments:
                    applied = await self._apply_segment(conn, session_id, seg, applied)
        except IntegrityError:
            raise AlreadyExists(f"session {session_id!r} already exists") from None
        return applied

    async def _apply_segment(
        self, conn: AsyncConnection, session_id: str, seg: _Segment, applied: _Applied
    ) -> _Applied:
        s = sessions_t
        if seg.start is not None:
            record = seg.start
            if record.owner is not None:
                # The insert is itself a sign of life: a start written late (after an
                # outage) must not look stale to `abandon_stale_sessions`.
                hb = max(record.heartbeat_at or utcnow(), utcnow())
                record = record.model_copy(update={"heartbeat_at": hb})
            doc = self._session_doc(record)
            collected = doc.get("collected") or {}
            for data in seg.data:
                collected = deep_merge(collected, data)
            doc["collected"] = collected
            doc["handoffs"] = [*doc["handoffs"], *seg.handoffs]
            doc.update(seg.fields)
            await conn.execute(s.insert().values(**doc))
            turns = [*record.turns, *seg.turns]
            if turns:
                await conn.execute(self._turn_insert_stmt(), [self._turn_values(session_id, t) for t in turns])
            return _Applied(started=record, collected=collected if seg.data else None)

        values = dict(seg.fields)
        merged: dict[str, Any] | None = None
        known = False
        if seg.data or seg.handoffs:
            cols = [c for c, need in ((s.c.collected, seg.data), (s.c.handoffs, seg.handoffs)) if need]
            stmt = self._for_update(sa.select(*cols).where(s.c.session_id == session_id))
            row = (await conn.execute(stmt)).first()
            if row is None:
                raise NotFound(f"session {session_id!r} not found", session_id=session_id)
            known = True
            if seg.data:
                merged = row.collected or {}
                for data in seg.data:
                    merged = deep_merge(merged, data)
                values["collected"] = merged
            if seg.handoffs:
                values["handoffs"] = [*(row.handoffs or []), *seg.handoffs]
        if values:
            res = await conn.execute(s.update().where(s.c.session_id == session_id).values(**values))
            if res.rowcount == 0:
                raise NotFound(f"session {session_id!r} not found", session_id=session_id)
            known = True
        turns = seg.turns
        if turns and not known:
            res = await conn.execute(self._turn_insert_if_session(session_id, turns[0]))
            if res.rowcount == 0 and await conn.scalar(
                sa.select(s.c.session_id).where(s.c.session_id == session_id)
            ) is None:
                raise NotFound(f"session {session_id!r} not found", session_id=session_id)
            turns = turns[1:]
        if turns:
            await conn.execute(self._turn_insert_stmt(), [self._turn_values(session_id, t) for t in turns])
        return _Applied(started=applied.started, collected=merged if merged is not None else applied.collected)

    def _dialect_insert(self) -> Any:
        dialect = "sqlite" if self._sqlite else self._write_engine.dialect.name  # type: ignore[union-attr]
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:  # pragma: no cover - other backends: plain insert, duplicates surface as IntegrityError
            return None
        return insert

    @staticmethod
    def _turn_values(session_id: str, turn: Turn) -> dict[str, Any]:
        return dict(session_id=session_id, seq=turn.seq, role=turn.role, text=turn.text,
                    at=turn.at, agent_id=turn.agent_id)

    def _turn_insert_stmt(self) -> Any:
        """A turn insert (values bound at execute time) that ignores a retried turn."""
        insert = self._dialect_insert()
        if insert is None:  # pragma: no cover
            return turns_t.insert()
        return insert(turns_t).on_conflict_do_nothing(index_elements=["session_id", "seq"])

    def _turn_insert_if_session(self, session_id: str, turn: Turn) -> Any:
        """`INSERT INTO session_turns SELECT <turn> WHERE EXISTS (<the session>)`: the
        existence check and the insert in one statement (turn rows have no foreign key)."""
        values = self._turn_values(session_id, turn)
        src = sa.select(*(sa.literal(v, turns_t.c[k].type) for k, v in values.items())).where(
            sa.exists().where(sessions_t.c.session_id == session_id)
        )
        insert = self._dialect_insert()
        if insert is None:  # pragma: no cover
            return turns_t.insert().from_select(list(values), src)
        return insert(turns_t).from_select(list(values), src).on_conflict_do_nothing(
            index_elements=["session_id", "seq"]
        )

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        await self._write_session(session_id, [AppendTurn(turn)])

    async def record_data(self, session_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        applied = await self._write_session(session_id, [RecordData(data)])
        return applied.collected or {}

    async def record_handoff(self, session_id: str, handoff: Handoff) -> None:
        await self._write_session(session_id, [RecordHandoff(handoff)])

    async def update_session(self, session_id: str, **fields: Any) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise InvalidInput(f"cannot update session field(s): {', '.join(sorted(unknown))}")
        if not fields:
            return
        await self._write_session(session_id, [UpdateSession(fields)])

    async def finish_session(
        self,
        session_id: str,
        status: SessionStatus,
        reason: str | None = None,
        error: str | None = None,
        ended_at: datetime | None = None,
    ) -> None:
        await self._write_session(session_id, [FinishSession(status, reason, error, ended_at)])

    async def heartbeat(self, owner: str) -> int:
        s = sessions_t
        async with self._tx() as conn:
            res = await conn.execute(
                s.update().where(s.c.owner == owner, s.c.status == SessionStatus.active.value)
                .values(heartbeat_at=utcnow())
            )
        return int(res.rowcount or 0)

    async def abandon_stale_sessions(self, cutoff: datetime, reason: str) -> int:
        s = sessions_t
        async with self._tx() as conn:
            res = await conn.execute(
                s.update().where(
                    s.c.status == SessionStatus.active.value,
                    sa.func.coalesce(s.c.heartbeat_at, s.c.started_at) < cutoff,
                ).values(status=SessionStatus.abandoned.value, end_reason=reason, ended_at=utcnow())
            )
        return int(res.rowcount or 0)

    @staticmethod
    def _record(row: Any, turns: list[Turn] | None = None) -> SessionRecord:
        doc = dict(row._mapping)
        doc["turns"] = turns or []
        doc["collected"] = doc.get("collected") or {}
        doc["handoffs"] = doc.get("handoffs") or []
        doc["metrics"] = doc.get("metrics") or []
        return SessionRecord.model_validate(doc)

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
        s = sessions_t
        cond: list[Any] = []
        if agent_id is not None:
            cond.append(s.c.agent_id == agent_id)
        if status is not None:
            cond.append(s.c.status == SessionStatus(status).value)
        if since is not None:
            cond.append(s.c.started_at >= since)
        if until is not None:
            cond.append(s.c.started_at < until)
        stmt = sa.select(s).where(*cond).order_by(s.c.started_at.desc(), s.c.session_id).offset(offset).limit(limit)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
            total = await conn.scalar(sa.select(sa.func.count()).select_from(s).where(*cond))
        return [self._record(r) for r in rows], int(total or 0)

    async def get_session(self, session_id: str) -> SessionRecord:
        async with self._read() as conn:
            row = (await conn.execute(sa.select(sessions_t).where(sessions_t.c.session_id == session_id))).first()
            if row is None:
                raise NotFound(f"session {session_id!r} not found", session_id=session_id)
            turn_rows = (
                await conn.execute(
                    sa.select(turns_t).where(turns_t.c.session_id == session_id).order_by(turns_t.c.seq)
                )
            ).all()
        turns = [Turn(seq=t.seq, role=t.role, text=t.text, at=t.at, agent_id=t.agent_id) for t in turn_rows]
        return self._record(row, turns)

    async def abandon_active_sessions(self, reason: str) -> int:
        async with self._tx() as conn:
            res = await conn.execute(
                sessions_t.update().where(sessions_t.c.status == SessionStatus.active.value).values(
                    status=SessionStatus.abandoned.value, end_reason=reason, ended_at=utcnow()
                )
            )
        return int(res.rowcount or 0)


class _NullLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NULL_LOCK = _NullLock()


# ------------------------------------------------------------- session batches

_UPDATABLE = frozenset(
    {"agent_id", "config_version", "user_id", "degraded", "route_reason", "metrics", "error", "room"}
)
"""Session fields `update_session` may set (the rest belong to start/finish)."""


@dataclass
class _Segment:
    """A run of session writes folded into one row write: an optional start (the row
    insert), then `record_data` merges, handoffs and field sets in order (a later field
    overrides an earlier one: of several metrics snapshots only the last is written),
    and the turns."""

    start: SessionRecord | None = None
    data: list[Mapping[str, Any]] = field(default_factory=list)
    handoffs: list[dict[str, Any]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    turns: list[Turn] = field(default_factory=list)


@dataclass
class _Applied:
    started: SessionRecord | None = None
    """The record as inserted (`heartbeat_at` stamped), if the batch started the session."""
    collected: dict[str, Any] | None = None
    """The merged `collected`, if the batch recorded data."""


def _segments(ops: list[SessionWrite]) -> list[_Segment]:
    """Fold `ops` into segments, split before each `start_session` after the first op (a
    start must run before what follows it). Raises `InvalidInput` for a bad op."""
    segs: list[_Segment] = [_Segment()]
    for i, op in enumerate(ops):
        seg = segs[-1]
        if isinstance(op, StartSession):
            if i:
                seg = _Segment()
                segs.append(seg)
            seg.start = op.record
        elif isinstance(op, AppendTurn):
            seg.turns.append(op.turn)
        elif isinstance(op, RecordData):
            seg.data.append(op.data)
        elif isinstance(op, RecordHandoff):
            seg.handoffs.append(op.handoff.model_dump(mode="json"))
        elif isinstance(op, UpdateSession):
            unknown = set(op.fields) - _UPDATABLE
            if unknown:
                raise InvalidInput(f"cannot update session field(s): {', '.join(sorted(unknown))}")
            seg.fields.update(op.fields)
        elif isinstance(op, FinishSession):
            seg.fields.update(
                status=SessionStatus(op.status).value, end_reason=op.reason, error=op.error,
                ended_at=op.ended_at or utcnow(),
            )
        else:
            raise InvalidInput(f"not a session write: {type(op).__name__}")
    return segs
