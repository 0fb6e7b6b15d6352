"""Item 6: the store fails mid-run; conversations go on and nothing is silently dropped.

Two real outages, each with a live `python -m app dev` (its `/readyz` and admin API)
and, in this process, worker services on the same database running real text sessions
(`prepare_session` + LiveKit `AgentSession` on the scripted model):

- **SQLite made read-only.** Root ignores file permissions, so `chmod` proves nothing
  here; instead the database file and its WAL get the immutable attribute
  (`chattr +i`), which binds root too: every write fails (SQLITE_READONLY / I/O error)
  while reads still work. (The `-shm` file is left alone: SQLite has it mmapped, and an
  immutable mapping kills the process with SIGBUS — an environment hazard, not a store
  outage.)
- **MongoDB stopped** (SecantusDB with on-disk storage, restarted on the same port).

Checked in both: a session that started before the outage keeps talking through it;
a session started during it gets a config (the current one while reads work, the last
known-good one, marked `degraded`, when they do not); `/readyz` is 503 with
`store: down` and admin writes are 503 + Retry-After; the sessions' writes queue
within bounds, a session closing mid-outage hands its unwritten writes to the
process buffer instead of dropping them, and after recovery every turn and field is
stored, `/readyz` is 200 again, and nothing was logged as lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from livekit.agents import AgentSession

from app.domain.routing import MetadataSource
from app.settings import Settings
from app.store import open_store
from app.worker.services import WorkerServices
from app.worker.session_start import PreparedSession, prepare_session
from sim.db_servers import MongoServer
from sim.fake_openai import FakeOpenAI
from tests.reliability.conftest import AUTH, LiveApp

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr (e2fsprogs)"),
]

T = TypeVar("T")

FIELDS = [("caller_name", "Ada Lovelace"), ("issue_category", "billing"), ("urgency", "high"),
          ("description", "I was charged twice for one order."), ("order_id", "AB123456")]


@pytest.fixture
def lost_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="app.worker.sessions"):
        yield caplog


def _lost(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


class Conversation:
    """One text session through the real session-start path."""

    def __init__(self, services: WorkerServices, room: str) -> None:
        self.services, self.room = services, room
        self.fake = FakeOpenAI()
        self.prepared: PreparedSession | None = None
        self.session: AgentSession | None = None
        self.said: list[tuple[str, str]] = []
        self.fields: dict[str, str] = {}

    async def start(self) -> Conversation:
        meta = json.dumps({"purpose": "support", "user_id": self.room})
        self.prepared = await prepare_session(self.services, [MetadataSource("job", meta)], room=self.room,
                                              audio=False, llm_client=self.fake.client())
        self.session = AgentSession()
        await self.session.__aenter__()
        self.prepared.manager.attach(self.session)
        await self.session.start(self.prepared.agent, capture_run=True)
        return self

    async def turn(self, i: int) -> None:
        assert self.session is not None
        reply = f"[{self.room}] noted, turn {i}."
        if i < len(FIELDS):
            name, value = FIELDS[i]
            self.fake.tool_call(f"record_{name}", {"value": value}).text(reply)
            self.fields[name] = value
        else:
            self.fake.text(reply)
        user = f"[{self.room}] user turn {i}"
        result = await self.session.run(user_input=user)
        result.expect.contains_message(role="assistant")  # the conversation goes on
        self.said += [("user", user), ("assistant", reply)]

    async def close(self, flush_timeout: float | None = None) -> None:
        assert self.prepared is not None and self.session is not None
        if flush_timeout is not None:  # production waits 10 s for the store at close
            self.prepared.manager._flush_timeout = flush_timeout
        await self.session.__aexit__(None, None, None)
        await self.prepared.aclose()

    async def check_stored(self, store: Any) -> None:
        assert self.prepared is not None
        rec = await store.get_session(self.prepared.record.session_id)
        stored = [(t.role, t.text) for t in rec.turns]
        missing = [s for s in self.said if s not in stored]
        assert not missing, f"{self.room}: turns lost: {missing}"
        assert [t.seq for t in rec.turns] == list(range(len(rec.turns)))
        assert {k: rec.collected.get(k) for k in self.fields} == self.fields
        assert rec.status.value == "completed", rec.status


def _wait_ready(app: LiveApp, status: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(app.url("/readyz"), timeout=5)
            if last.status_code == status:
                return last.json()
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.25)
    raise AssertionError(f"/readyz never answered {status}: {last!r} {getattr(last, 'text', '')}")


async def _wait_ready_async(app: LiveApp, status: int, timeout: float) -> dict[str, Any]:
    return await asyncio.to_thread(_wait_ready, app, status, timeout)


async def _patch(app: LiveApp) -> httpx.Response:
    async with httpx.AsyncClient(base_url=app.base, headers=AUTH, timeout=30) as c:
        return await c.patch("/api/v1/agents/config/sales-agent-v1", json={"description": "during outage"},
                             headers={"Content-Type": "application/merge-patch+json"})


def _stuck_at(task: asyncio.Task[Any], depth: int = 0) -> str:
    """Where a pending task waits: its chain of awaits, outermost first, into the task it
    awaits if it awaits one."""
    lines, coro = [], task.get_coro()
    while coro is not None and len(lines) < 60:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    waiter = getattr(task, "_fut_waiter", None)
    if isinstance(waiter, asyncio.Task) and depth < 5:
        lines += [f"  ... awaiting task {waiter.get_name()!r}:", _stuck_at(waiter, depth + 1)]
    return "\n".join(lines)


async def _phase(name: str, seconds: float, work: Awaitable[T]) -> T:
    """Run one phase of a test within `seconds` (generous: a run takes ~25 s in all), so a
    stalled await fails the test naming the phase and the await it is stuck in, instead of
    stalling CI. `asyncio.wait`, not `asyncio.timeout`: a cancellation that the code under
    test swallows (see `app.background`) cannot stretch this bound."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if done:
        return task.result()
    where = _stuck_at(task)
    task.cancel()
    raise AssertionError(f"phase {name!r} did not finish within {seconds:g}s; stuck at:\n{where}")


