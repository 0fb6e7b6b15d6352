"""Several worker processes on one machine (issue 18): the real `WorkerPool` spawning the
real `WorkerRuntime` (store, config cache, VAD, session writers, heartbeats, drain) on
one SQLite file, with calls started by the test (tests/worker/pool_child.py) since
there is no LiveKit server here. The stale-session sweep is the supervisor's own.

Run with `-s` to see the figures (restart time, drain time, propagation latency).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient
from pydantic import SecretStr

from app.api.app import create_app
from app.domain import SessionRecord, SessionStatus
from app.seed import seed
from app.settings import Settings
from app.store.cache import ConfigCache
from app.store.sql import SQLStore
from app.supervisor import Supervisor
from app.worker import drain
from app.worker.drain import GOODBYE, SHUTDOWN_REASON
from app.worker.pool import WorkerPool, worker_exit_budget
from tests.worker.pool_child import resolve_main, sessions_main

ADMIN = "pool-test-admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
START_TIMEOUT = 90.0
"""Cold starts of several processes at once (imports, the VAD) on a shared 2-core machine."""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLStore]:
    s = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/pool.db")
    await s.start()
    await seed(s)
    yield s
    await s.aclose()


def settings_for(tmp_path: Path, **kw: object) -> Settings:
    base: dict[str, object] = dict(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/pool.db", session_heartbeat_interval=0.2,
        session_stale_after=1.0, cache_poll_interval=0.5, drain_timeout=1.0, admin_api_key=SecretStr(ADMIN),
    )
    return Settings(_env_file=None, **(base | kw))  # type: ignore[call-arg, arg-type]


async def wait_until(what: str, cond: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {what}")


async def wait_for_records(
    store: SQLStore, ids: list[str], what: str, cond: Callable[[SessionRecord], bool], timeout: float
) -> dict[str, SessionRecord]:
    deadline = time.monotonic() + timeout
    while True:
        recs = {sid: await store.get_session(sid) for sid in ids}
        if all(cond(r) for r in recs.values()):
            return recs
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}: {[(r.status, len(r.turns)) for r in recs.values()]}")
        await asyncio.sleep(0.1)


def session_ids(out: Path, index: int, pid: int | None) -> list[str]:
    path = out / f"w{index}-{pid}.txt"
    return path.read_text().split() if path.exists() else []


def scraped(name: str, **labels: str) -> float:
    """The sum of `name`'s samples (matching `labels`) in what `GET /metrics` serves."""
    from prometheus_client.parser import text_string_to_metric_families

    from app.observability.metrics import render as exposition

    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition().decode())
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def user_turns(rec: SessionRecord) -> int:
    return sum(1 for t in rec.turns if t.role == "user")


