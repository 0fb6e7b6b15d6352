"""Persistence: the `ConfigStore` protocol and its implementations."""

from app.store.base import ConfigStore
from app.store.factory import open_store

__all__ = ["ConfigStore", "open_store"]
