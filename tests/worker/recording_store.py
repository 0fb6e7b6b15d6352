"""A real SQLite store whose session writes can be slowed, counted and made to fail,
for the session writer's tests (batching, outages, trace spans)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from app.domain import StoreUnavailable
from app.store.base import SessionWrite
from app.store.sql import SQLStore


class RecordingStore(SQLStore):
    """Counts batches (`batches`: their op names); `delay` slows each batch; `fail`
    decides per batch whether the store is down."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.batches: list[list[str]] = []
        self.delay = 0.0
        self.fail: Callable[[list[SessionWrite]], bool] = lambda ops: False

    async def apply_session_writes(self, session_id: str, ops: list[SessionWrite]) -> None:
        self.batches.append([op.name for op in ops])
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail(ops):
            raise StoreUnavailable("simulated outage")
        await super().apply_session_writes(session_id, ops)


@contextlib.asynccontextmanager
async def recording_store(tmp_path: Path) -> AsyncIterator[RecordingStore]:
    """A started `RecordingStore` on a fresh file under `tmp_path`, closed afterwards."""
    s = RecordingStore(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    await s.start()
    try:
        yield s
    finally:
        await s.aclose()