def _chattr(flag: str, *files: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, files)], check=True)


async def test_sqlite_turns_read_only_mid_run(tmp_path: Path, live_app: type[LiveApp], lost_log) -> None:
    db = tmp_path / "outage.db"
    url = f"sqlite+aiosqlite:///{db}"
    app = live_app(tmp_path, "ro-app", database_url=url, livekit=False, extra_env={"LOG_LEVEL": "INFO"})
    await asyncio.to_thread(app.wait_seeded)
    store = open_store(url)
    await store.start()
    services = WorkerServices(Settings(_env_file=None, cache_poll_interval=0.2), store)  # type: ignore[call-arg]
    await services.start()
    frozen = [db, db.with_name(db.name + "-wal")]
    try:
        a = await Conversation(services, "before").start()
        for i in range(2):
            await a.turn(i)
        assert await a.prepared.manager.flush(10)  # type: ignore[union-attr]

        _chattr("+i", *frozen)
        t_out = time.monotonic()
        try:
            for i in range(2, 4):  # the call goes on
                await a.turn(i)
            assert not await a.prepared.manager.flush(0.5)  # type: ignore[union-attr]
            assert a.prepared.manager.failed_writes > 0  # type: ignore[union-attr]

            b = await Conversation(services, "during").start()  # reads work: the current config
            assert b.prepared.config.agent_id == "support-agent-v1"  # type: ignore[union-attr]
            await b.turn(0)
            await b.close(flush_timeout=1.0)  # ends mid-outage: its writes go to the buffer
            assert b.prepared.manager.spilled > 0 and b.prepared.manager.dropped == []  # type: ignore[union-attr]
            assert len(services.pending) > 0

            r = await _patch(app)  # the app's own writes fail: 503, retry later
            assert r.status_code == 503 and r.headers.get("retry-after"), r.text
            ready = await _wait_ready_async(app, 503, 20)
            assert ready["store"] == "down" and "writes failing" in (ready["detail"] or ""), ready
            print(f"\n[outage sqlite] read-only: /readyz 503 {time.monotonic() - t_out:.1f}s in; "
                  f"{len(services.pending)} write(s) buffered from the closed session, "
                  f"{a.prepared.manager.failed_writes} failed attempt(s) queued in the live one")  # type: ignore[union-attr]
        finally:
            _chattr("-i", *frozen)
        t_back = time.monotonic()
        assert await a.prepared.manager.flush(20)  # type: ignore[union-attr]
        assert await services.pending.flush(20), len(services.pending)
        await _wait_ready_async(app, 200, 20)
        print(f"[outage sqlite] writable again: flushed and /readyz 200 within {time.monotonic() - t_back:.1f}s")
        await a.turn(4)
        await a.close()
        await a.check_stored(store)
        await b.check_stored(store)
        assert (await _patch(app)).status_code == 200
        assert not _lost(lost_log), _lost(lost_log)
        assert services.pending.lost == 0
    finally:
        _chattr("-i", *frozen)
        await _phase("teardown", 60, _close(services, store))


