"""Optimistic concurrency end to end: concurrent writers never lose an update."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.api import create_app
from app.settings import Settings
from app.store.sql import SQLStore

Client = AsyncTestClient[Litestar]
AGENTS = "/api/v1/agents/config"
N = 10


async def test_concurrent_patches_with_same_if_match_exactly_one_wins(
    client: Client, agent: dict[str, Any]
) -> None:
    async def writer(i: int) -> Any:
        return await client.patch(
            f"{AGENTS}/support-agent", json={"name": f"writer {i}"}, headers={"If-Match": '"1"'}
        )

    responses = await asyncio.gather(*(writer(i) for i in range(N)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [412] * (N - 1), codes
    (winner,) = [r for r in responses if r.status_code == 200]
    assert winner.json()["version"] == 2
    for loser in (r for r in responses if r.status_code == 412):
        assert loser.json()["extra"]["current_version"] == 2

    versions = (await client.get(f"{AGENTS}/support-agent/versions")).json()
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[1]["name"] == winner.json()["name"]
    current = await client.get(f"{AGENTS}/support-agent")
    assert (current.headers["etag"], current.json()["name"]) == ('"2"', winner.json()["name"])


async def test_concurrent_patches_without_if_match_all_land_in_order(
    client: Client, agent: dict[str, Any]
) -> None:
    """Without a precondition every write succeeds and history stays gap- and duplicate-free."""

    async def writer(i: int) -> Any:
        return await client.patch(f"{AGENTS}/support-agent", json={"description": f"d{i}"})

    responses = await asyncio.gather(*(writer(i) for i in range(N)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    returned = sorted(r.json()["version"] for r in responses)
    assert returned == list(range(2, N + 2))

    versions = (await client.get(f"{AGENTS}/support-agent/versions")).json()
    assert [v["version"] for v in versions] == list(range(1, N + 2))
    # each stored version is exactly what the request that got it wrote
    by_version = {r.json()["version"]: r.json()["description"] for r in responses}
    assert {v["version"]: v["description"] for v in versions[1:]} == by_version


async def test_read_modify_write_loop_with_etags(client: Client, agent: dict[str, Any]) -> None:
    """The intended client pattern: GET, PATCH with its ETag, retry on 412."""

    async def increment() -> None:
        while True:
            cur = await client.get(f"{AGENTS}/support-agent")
            description = cur.json()["description"]
            count = int(description) if description.isdigit() else 0
            r = await client.patch(
                f"{AGENTS}/support-agent",
                json={"description": str(count + 1)},
                headers={"If-Match": cur.headers["etag"]},
            )
            if r.status_code == 200:
                return
            assert r.status_code == 412, r.text

    await asyncio.gather(*(increment() for _ in range(5)))
    final = (await client.get(f"{AGENTS}/support-agent")).json()
    assert final["description"] == "5"  # no increment was lost
    assert final["version"] == 6


async def test_two_store_instances_on_one_file_still_conflict(
    client: Client, agent: dict[str, Any], settings: Settings, tmp_path: Path, admin_key: str
) -> None:
    """Two apps with their own store on the same SQLite file (as two processes would be):
    the in-process write lock cannot help here, the database must arbitrate."""
    other_store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/api.db")
    await other_store.start()
    try:
        async with AsyncTestClient(create_app(settings, other_store)) as other:
            other.headers["Authorization"] = f"Bearer {admin_key}"
            clients = [client, other] * (N // 2)
            responses = await asyncio.gather(
                *(
                    c.patch(f"{AGENTS}/support-agent", json={"name": f"w{i}"}, headers={"If-Match": '"1"'})
                    for i, c in enumerate(clients)
                )
            )
            assert sorted(r.status_code for r in responses) == [200] + [412] * (N - 1)
            versions = (await other.get(f"{AGENTS}/support-agent/versions")).json()
            assert [v["version"] for v in versions] == [1, 2]
    finally:
        await other_store.aclose()
