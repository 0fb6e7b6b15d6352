"""The route table on SQL: a row per purpose. The compare-and-swap token is the config
epoch (every agent and route write bumps it, old builds included), checked inside the
serialised config-write transaction."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.domain import Route
from app.domain.events import Event
from app.store.backend import MissingAgents, RouteTable
from app.store.sql.database import SQLDatabase, read_epoch
from app.store.sql.journal import insert_events
from app.store.sql.tables import heads_t, routes_t

r = routes_t


class _LostRace(Exception):
    """Rolls a swap back: the table changed since it was read."""


class SQLRoutes:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db

    async def table(self) -> RouteTable:
        def run(c: Connection) -> RouteTable:
            rev = read_epoch(c)  # first: a write landing between the two reads fails the swap
            rows = c.execute(sa.select(r).order_by(r.c.purpose)).all()
            routes = [Route(purpose=x.purpose, agent_id=x.agent_id, is_default=x.is_default,
                            updated_at=x.updated_at, phone_numbers=x.phone_numbers or []) for x in rows]
            return RouteTable(rev, routes)

        return await self._db.read(run)

    async def swap(self, rev: int, routes: list[Route], agent_ids: set[str], events: list[Event]) -> bool:
        def run(c: Connection) -> None:
            if read_epoch(c) != rev:
                raise _LostRace
            if agent_ids:
                found = set(c.execute(sa.select(heads_t.c.agent_id).where(heads_t.c.agent_id.in_(agent_ids)))
                            .scalars().all())
                missing = sorted(agent_ids - found)
                if missing:
                    raise MissingAgents(missing)
            c.execute(r.delete())
            if routes:
                c.execute(r.insert(), [dict(purpose=x.purpose, agent_id=x.agent_id, is_default=x.is_default,
                                            updated_at=x.updated_at, phone_numbers=list(x.phone_numbers))
                                       for x in routes])
            insert_events(c, events)

        try:
            await self._db.write(run, config_change=True)
        except _LostRace:
            return False
        return True
