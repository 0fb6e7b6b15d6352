"""Item 3: kill -9 a worker mid-conversation; nothing it committed is lost.

A child process (`crash_child.py`) runs a real session (text mode, scripted model) and
reports, after each turn, what the store acknowledged: turn seqs/texts and collected
fields. The parent reads N such reports, then SIGKILLs the child while it is in the
middle of the next turns. Then:

- SQLite: `python -m app dev` starts on the same file. Through the admin API, every
  committed turn and field is there, and start-up recovery has marked the session
  `abandoned` (not left `active` forever).
- MongoDB: the same crash, checked through a fresh store. Another live process may
  own an `active` session there, so recovery is by heartbeat, not at start-up: the
  session stays `active` until its owner has been silent past the cutoff, then the
  sweep every process runs (`abandon_stale_sessions`) marks it `abandoned`
  (the supervisor's timing is tested in tests/store/test_session_liveness.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.domain import SessionStatus
from app.domain.models import utcnow
from app.store import open_store
from sim.db_servers import MongoServer
from tests.reliability.conftest import AUTH, REPO, LiveApp

pytestmark = pytest.mark.slow

COMMITTED_BEFORE_KILL = 7  # > the 5 schema fields: some field-less turns too
CHILD = Path(__file__).with_name("crash_child.py")


def crash_after(url: str, n: int, tmp_path: Path) -> dict[str, Any]:
    """Run the child until it has reported `n` committed turns, SIGKILL it, return the
    last report (what the store had acknowledged)."""
    err = open(tmp_path / "child.err", "wb")
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), url, "1000"], cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=err, text=True,
    )
    reports: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 120
        while len(reports) < n:
            assert time.monotonic() < deadline, "child too slow"
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, f"child died: {(tmp_path / 'child.err').read_text()[-4000:]}"
            reports.append(json.loads(line))
        proc.send_signal(signal.SIGKILL)  # mid-conversation: turn n+1 is being written
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
    assert proc.returncode == -signal.SIGKILL
    # whatever the child printed before dying was acknowledged too
    for line in proc.stdout.read().splitlines():  # type: ignore[union-attr]
        reports.append(json.loads(line))
    last = reports[-1]
    assert last["turn"] + 1 == len(reports) >= n
    return last


def assert_nothing_lost(committed: dict[str, Any], record: dict[str, Any]) -> None:
    stored = {t["seq"]: (t["role"], t["text"]) for t in record["turns"]}
    for seq, role, text in committed["turns"]:
        assert stored.get(seq) == (role, text), f"committed turn {seq} lost or changed: {stored.get(seq)}"
    seqs = sorted(stored)
    assert seqs == list(range(len(seqs))), "turns must be contiguous, no duplicates"
    for name, value in committed["collected"].items():
        assert record["collected"].get(name) == value, (name, record["collected"])
    assert len(committed["collected"]) == 5  # every field the child recorded


def test_sqlite_crash_then_restart_recovers_and_abandons(tmp_path: Path, live_app: type[LiveApp]) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/crash.db"
    committed = crash_after(url, COMMITTED_BEFORE_KILL, tmp_path)
    sid = committed["session_id"]
    print(f"\n[crash] sqlite: SIGKILL after {committed['turn'] + 1} acknowledged turns "
          f"({len(committed['turns'])} turn rows, {len(committed['collected'])} fields)")

    app = live_app(tmp_path, "restarted", database_url=url, livekit=False)
    app.wait_seeded()
    r = httpx.get(app.url(f"/api/v1/sessions/{sid}"), headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    record = r.json()
    assert_nothing_lost(committed, record)
    assert record["status"] == "abandoned", record["status"]
    assert record["end_reason"] and record["ended_at"]
    active = httpx.get(app.url("/api/v1/sessions"), params={"status": "active"}, headers=AUTH, timeout=10)
    assert active.json()["total"] == 0
    assert "marked 1 session(s) left active by a previous run as abandoned" in app.output()


def test_mongo_crash_keeps_every_committed_turn(tmp_path: Path) -> None:
    with MongoServer() as srv:
        url = srv.url("crash")
        committed = crash_after(url, COMMITTED_BEFORE_KILL, tmp_path)

        async def read() -> tuple[dict[str, Any], int, dict[str, Any]]:
            store = open_store(url)
            await store.start()
            try:
                before = (await store.get_session(committed["session_id"])).model_dump(mode="json")
                # The sweep as a surviving process runs it once the owner is past the cutoff.
                swept = await store.abandon_stale_sessions(utcnow() + timedelta(seconds=1), "owner stopped")
                after = (await store.get_session(committed["session_id"])).model_dump(mode="json")
                return before, swept, after
            finally:
                await store.aclose()

        record, swept, after = asyncio.run(read())
    assert_nothing_lost(committed, record)
    assert record["status"] == SessionStatus.active.value  # no start-up recovery on a shared store
    assert swept == 1 and after["status"] == SessionStatus.abandoned.value
    assert_nothing_lost(committed, after)
