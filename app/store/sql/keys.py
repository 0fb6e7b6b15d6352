"""Named API keys on SQL: the `api_keys` table (name primary key, hash unique). A create
or revoke commits its `key.*` journal event in the same transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from app.domain.events import Event
from app.domain.keys import StoredApiKey
from app.store.sql.database import SQLDatabase
from app.store.sql.journal import insert_events
from app.store.sql.tables import api_keys_t

k = api_keys_t
_COLS = ("name", "role", "key_hash", "created_at", "last_used_at")


def _key(row: Any) -> StoredApiKey:
    return StoredApiKey.model_validate({c: getattr(row, c) for c in _COLS})


class SQLKeys:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db

    async def create(self, key: StoredApiKey, events: list[Event]) -> bool:
        def run(c: Connection) -> None:
            c.execute(k.insert().values(name=key.name, role=key.role.value, key_hash=key.key_hash,
                                        created_at=key.created_at, last_used_at=None))
            insert_events(c, events)

        try:
            await self._db.write(run)
        except IntegrityError:
            return False
        return True

    async def delete(self, name: str, events: list[Event]) -> StoredApiKey | None:
        def run(c: Connection) -> StoredApiKey | None:
            row = c.execute(sa.select(k).where(k.c.name == name)).first()
            if row is None or c.execute(k.delete().where(k.c.name == name)).rowcount != 1:
                return None
            insert_events(c, events)
            return _key(row)

        return await self._db.write(run)

    async def touch(self, name: str, at: datetime) -> None:
        await self._db.write(lambda c: c.execute(k.update().where(k.c.name == name).values(last_used_at=at)))

    async def all(self) -> list[StoredApiKey]:
        rows = await self._db.read(lambda c: c.execute(sa.select(k).order_by(k.c.name)).all())
        return [_key(r) for r in rows]
