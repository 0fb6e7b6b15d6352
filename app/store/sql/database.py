"""One SQL database: engines, start-up (tables, migrations, WAL), and the runner every SQL
repository goes through, `read(fn)` / `write(fn)`, where `fn` takes a SQLAlchemy
`Connection` and is written once for every dialect.

How a call runs. SQLite: the stdlib driver, in this store's own threads (one writer,
a few readers), so a whole transaction is ONE hop off the event loop; an async driver
(aiosqlite) makes a hop per cursor call, four per statement, which was most of a write's
CPU. Writes start with `BEGIN IMMEDIATE` (take the write lock up front, wait on
`busy_timeout`), so two processes sharing the file queue instead of failing with
SQLITE_BUSY half-way; the single writer thread serialises this process's writers. WAL
mode lets readers run beside a writer; reads run in autocommit (one statement, its own
snapshot, no BEGIN/ROLLBACK). Any other database: the async engine (asyncpg), `fn` run
with `AsyncConnection.run_sync`. On PostgreSQL (READ COMMITTED) every config write first
locks the `config_epoch` row (`SELECT ... FOR UPDATE`), which serialises config writes
across processes as `BEGIN IMMEDIATE` does on SQLite, so checks that span rows (one
default route, no route to a deleted agent) cannot be raced; session writes do not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.domain import StoreUnavailable
from app.domain.models import worst_turn_ms
from app.store.sql.tables import ADDED_COLUMNS, SCHEMA_VERSION, meta_t, metadata

log = logging.getLogger(__name__)

T = TypeVar("T")

EPOCH = "config_epoch"
_SCHEMA = "schema_version"
_PROBE = "write_probe"
SQLITE_READERS = 4
WRITE_PROBE_INTERVAL = 5.0
"""`ping` adds a no-op write when no write succeeded for this long (see `ping`)."""


def read_epoch(conn: Connection, *, lock: bool = False) -> int:
    stmt = sa.select(meta_t.c.value).where(meta_t.c.key == EPOCH)
    return int(conn.scalar(stmt.with_for_update() if lock else stmt) or 0)


class SQLDatabase:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self._echo = echo
        self.sqlite = sa.engine.make_url(url).get_backend_name() == "sqlite"
        self._reader: Engine | None = None
        self._writer: Engine | None = None
        self._engine: AsyncEngine | None = None
        self._read_threads: ThreadPoolExecutor | None = None
        self._write_thread: ThreadPoolExecutor | None = None
        self._write_error: str | None = None
        """Set by a write that failed for lack of the database, cleared by one that worked."""
        self._last_write_ok = 0.0

    @property
    def dialect(self) -> str:
        return "sqlite" if self.sqlite else sa.engine.make_url(self.url).get_backend_name()

    # ------------------------------------------------------------------ running

    @property
    def started(self) -> bool:
        return self._writer is not None or self._engine is not None

    async def read(self, fn: Callable[[Connection], T]) -> T:
        try:
            if self._reader is not None and self._read_threads is not None:
                reader = self._reader
                return await asyncio.get_running_loop().run_in_executor(
                    self._read_threads, _run_read, reader, fn
                )
            if self._engine is None:
                raise StoreUnavailable("store is not started")
            async with self._engine.connect() as conn:
                return await conn.run_sync(fn)
        except IntegrityError:
            raise
        except DBAPIError as e:
            raise StoreUnavailable(f"database error: {type(e.orig).__name__}") from e
        except OSError as e:
            raise StoreUnavailable(f"database unreachable: {e.__class__.__name__}") from e

    async def write(self, fn: Callable[[Connection], T], *, config_change: bool = False) -> T:
        """`fn` in one transaction, committed when it returns, rolled back if it raises. A
        config change bumps the epoch in the same transaction."""
        lock = config_change and not self.sqlite
        try:
            if self._writer is not None and self._write_thread is not None:
                writer = self._writer
                result = await asyncio.get_running_loop().run_in_executor(
                    self._write_thread, _run_write, writer, fn, config_change, lock
                )
            elif self._engine is not None:
                async with self._engine.begin() as conn:
                    result = await conn.run_sync(_tx_body, fn, config_change, lock)
            else:
                raise StoreUnavailable("store is not started")
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
        return result

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self.started:
            return
        try:
            if self.sqlite:
                self._reader, self._writer = self._make_sqlite_engines()
                self._read_threads = ThreadPoolExecutor(SQLITE_READERS, thread_name_prefix="sqlite-read")
                self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")
                await asyncio.get_running_loop().run_in_executor(self._write_thread, self._start_sqlite)
            else:
                self._engine = create_async_engine(self.url, echo=self._echo, pool_pre_ping=True)
                async with self._engine.begin() as conn:
                    if self.dialect == "postgresql":
                        # N processes starting on a fresh database at once: without this,
                        # all but one fail in CREATE TABLE (unique violation in pg_type).
                        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7301946)"))
                    await conn.run_sync(_create_schema)
        except DBAPIError as e:
            await self.aclose()
            raise StoreUnavailable(f"cannot open database: {type(e.orig).__name__}") from e

    def _start_sqlite(self) -> None:
        assert self._writer is not None and self._reader is not None
        with self._writer.begin() as conn:
            _create_schema(conn)
        _ensure_wal(self._reader)

    def _make_sqlite_engines(self) -> tuple[Engine, Engine]:
        url = sa.engine.make_url(self.url).set(drivername="sqlite")  # the stdlib driver, whatever the URL named
        db = url.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).parent.mkdir(parents=True, exist_ok=True)

        def make(begin_sql: str | None) -> Engine:
            eng = sa.create_engine(
                url, echo=self._echo, connect_args={"timeout": 10, "check_same_thread": False},
                pool_size=SQLITE_READERS, pool_reset_on_return=None if begin_sql is None else "rollback",
            )
            event.listen(eng, "connect", _on_sqlite_connect)
            if begin_sql is not None:
                event.listen(eng, "begin", lambda conn: conn.exec_driver_sql(begin_sql))
            return eng

        return make(None), make("BEGIN IMMEDIATE")

    async def aclose(self) -> None:
        threads = [t for t in (self._read_threads, self._write_thread) if t is not None]
        engines = [e for e in (self._reader, self._writer) if e is not None]
        engine, self._engine = self._engine, None
        self._reader = self._writer = None
        self._read_threads = self._write_thread = None

        def stop() -> None:  # queued calls finish first, then the connections close
            for t in threads:
                t.shutdown(wait=True)
            for e in engines:
                e.dispose()

        if threads or engines:
            await asyncio.to_thread(stop)
        if engine is not None:
            await engine.dispose()

    async def ping(self) -> None:
        await self.read(lambda conn: conn.execute(sa.text("SELECT 1")))
        if self._write_error is not None or time.monotonic() - self._last_write_ok > WRITE_PROBE_INTERVAL:
            # Reads can answer while writes fail (the file or its WAL turned read-only, a
            # full disk): a ping that only reads would call that ready. So when the last
            # write failed, or none succeeded for a while, probe with a tiny write; it
            # also brings readiness back once writes work, with nothing else writing.
            try:
                await self.write(_probe)
            except StoreUnavailable as e:
                raise StoreUnavailable(f"writes failing ({e.message})") from None

    async def config_epoch(self) -> int:
        return await self.read(read_epoch)


# --------------------------------------------------------------- in the threads


def _run_read(engine: Engine, fn: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:
        return fn(conn)


def _run_write(engine: Engine, fn: Callable[[Connection], T], config_change: bool, lock: bool) -> T:
    with engine.begin() as conn:
        return _tx_body(conn, fn, config_change, lock)


def _tx_body(conn: Connection, fn: Callable[[Connection], T], config_change: bool, lock: bool) -> T:
    if lock:
        # Serialise config writes across processes, as BEGIN IMMEDIATE does on SQLite.
        # Under READ COMMITTED (PostgreSQL) two writers would otherwise both pass their
        # checks: two default routes, a route to an agent deleted at the same time.
        read_epoch(conn, lock=True)
    result = fn(conn)
    if config_change:
        conn.execute(meta_t.update().where(meta_t.c.key == EPOCH).values(value=meta_t.c.value + 1))
    return result


def _probe(conn: Connection) -> None:
    """A real change: SQLite skips writing a no-op update."""
    res = conn.execute(meta_t.update().where(meta_t.c.key == _PROBE).values(value=meta_t.c.value + 1))
    if res.rowcount == 0:
        try:
            with conn.begin_nested():
                conn.execute(meta_t.insert().values(key=_PROBE, value=1))
        except IntegrityError:  # another process's first probe won
            pass


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let us issue BEGIN ourselves (pysqlite's implicit transactions would start a
    # deferred one and upgrade it too late to wait on the lock).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
    except Exception as e:
        # Switching a fresh file to WAL needs an exclusive lock, and SQLite answers BUSY
        # at once (no busy handler: it would deadlock) when another process is switching
        # it too. WAL is a property of the file, so the winner's switch counts for us;
        # `start()` checks and retries.
        if "locked" not in str(e) and "busy" not in str(e):
            raise
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL+NORMAL: durable across process crashes
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _ensure_wal(reader: Engine) -> None:
    """Make sure the file is in WAL mode, retrying the switch if another process held it."""
    delay = 0.01
    deadline = time.monotonic() + 10.0
    while True:
        # The read engine: autocommit, so no BEGIN (the switch cannot run inside one).
        with reader.connect() as conn:
            current = str(conn.exec_driver_sql("PRAGMA journal_mode").scalar() or "").lower()
            if current in ("wal", "memory"):  # ":memory:" databases cannot use WAL
                return
            try:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            except DBAPIError as e:
                if time.monotonic() > deadline:
                    raise
                log.debug("switching to WAL: %s; retrying", type(e.orig).__name__)
        time.sleep(delay)  # in the store's own thread, not the event loop
        delay = min(delay * 2, 0.25)


def _create_schema(conn: Connection) -> None:
    """Tables, added columns and the meta counters; inside start-up's write transaction
    (under BEGIN IMMEDIATE / the advisory lock), so concurrent starts cannot race."""
    metadata.create_all(conn)
    _add_missing_columns(conn)
    for key in (EPOCH, _SCHEMA):
        exists = conn.scalar(sa.select(meta_t.c.value).where(meta_t.c.key == key))
        if exists is None:
            value = SCHEMA_VERSION if key == _SCHEMA else 0
            try:
                with conn.begin_nested():
                    conn.execute(meta_t.insert().values(key=key, value=value))
            except IntegrityError:  # another process created it first
                pass
        elif key == _SCHEMA and int(exists) < SCHEMA_VERSION:
            if int(exists) < 6:
                _fill_worst_turn(conn)
            conn.execute(meta_t.update().where(meta_t.c.key == _SCHEMA).values(value=SCHEMA_VERSION))
            log.info("database schema upgraded from version %s to %s", exists, SCHEMA_VERSION)
        elif key == _SCHEMA and int(exists) > SCHEMA_VERSION:
            log.warning("database schema version %s is newer than this build's %s", exists, SCHEMA_VERSION)


def _fill_worst_turn(conn: Connection) -> None:
    """Schema 6: `worst_turn_ms` of the sessions written before it existed, from their metrics."""
    sessions = metadata.tables["sessions"]
    filled, after = 0, ""
    while True:  # in pages: a session's metrics can be large
        rows = conn.execute(
            sa.select(sessions.c.session_id, sessions.c.metrics)
            .where(sessions.c.worst_turn_ms.is_(None), sessions.c.session_id > after)
            .order_by(sessions.c.session_id).limit(500)
        ).all()
        if not rows:
            break
        after = rows[-1][0]
        for session_id, stored in rows:
            worst = worst_turn_ms(stored or [])
            if worst is not None:
                conn.execute(sessions.update().where(sessions.c.session_id == session_id).values(worst_turn_ms=worst))
                filled += 1
    if filled:
        log.info("filled in the worst turn of %d earlier session(s)", filled)


def _add_missing_columns(conn: Connection) -> None:
    """Idempotent migration: add the columns newer builds declared (`ADDED_COLUMNS`) to
    tables an older build created."""
    inspector = sa.inspect(conn)
    quote = conn.dialect.identifier_preparer.quote
    for table, cols in ADDED_COLUMNS.items():
        have = {c["name"] for c in inspector.get_columns(table)}
        for col in cols:
            if col in have:
                continue
            column = metadata.tables[table].c[col]
            ddl_type = column.type.compile(dialect=conn.dialect)
            default = column.server_default
            extra = f" DEFAULT {default.arg}" if isinstance(default, sa.DefaultClause) else ""
            conn.execute(sa.text(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(col)} {ddl_type}{extra}"))
            log.info("database migrated: added column %s.%s", table, col)
        for index in metadata.tables[table].indexes:
            if any(c.name in cols for c in index.columns):
                index.create(conn, checkfirst=True)
