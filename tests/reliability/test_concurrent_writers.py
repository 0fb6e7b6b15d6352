"""Item 4: 50 concurrent writers on one agent, each its own HTTP client (own connection).

Phase 1 — one shot: 50 PATCHes with the same `If-Match` fired together: exactly one
200, 49 × 412 (each 412 names the current version in its ETag).
Phase 2 — every client keeps trying until its own change lands (re-sending with the
version from the 412's ETag): every version from 3 to 52 is returned by exactly one 200,
each client's change appears in exactly one version, and `/versions` has no gap and no
duplicate.

Run against one `python -m app dev`, then against two processes sharing one SQLite
file, then two processes sharing one MongoDB (SecantusDB) server, clients spread over
both processes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from sim.db_servers import MongoServer
from tests.reliability.conftest import AUTH, LiveApp

pytestmark = pytest.mark.slow

CLIENTS = 50
AGENT = "sales-agent-v1"


async def _patch(client: httpx.AsyncClient, version: int, who: str) -> httpx.Response:
    return await client.patch(
        f"/api/v1/agents/config/{AGENT}", json={"description": who},
        headers={**AUTH, "If-Match": f'"{version}"', "Content-Type": "application/merge-patch+json"},
    )


async def hammer(bases: list[str], label: str) -> None:
    clients = [httpx.AsyncClient(base_url=bases[i % len(bases)], timeout=60) for i in range(CLIENTS)]
    try:
        current = (await clients[0].get(f"/api/v1/agents/config/{AGENT}", headers=AUTH)).json()["version"]
        start = current

        # phase 1: all at once, same precondition
        t0 = time.monotonic()
        results = await asyncio.gather(*(_patch(c, current, f"shot-{i}") for i, c in enumerate(clients)))
        codes = Counter(r.status_code for r in results)
        assert codes == {200: 1, 412: CLIENTS - 1}, codes
        winner = next(r for r in results if r.status_code == 200)
        current += 1
        assert winner.json()["version"] == current and winner.headers["etag"] == f'"{current}"'
        assert all(r.headers["etag"] == f'"{current}"' for r in results if r.status_code == 412)
        t1 = time.monotonic()

        # phase 2: everyone retries until their change lands
        won: dict[str, int] = {}
        conflicts = 0

        async def writer(i: int, c: httpx.AsyncClient) -> None:
            nonlocal conflicts
            version = current
            who = f"writer-{i}"
            for _ in range(CLIENTS * 4):
                r = await _patch(c, version, who)
                if r.status_code == 200:
                    won[who] = r.json()["version"]
                    return
                assert r.status_code == 412, r.text
                conflicts += 1
                version = int(r.headers["etag"].strip('"'))
            raise AssertionError(f"{who} never got its write in")

        await asyncio.gather(*(writer(i, c) for i, c in enumerate(clients)))
        t2 = time.monotonic()
        assert sorted(won.values()) == list(range(current + 1, current + 1 + CLIENTS)), sorted(won.values())

        history = (await clients[-1].get(f"/api/v1/agents/config/{AGENT}/versions", headers=AUTH)).json()
        versions = [v["version"] for v in history]
        assert versions == list(range(1, start + 2 + CLIENTS)), versions
        by_version = {v["version"]: v["description"] for v in history}
        for who, version in won.items():
            assert by_version[version] == who  # the version a writer was told is its change
        assert Counter(by_version[v] for v in range(current + 1, current + 1 + CLIENTS)).most_common(1)[0][1] == 1
        print(f"\n[writers {label}] one-shot: 1 x 200, {CLIENTS - 1} x 412 in {t1 - t0:.2f}s; "
              f"retry-until-done: {CLIENTS} writes, {conflicts} x 412, {t2 - t1:.2f}s; "
              f"history v1..v{versions[-1]} contiguous")
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def _pair(tmp_path: Path, live_app: type[LiveApp], url: str, prefix: str) -> list[LiveApp]:
    apps = [live_app(tmp_path, f"{prefix}-{n}", database_url=url, livekit=False,
                     extra_env={"LOG_LEVEL": "INFO"}) for n in ("a", "b")]
    for app in apps:
        app.wait_seeded()
    return apps


def test_one_process_then_two_processes_on_one_sqlite_file(tmp_path: Path, live_app: type[LiveApp]) -> None:
    apps = _pair(tmp_path, live_app, f"sqlite+aiosqlite:///{tmp_path}/shared.db", "sqlite")
    asyncio.run(hammer([apps[0].base], "1 process, SQLite"))
    asyncio.run(hammer([a.base for a in apps], "2 processes, one SQLite file"))


def test_two_processes_one_mongo(tmp_path: Path, live_app: type[LiveApp]) -> None:
    with MongoServer() as srv:
        apps = _pair(tmp_path, live_app, srv.url("writers"), "mongo")
        try:
            asyncio.run(hammer([a.base for a in apps], "2 processes, one MongoDB"))
        finally:
            for app in apps:
                app.stop()