async def test_a_killed_worker_process_is_replaced_and_only_its_calls_are_abandoned(
    tmp_path: Path, store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOL_TEST_DIR", str(tmp_path))
    monkeypatch.setenv("POOL_TEST_SESSIONS", "2")
    settings = settings_for(tmp_path, drain_timeout=0.5)
    pool = WorkerPool(settings, count=2, target=sessions_main)
    pool.start()
    monkeypatch.setenv("APP_INSTANCE_ID", "pool-test")  # the supervisor takes an owner id of its own
    sup = Supervisor(settings, dev=False)
    sup.store = store
    sweep = asyncio.create_task(sup._session_liveness())  # the real stale-session sweep
    try:
        await wait_until("2 processes with 2 calls each", lambda: all(
            w.state == "registered" and w.sessions == 2 for w in pool.workers), START_TIMEOUT)
        victim, other = pool.workers[0].pid, pool.workers[1].pid
        assert victim and other and victim != other
        await wait_until("session ids written", lambda: len(session_ids(tmp_path, 0, victim)) == 2
                         and len(session_ids(tmp_path, 1, other)) == 2, 10)
        victim_ids, other_ids = session_ids(tmp_path, 0, victim), session_ids(tmp_path, 1, other)
        await wait_for_records(store, victim_ids + other_ids, "2 user turns stored in every call",
                               lambda r: user_turns(r) >= 2, 30)
        committed = {sid: [(t.seq, t.role, t.text) for t in (await store.get_session(sid)).turns]
                     for sid in victim_ids}
        others_before = {sid: user_turns(await store.get_session(sid)) for sid in other_ids}

        t_kill = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        # its calls: abandoned by the sweep once its heartbeats stopped, turns intact
        recs = await wait_for_records(store, victim_ids, "the dead process's calls abandoned",
                                      lambda r: r.status == SessionStatus.abandoned, 15)
        t_abandoned = time.monotonic() - t_kill
        for sid, rec in recs.items():
            assert rec.end_reason is not None and "owner process stopped" in rec.end_reason
            assert rec.ended_at is not None
            stored = [(t.seq, t.role, t.text) for t in rec.turns]
            assert stored[: len(committed[sid])] == committed[sid]  # nothing committed was lost
            assert [t.seq for t in rec.turns] == list(range(len(rec.turns)))

        # replaced, with backoff, by a new process that takes calls again
        await wait_until("worker 0 replaced", lambda: pool.workers[0].restarts == 1
                         and pool.workers[0].pid not in (None, victim)
                         and pool.workers[0].state == "registered" and pool.workers[0].sessions == 2, START_TIMEOUT)
        t_replaced = time.monotonic() - t_kill
        assert pool.workers[1].pid == other and pool.workers[1].restarts == 0

        # the other process's calls carried on throughout
        recs = await wait_for_records(
            store, other_ids, "the other process's calls still going",
            lambda r: r.status == SessionStatus.active and user_turns(r) >= others_before[r.session_id] + 3, 30)
        print(f"\nkill -9 of a worker process: its 2 calls abandoned after {t_abandoned:.1f}s "
              f"(SESSION_STALE_AFTER={settings.session_stale_after:g}s), process replaced after {t_replaced:.1f}s")
    finally:
        sweep.cancel()
        await pool.drain()


async def test_sigterm_drains_every_worker_process_within_the_budget(
    tmp_path: Path, store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOL_TEST_DIR", str(tmp_path))
    monkeypatch.setenv("POOL_TEST_SESSIONS", "2")
    (tmp_path / "metrics").mkdir()  # multiprocess metrics, as `python -m app dev|start` sets them up
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    settings = settings_for(tmp_path, drain_timeout=1.0)
    wakes: list[float] = []  # the webhook dispatcher's wake-ups (session.started / .ended commits)
    pool = WorkerPool(settings, count=3, target=sessions_main, on_journal=lambda: wakes.append(time.monotonic()))
    pool.start()
    drained = False
    try:
        await wait_until("3 processes with 2 calls each", lambda: all(
            w.state == "registered" and w.sessions == 2 for w in pool.workers), START_TIMEOUT)
        pids = [w.pid for w in pool.workers]
        await wait_until("session ids written", lambda: all(
            len(session_ids(tmp_path, i, pid)) == 2 for i, pid in enumerate(pids)), 10)
        ids = [sid for i, pid in enumerate(pids) for sid in session_ids(tmp_path, i, pid)]
        await wait_for_records(store, ids, "a user turn stored in every call", lambda r: user_turns(r) >= 1, 30)
        assert len(wakes) >= len(ids)  # every session.started committed in a worker woke the dispatcher
        started_wakes = len(wakes)
        # /metrics adds up every worker process's values
        assert scraped("voice_sessions_active") == 6 and scraped("voice_sessions_started_total") == 6

        t0 = time.monotonic()
        await pool.drain()
        drained = True
        elapsed = time.monotonic() - t0
        print(f"\ndrain of 3 worker processes with 2 live calls each, DRAIN_TIMEOUT=1s: {elapsed:.2f}s")

        assert 1.0 <= elapsed < worker_exit_budget(1.0)
        assert elapsed < 1.0 + drain.ABANDON_BUDGET  # well inside: nothing hung
        for pid in pids:
            assert pid is not None
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert [w.state for w in pool.workers] == ["stopped"] * 3
        assert len(wakes) > started_wakes  # and the session.ended of the drained calls
        assert scraped("voice_sessions_active") == 0  # the exited processes' gauges no longer count
        assert scraped("voice_sessions_ended_total", status="abandoned") == 6
        for sid in ids:
            rec = await store.get_session(sid)
            assert rec.status == SessionStatus.abandoned and rec.end_reason == SHUTDOWN_REASON, sid
            assert (rec.turns[-1].role, rec.turns[-1].text) == ("assistant", GOODBYE)
            assert [t.seq for t in rec.turns] == list(range(len(rec.turns)))
    finally:
        if not drained:
            await pool.drain()


async def test_a_config_change_reaches_every_worker_process_within_one_cache_poll(
    tmp_path: Path, store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PATCH through the admin API (its own process), then the next session start in each
    worker process resolves the new version within one `CACHE_POLL_INTERVAL` (plus a
    margin for a shared machine's scheduling)."""
    monkeypatch.setenv("POOL_TEST_DIR", str(tmp_path))
    settings = settings_for(tmp_path, cache_poll_interval=0.5)
    pool = WorkerPool(settings, count=2, target=resolve_main)
    pool.start()
    cache = ConfigCache(store, poll_interval=settings.cache_poll_interval)
    await cache.start()
    files = [tmp_path / f"resolve-w{i}.txt" for i in range(2)]

    def versions(path: Path) -> dict[int, float]:
        lines = path.read_text().splitlines() if path.exists() else []
        return {int(v): float(t) for _, v, t in (line.split() for line in lines)}

    latencies: list[float] = []
    try:
        await wait_until("both processes resolving", lambda: all(versions(f) for f in files), START_TIMEOUT)
        app = create_app(settings, store, cache=cache)
        async with AsyncTestClient(app) as client:
            for rnd in range(3):
                r = await client.patch("/api/v1/agents/config/sales-agent-v1",
                                       json={"description": f"round {rnd}"}, headers=AUTH)
                t_committed = time.time()
                assert r.status_code == 200, r.text
                version = r.json()["version"]
                await wait_until(f"v{version} resolved in every process",
                                 lambda: all(version in versions(f) for f in files), 10)
                latencies += [versions(f)[version] - t_committed for f in files]
                await asyncio.sleep(0.3)
        print(f"\nPATCH -> next session start in each of 2 worker processes: "
              f"{', '.join(f'{x * 1000:.0f}' for x in latencies)} ms (cache poll {settings.cache_poll_interval:g}s)")
        assert max(latencies) <= settings.cache_poll_interval + 0.5
    finally:
        await pool.drain()
        await cache.aclose()
