"""SQLite start-up races: containers sharing one file all come up, and the file ends in WAL.

Switching a fresh file to WAL takes an exclusive lock, and SQLite answers BUSY at once
(no busy handler) when two connections race for it, so a naive per-connection
`PRAGMA journal_mode=WAL` failed one start in a few hundred. Many rounds make that
window likely enough to fail without the fix.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from app.store.sql import SQLStore


async def test_many_concurrent_starts_on_fresh_files(tmp_path: Path) -> None:
    for rnd in range(40):
        db = tmp_path / f"r{rnd}.db"
        stores = [SQLStore(f"sqlite+aiosqlite:///{db}") for _ in range(5)]
        try:
            results = await asyncio.gather(*(s.start() for s in stores), return_exceptions=True)
            assert results == [None] * 5, f"round {rnd}: {results}"
        finally:
            for s in stores:
                await s.aclose()
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal", f"round {rnd}"


async def test_start_switches_a_rollback_journal_file_to_wal(tmp_path: Path) -> None:
    """A file left in rollback-journal mode (another tool, an old copy) is converted at start."""
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("CREATE TABLE unrelated (x INTEGER)")
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # nobody can switch the mode until this commits
    store = SQLStore(f"sqlite+aiosqlite:///{db}")
    try:
        start = asyncio.create_task(store.start())
        await asyncio.sleep(0.3)
        assert not start.done()  # waiting on the lock, not failed
        holder.execute("COMMIT")
        await asyncio.wait_for(start, 15)
    finally:
        holder.close()
        await store.aclose()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
