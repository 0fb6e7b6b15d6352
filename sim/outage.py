"""A store with an off switch, for "the database is down" scenarios.

How the outage is simulated, honestly: `SwitchableStore` wraps the real store the
scenario runs on and, while `down` is set, makes every async store call raise
`StoreUnavailable` — the exception the real stores raise when their database cannot be
reached (SQLStore maps connection/operational errors to it; MongoStore its network
errors). Nothing below that exception is exercised (no real socket or file failure);
everything above it is: the worker's config cache serving the last known-good snapshot,
the fallback agent when nothing was ever cached, the SessionManager's retried record
writes, and the admin API's 503. Synchronous members (`add_change_listener`) pass
through, so the cache stays subscribed to the store's own writes.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from app.domain import StoreUnavailable
from app.store.base import ConfigStore


class SwitchableStore:
    """Delegates to `inner`; every coroutine method raises while `down` is True."""

    def __init__(self, inner: ConfigStore) -> None:
        self.inner = inner
        self.down = False
        self.refused = 0
        """Calls refused while down (scenarios and tests can check the outage was hit)."""

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        @functools.wraps(attr)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.refused += 1
                raise StoreUnavailable(f"simulated outage ({name})")
            return await attr(*args, **kwargs)

        return guarded
