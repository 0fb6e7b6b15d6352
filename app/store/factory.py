"""Pick the store implementation from the database URL."""

from __future__ import annotations

from app.store.base import ConfigStore


def open_store(database_url: str) -> ConfigStore:
    """An unstarted store for `database_url`; call `await store.start()` before use."""
    if database_url.startswith(("mongodb://", "mongodb+srv://")):
        from app.store.mongo import MongoStore  # optional dependency path

        return MongoStore(database_url)
    from app.store.sql import SQLStore

    return SQLStore(database_url)
