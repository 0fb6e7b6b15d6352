"""Cross-instance races on routes and agent deletes, for every backend.

Two store instances on one database behave like two processes. The contract suite
covers races on one agent's versions; these cover the invariants that span records:

- at most one route is the default, whatever concurrent `put_route` calls do;
- concurrent `put_route` of the same new purpose never fails with a raw database error;
- a route never points at a deleted agent (a delete racing a `put_route` to the same
  agent ends with either the agent and its route, or neither);
- N processes starting at once on an empty database all come up (PostgreSQL's
  CREATE TABLE races).
"""

from __future__ import annotations

import asyncio

from app.domain import AgentConfig, InUse, InvalidReference, NotFound, Route


async def test_concurrent_default_routes_leave_exactly_one_default(store, open_another, make_agent):
    other = await open_another()
    await store.create_agent_config(make_agent("agent-a"))
    for rnd in range(5):
        results = await asyncio.gather(
            *(
                (store if i % 2 else other).put_route(
                    Route(purpose=f"p{rnd}-{i}", agent_id="agent-a", is_default=True)
                )
                for i in range(6)
            ),
            return_exceptions=True,
        )
        assert all(isinstance(r, Route) for r in results), results
        defaults = [r.purpose for r in await store.list_routes() if r.is_default]
        assert len(defaults) == 1, f"round {rnd}: defaults {defaults}"


async def test_concurrent_put_of_same_new_purpose(store, open_another, make_agent):
    other = await open_another()
    await store.create_agent_config(make_agent("agent-a"))
    await store.create_agent_config(make_agent("agent-b"))
    for rnd in range(5):
        results = await asyncio.gather(
            *(
                (store if i % 2 else other).put_route(
                    Route(purpose=f"same-{rnd}", agent_id="agent-a" if i % 2 else "agent-b")
                )
                for i in range(6)
            ),
            return_exceptions=True,
        )
        assert all(isinstance(r, Route) for r in results), results
        assert [r.purpose for r in await store.list_routes()].count(f"same-{rnd}") == 1


async def test_delete_racing_put_route_never_leaves_a_dangling_route(store, open_another, make_agent):
    other = await open_another()
    await store.create_agent_config(make_agent("keeper"))
    for rnd in range(12):
        aid = f"victim-{rnd}"
        await store.create_agent_config(make_agent(aid))
        deleter, putter = (store, other) if rnd % 2 else (other, store)
        put_first = rnd % 3 == 0

        async def delete() -> object:
            if put_first:
                await asyncio.sleep(0)
            return await deleter.delete_agent_config(aid)

        async def put() -> object:
            if not put_first:
                await asyncio.sleep(0)
            return await putter.put_route(Route(purpose=f"r{rnd}", agent_id=aid))

        d, p = await asyncio.gather(delete(), put(), return_exceptions=True)
        assert d is None or isinstance(d, InUse), d
        assert isinstance(p, Route | InvalidReference), p
        routes = {r.purpose: r.agent_id for r in await store.list_routes()}
        try:
            exists = isinstance(await store.get_agent_config(aid), AgentConfig)
        except NotFound:
            exists = False
        if f"r{rnd}" in routes:
            assert exists, f"round {rnd}: route r{rnd} points at deleted {aid} (delete={d!r}, put={p!r})"
            assert isinstance(d, InUse) and isinstance(p, Route)
        else:
            assert not exists and d is None and isinstance(p, InvalidReference), (d, p)


async def test_concurrent_start_on_a_fresh_database(store_target, make_agent):
    """N processes (containers) starting at once on an empty database all come up."""
    stores = [store_target.new_store() for _ in range(4)]
    try:
        results = await asyncio.gather(*(s.start() for s in stores), return_exceptions=True)
        assert results == [None] * 4, results
        await stores[0].create_agent_config(make_agent("agent-a"))
        for s in stores:
            assert (await s.get_agent_config("agent-a")).version == 1
            assert await s.config_epoch() >= 1
    finally:
        for s in stores:
            await s.aclose()
