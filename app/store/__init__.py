"""Persistence: the `ConfigStore` protocol, the service that implements it
(`service.StoreService`, every rule) and its database backends (`sql/`, `mongo/`)."""

from app.store.base import ConfigStore
from app.store.factory import open_store

__all__ = ["ConfigStore", "open_store"]
