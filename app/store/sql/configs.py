"""Agent config versions on SQL: an immutable row per version plus a head row per agent.
A write conflicts through the conditional update of the head (`... WHERE
current_version = :seen`) plus the unique (agent_id, version) index."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from app.domain import AgentConfig
from app.domain.events import Event
from app.store.backend import (
    HeadMoved,
    Known,
    PublishedAgent,
    PublishStep,
    Routed,
    StoredRelease,
    StoredVersion,
    VersionKey,
)
from app.store.sql.database import SQLDatabase
from app.store.sql.journal import insert_events
from app.store.sql.tables import heads_t, routes_t, versions_t

v, h = versions_t, heads_t
_PUBLISHED = sa.func.coalesce(h.c.published_version, h.c.current_version)
"""A head written before publishing existed has no published version: its current one."""
# The JSON as text: decoded only when the caller has not parsed that version already.
_COLS = (v.c.id, v.c.agent_id, v.c.version, sa.cast(v.c.data, sa.Text).label("data"))


class _Absent(Exception):
    """Rolls a write back: there was no such agent."""


def _stored(row: Any, known: Known, head_created_at: Any = None) -> StoredVersion:
    key = VersionKey(row.agent_id, row.id, row.version)
    data = None if key in known else json.loads(row.data)
    return StoredVersion(key, data, head_created_at)


def _insert_version(c: Connection, cfg: AgentConfig) -> int:
    """Insert a version row; its id (autoincrement, never reused) keys the parsed memo."""
    res = c.execute(v.insert().values(agent_id=cfg.agent_id, version=cfg.version,
                                      data=cfg.model_dump(mode="json"), created_at=cfg.updated_at))
    assert res.inserted_primary_key is not None
    return int(res.inserted_primary_key[0])


class SQLConfigs:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db

    async def current(self, agent_id: str, known: Known) -> StoredVersion | None:
        stmt = (
            sa.select(*_COLS, h.c.created_at)
            .join(h, sa.and_(h.c.agent_id == v.c.agent_id, h.c.current_version == v.c.version))
            .where(v.c.agent_id == agent_id)
        )
        row = (await self._db.read(lambda c: c.execute(stmt).first()))
        return None if row is None else _stored(row, known, row.created_at)

    async def version(self, agent_id: str, version: int, known: Known) -> StoredVersion | None:
        stmt = sa.select(*_COLS).where(v.c.agent_id == agent_id, v.c.version == version)
        row = await self._db.read(lambda c: c.execute(stmt).first())
        return None if row is None else _stored(row, known)

    async def list_current(
        self, enabled: bool | None, offset: int, limit: int, known: Known
    ) -> tuple[list[StoredVersion], int]:
        cond = [] if enabled is None else [h.c.enabled == enabled]
        stmt = (
            sa.select(*_COLS)
            .join(h, sa.and_(h.c.agent_id == v.c.agent_id, h.c.current_version == v.c.version))
            .where(*cond).order_by(h.c.agent_id).offset(offset).limit(limit)
        )
        count = sa.select(sa.func.count()).select_from(h).where(*cond)

        def run(c: Connection) -> tuple[list[Any], int]:
            return list(c.execute(stmt).all()), int(c.scalar(count) or 0)

        rows, total = await self._db.read(run)
        return [_stored(r, known) for r in rows], total

    async def versions(self, agent_id: str) -> list[StoredVersion]:
        stmt = sa.select(*_COLS).where(v.c.agent_id == agent_id).order_by(v.c.version)
        rows = await self._db.read(lambda c: c.execute(stmt).all())
        return [_stored(r, ()) for r in rows]

    async def create(self, cfg: AgentConfig, events: list[Event]) -> VersionKey | None:
        def run(c: Connection) -> int:
            c.execute(h.insert().values(agent_id=cfg.agent_id, current_version=1, enabled=cfg.enabled,
                                        created_at=cfg.created_at, updated_at=cfg.updated_at,
                                        published_version=1, release_rev=0))
            row_id = _insert_version(c, cfg)
            insert_events(c, events)
            return row_id

        try:
            row_id = await self._db.write(run, config_change=True)
        except IntegrityError:
            return None
        return VersionKey(cfg.agent_id, row_id, 1)

    async def append(
        self, head: VersionKey, cfg: AgentConfig, events: list[Event], publish: PublishStep | None = None
    ) -> VersionKey:
        def run(c: Connection) -> int:
            res = c.execute(
                h.update().where(h.c.agent_id == head.agent_id, h.c.current_version == head.version)
                .values(current_version=cfg.version, enabled=cfg.enabled, updated_at=cfg.updated_at)
            )
            if res.rowcount != 1:
                raise HeadMoved(c.scalar(sa.select(h.c.current_version).where(h.c.agent_id == head.agent_id)))
            row_id = _insert_version(c, cfg)
            insert_events(c, events)
            if publish is not None and c.execute(
                h.update().where(h.c.agent_id == head.agent_id, h.c.release_rev == publish.rev)
                .values(published_version=cfg.version, release_rev=publish.rev + 1)
            ).rowcount == 1:
                insert_events(c, publish.events)
            return row_id

        try:
            row_id = await self._db.write(run, config_change=True)
        except IntegrityError:
            raise HeadMoved(None) from None
        return VersionKey(cfg.agent_id, row_id, cfg.version)

    async def delete(self, agent_id: str, expected_version: int | None, events: list[Event]) -> bool:
        def run(c: Connection) -> None:
            users = c.execute(sa.select(routes_t.c.purpose).where(routes_t.c.agent_id == agent_id)).scalars().all()
            if users:
                raise Routed(sorted(users))
            cond = [h.c.agent_id == agent_id]
            if expected_version is not None:
                cond.append(h.c.current_version == expected_version)
            if c.execute(h.delete().where(*cond)).rowcount == 0:
                current = c.scalar(sa.select(h.c.current_version).where(h.c.agent_id == agent_id))
                if current is not None:
                    raise HeadMoved(current)
                raise _Absent
            c.execute(v.delete().where(v.c.agent_id == agent_id))
            insert_events(c, events)

        try:
            await self._db.write(run, config_change=True)
        except _Absent:
            return False
        return True

    # --------------------------------------------------------------- releases

    async def release(self, agent_id: str) -> StoredRelease | None:
        stmt = sa.select(h.c.current_version, _PUBLISHED.label("published"), h.c.release_rev, h.c.rollout).where(
            h.c.agent_id == agent_id)
        row = await self._db.read(lambda c: c.execute(stmt).first())
        if row is None:
            return None
        return StoredRelease(agent_id, row.current_version, row.published, row.release_rev or 0, row.rollout)

    async def set_release(
        self, agent_id: str, rev: int, published_version: int, canary_version: int | None,
        rollout: dict[str, Any] | None, events: list[Event],
    ) -> bool | None:
        def run(c: Connection) -> bool | None:
            res = c.execute(
                h.update().where(h.c.agent_id == agent_id, h.c.release_rev == rev)
                .values(published_version=published_version, canary_version=canary_version, rollout=rollout,
                        release_rev=rev + 1)
            )
            if res.rowcount != 1:
                exists = c.scalar(sa.select(h.c.agent_id).where(h.c.agent_id == agent_id))
                return None if exists is None else False
            insert_events(c, events)
            return True

        return await self._db.write(run, config_change=True)

    async def list_published(
        self, offset: int, limit: int, known: Known
    ) -> tuple[list[PublishedAgent], int]:
        page = sa.select(h.c.agent_id).order_by(h.c.agent_id).offset(offset).limit(limit).subquery()
        published = (
            sa.select(*_COLS, h.c.rollout, h.c.current_version.label("current"))
            .join(h, sa.and_(h.c.agent_id == v.c.agent_id, _PUBLISHED == v.c.version))
            .join(page, page.c.agent_id == h.c.agent_id)
            .order_by(h.c.agent_id)
        )
        canaries = (
            sa.select(*_COLS)
            .join(h, sa.and_(h.c.agent_id == v.c.agent_id, h.c.canary_version == v.c.version))
            .join(page, page.c.agent_id == h.c.agent_id)
        )
        count = sa.select(sa.func.count()).select_from(h)

        def run(c: Connection) -> tuple[list[Any], list[Any], int]:
            return list(c.execute(published).all()), list(c.execute(canaries).all()), int(c.scalar(count) or 0)

        rows, canary_rows, total = await self._db.read(run)
        by_agent = {r.agent_id: _stored(r, known) for r in canary_rows}
        out = [
            PublishedAgent(_stored(r, known), by_agent.get(r.agent_id),
                           r.rollout if by_agent.get(r.agent_id) else None, r.current)
            for r in rows
        ]
        return out, total