async def test_mongo_stops_mid_run(tmp_path: Path, live_app: type[LiveApp], lost_log) -> None:
    srv = MongoServer(storage_path=tmp_path / "mongo-data")
    srv.start()
    try:
        url = srv.url("outage")
        app = live_app(tmp_path, "mongo-app", database_url=url, livekit=False, extra_env={"LOG_LEVEL": "INFO"})
        await _phase("app seeded", 150, asyncio.to_thread(app.wait_seeded))
        store = open_store(url)
        await _phase("store start", 30, store.start())
        services = WorkerServices(Settings(_env_file=None, cache_poll_interval=0.2), store)  # type: ignore[call-arg]
        await _phase("services start", 30, services.start())
        try:
            a = Conversation(services, "before")

            async def before() -> None:
                await a.start()
                for i in range(2):
                    await a.turn(i)
                assert await a.prepared.manager.flush(10)  # type: ignore[union-attr]

            await _phase("before the outage", 120, before())

            async def outage() -> Conversation:
                await srv.astop()
                t_out = time.monotonic()
                for i in range(2, 4):
                    await a.turn(i)
                # The cache's poll notices (0.2 s interval; a poll against a dead Mongo takes
                # up to its 2 s server-selection timeout). Until it does, the snapshot is still
                # fresh and sessions are rightly not marked degraded.
                deadline = time.monotonic() + 10
                while services.cache.is_fresh() and time.monotonic() < deadline:  # type: ignore[union-attr]
                    await asyncio.sleep(0.05)
                b = await Conversation(services, "during").start()  # nothing readable: last known-good
                assert b.prepared.config.agent_id == "support-agent-v1"  # type: ignore[union-attr]
                assert "last known-good" in (b.prepared.record.degraded or "")  # type: ignore[union-attr]
                await b.turn(0)
                await b.close(flush_timeout=1.0)
                assert b.prepared.manager.spilled > 0 and b.prepared.manager.dropped == []  # type: ignore[union-attr]
                ready = await _wait_ready_async(app, 503, 20)
                assert ready["store"] == "down", ready
                r = await _patch(app)
                assert r.status_code == 503 and r.headers.get("retry-after"), r.text
                print(f"\n[outage mongo] stopped: /readyz 503 {time.monotonic() - t_out:.1f}s in; "
                      f"{len(services.pending)} write(s) buffered")
                return b

            b = await _phase("during the outage", 150, outage())

            async def restart() -> None:
                await srv.astart()
                t_back = time.monotonic()
                assert await a.prepared.manager.flush(30)  # type: ignore[union-attr]
                assert await services.pending.flush(30), len(services.pending)
                await _wait_ready_async(app, 200, 30)
                print(f"[outage mongo] restarted: flushed and /readyz 200 within {time.monotonic() - t_back:.1f}s")

            await _phase("restart and flush", 180, restart())

            async def after() -> None:
                await a.turn(4)
                await a.close()
                await a.check_stored(store)
                await b.check_stored(store)
                assert (await _patch(app)).status_code == 200

            await _phase("after recovery", 120, after())
            assert not _lost(lost_log), _lost(lost_log)
            assert services.pending.lost == 0
        finally:
            await _phase("teardown", 60, _close(services, store))
            app.stop()
    finally:
        srv.close()


async def _close(services: WorkerServices, store: Any) -> None:
    await services.aclose()
    await store.aclose()
