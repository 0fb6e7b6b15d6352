"""The `--store` choice shared by the benchmarks: a database URL for a throwaway store.

SQLite is a temporary file; MongoDB (SecantusDB) and PostgreSQL are real servers
started for the run by `sim.db_servers` (dev dependencies, the same ones the
store contract suite uses), so the figures are over the wire, as in production.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

STORES = ("sqlite", "mongo", "postgres")


@contextlib.asynccontextmanager
async def database(kind: str) -> AsyncIterator[str]:
    if kind == "sqlite":
        tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
        try:
            yield f"sqlite+aiosqlite:///{tmp}/bench.db"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    elif kind == "mongo":
        from sim.db_servers import mongo_server

        async with mongo_server() as url:
            yield url
    elif kind == "postgres":
        from sim.db_servers import postgres_server

        async with postgres_server() as url:
            yield url
    else:
        raise SystemExit(f"unknown store {kind!r} (choose from {', '.join(STORES)})")
