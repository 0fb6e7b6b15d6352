"""GET served from the worker's ConfigCache: fast, but never behind this process's writes.

Most tests use a long poll interval and drive reloads through the public
`cache.current()`, so what is served from memory and what from the store does not
depend on timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.api import create_app
from app.settings import Settings
from app.store.cache import ConfigCache
from app.store.sql import SQLStore

Client = AsyncTestClient[Litestar]
AGENTS = "/api/v1/agents/config"
SLOW_POLL = 30.0  # no background reload during a test unless it asks for one

MakeClient = Callable[[float], Awaitable[tuple[Client, ConfigCache]]]


@pytest.fixture
async def make_client(
    settings: Settings, store: SQLStore, admin_key: str
) -> AsyncIterator[MakeClient]:
    async with AsyncExitStack() as stack:

        async def make(poll_interval: float) -> tuple[Client, ConfigCache]:
            cache = ConfigCache(store, poll_interval=poll_interval)
            await cache.start()
            stack.push_async_callback(cache.aclose)
            client = await stack.enter_async_context(
                AsyncTestClient(create_app(settings, store, cache=cache))
            )
            client.headers["Authorization"] = f"Bearer {admin_key}"
            return client, cache

        yield make


@pytest.fixture
def store_reads(store: SQLStore, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every `store.get_agent_config` call, recorded."""
    calls: list[tuple[Any, ...]] = []
    original = store.get_agent_config

    async def counting(*a: Any, **kw: Any) -> Any:
        calls.append(a)
        return await original(*a, **kw)

    monkeypatch.setattr(store, "get_agent_config", counting)
    return calls


async def test_fresh_cache_serves_without_the_store(
    make_client: MakeClient, body: Any, store_reads: list[Any]
) -> None:
    client, cache = await make_client(SLOW_POLL)
    assert (await client.post(AGENTS, json=body())).status_code == 201
    await cache.current()  # reload after the write
    assert cache.is_fresh()

    r = await client.get(f"{AGENTS}/support-agent")
    assert (r.status_code, r.headers["etag"]) == (200, '"1"')
    assert store_reads == []
    # history and unknown ids always go to the store
    assert (await client.get(f"{AGENTS}/support-agent", params={"version": 1})).status_code == 200
    assert (await client.get(f"{AGENTS}/ghost-agent")).status_code == 404
    assert len(store_reads) == 2


async def test_own_writes_are_visible_immediately(
    make_client: MakeClient, body: Any, store_reads: list[Any]
) -> None:
    client, cache = await make_client(SLOW_POLL)
    assert (await client.post(AGENTS, json=body())).status_code == 201
    await cache.current()
    for n in range(2, 5):
        assert (await client.patch(f"{AGENTS}/support-agent", json={"name": f"v{n}"})).status_code == 200
        got = await client.get(f"{AGENTS}/support-agent")  # cache is dirty: the store answers
        assert (got.headers["etag"], got.json()["name"]) == (f'"{n}"', f"v{n}")
    reads = len(store_reads)
    await cache.current()  # once reloaded, memory answers with the same thing
    got = await client.get(f"{AGENTS}/support-agent")
    assert (got.headers["etag"], got.json()["name"]) == ('"4"', "v4")
    assert len(store_reads) == reads
    assert (await client.delete(f"{AGENTS}/support-agent")).status_code == 204
    assert (await client.get(f"{AGENTS}/support-agent")).status_code == 404


async def test_own_write_is_visible_while_a_reload_is_in_flight(
    make_client: MakeClient, body: Any, store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, cache = await make_client(SLOW_POLL)
    assert (await client.post(AGENTS, json=body())).status_code == 201
    await cache.current()
    assert (await client.patch(f"{AGENTS}/support-agent", json={"name": "v2"})).status_code == 200

    entered, gate = asyncio.Event(), asyncio.Event()
    list_routes = store.list_routes

    async def held_list_routes() -> Any:
        entered.set()
        await gate.wait()
        return await list_routes()

    # A reload (what the poll loop does every interval) that has read the configs but
    # not yet swapped the snapshot in: the old snapshot must not count as fresh.
    monkeypatch.setattr(store, "list_routes", held_list_routes)
    reload = asyncio.create_task(cache.current())
    await entered.wait()
    try:
        got = await client.get(f"{AGENTS}/support-agent")
        assert got.json()["name"] == "v2"
    finally:
        gate.set()
        await reload


async def test_other_process_writes_show_within_the_poll_interval(
    make_client: MakeClient, body: Any, tmp_path: Path
) -> None:
    client, _ = await make_client(0.1)
    assert (await client.post(AGENTS, json=body())).status_code == 201
    other = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/api.db")  # as another process would
    await other.start()
    try:
        await other.update_agent_config("support-agent", {"name": "elsewhere"})
    finally:
        await other.aclose()
    for _ in range(150):  # up to 3 s; the bound is one poll interval
        r = await client.get(f"{AGENTS}/support-agent")
        if r.json()["name"] == "elsewhere":
            assert r.headers["etag"] == '"2"'
            return
        await asyncio.sleep(0.02)
    raise AssertionError("another process's write never became visible")
