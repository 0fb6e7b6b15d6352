"""ConfigCache: no store round trip when nothing changed, never stale after a write,
other processes' writes seen within a second, last known-good during an outage."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.domain import AgentConfigInput, NotFound, Route, StoreUnavailable
from app.store.cache import ConfigCache
from app.store.sql import SQLStore


def agent(agent_id: str, name: str = "A") -> AgentConfigInput:
    return AgentConfigInput(agent_id=agent_id, name=name, prompt_config={"instructions": "hi"})


class CountingStore(SQLStore):
    """The real SQL store, counting epoch queries and able to simulate an outage."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.epoch_queries = 0
        self.down = False

    async def config_epoch(self) -> int:
        self.epoch_queries += 1
        if self.down:
            raise StoreUnavailable("simulated outage")
        return await super().config_epoch()

    async def list_agent_configs(self, **kw):  # type: ignore[no-untyped-def]
        if self.down:
            raise StoreUnavailable("simulated outage")
        return await super().list_agent_configs(**kw)

    async def list_published(self, **kw):  # type: ignore[no-untyped-def]
        if self.down:
            raise StoreUnavailable("simulated outage")
        return await super().list_published(**kw)


@pytest.fixture
async def store(tmp_path):
    s = CountingStore(f"sqlite+aiosqlite:///{tmp_path}/c.db")
    await s.start()
    yield s
    await s.aclose()


async def test_fresh_snapshot_needs_no_store_query(store: CountingStore) -> None:
    await store.create_agent_config(agent("alpha-agent"))
    cache = ConfigCache(store, poll_interval=0.5)
    await cache.start()
    try:
        snap = await cache.current()
        assert "alpha-agent" in snap.configs
        before = store.epoch_queries
        for _ in range(100):
            assert (await cache.current()) is snap
        assert store.epoch_queries == before
    finally:
        await cache.aclose()


async def test_own_write_is_seen_by_the_next_read(store: CountingStore) -> None:
    await store.create_agent_config(agent("alpha-agent"))
    cache = ConfigCache(store, poll_interval=60)  # the poll cannot be what saves us
    await cache.start()
    try:
        assert (await cache.current()).configs["alpha-agent"].version == 1
        await store.update_agent_config("alpha-agent", {"name": "B"})
        snap = await cache.current()
        assert snap.configs["alpha-agent"].version == 2
        assert snap.configs["alpha-agent"].name == "B"
    finally:
        await cache.aclose()


async def test_other_process_write_seen_within_one_second(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    writer, reader = SQLStore(url), SQLStore(url)  # two stores = two processes' view
    await writer.start()
    await reader.start()
    await writer.create_agent_config(agent("alpha-agent"))
    cache = ConfigCache(reader, poll_interval=0.2)
    await cache.start()
    try:
        assert cache.snapshot.configs["alpha-agent"].version == 1
        await writer.update_agent_config("alpha-agent", {"name": "B"})
        t0 = time.monotonic()
        while cache.snapshot.configs["alpha-agent"].version != 2:
            assert time.monotonic() - t0 < 1.0, "change not seen within 1 s"
            await asyncio.sleep(0.02)
        # and a session start through current() sees it too
        assert (await cache.current()).configs["alpha-agent"].version == 2
    finally:
        await cache.aclose()
        await writer.aclose()
        await reader.aclose()


async def test_outage_serves_last_known_good_marked_stale(store: CountingStore) -> None:
    await store.create_agent_config(agent("alpha-agent"))
    await store.put_route(Route(purpose="support", agent_id="alpha-agent", is_default=True))
    cache = ConfigCache(store, poll_interval=0.05)
    await cache.start()
    try:
        assert not (await cache.current()).stale
        store.down = True
        await asyncio.sleep(0.3)  # polls fail; the snapshot is no longer known fresh
        snap = await cache.current()
        assert snap.stale
        assert snap.configs["alpha-agent"].version == 1
        assert snap.default_agent_id == "alpha-agent"
        assert cache.store_ok is False
        store.down = False
        await asyncio.sleep(0.2)
        assert not (await cache.current()).stale
    finally:
        await cache.aclose()


async def test_outage_with_nothing_cached_raises(store: CountingStore) -> None:
    store.down = True
    cache = ConfigCache(store, poll_interval=0.05)
    await cache.start()  # must not raise: the worker starts while the store is down
    try:
        with pytest.raises(StoreUnavailable):
            await cache.current()
    finally:
        await cache.aclose()


async def test_get_agent_config_refuses_disabled(store: CountingStore) -> None:
    await store.create_agent_config(agent("alpha-agent"))
    await store.update_agent_config("alpha-agent", {"enabled": False})
    cache = ConfigCache(store)
    try:
        with pytest.raises(NotFound):
            await cache.get_agent_config("alpha-agent")
        with pytest.raises(NotFound):
            await cache.get_agent_config("nobody-here")
    finally:
        await cache.aclose()
