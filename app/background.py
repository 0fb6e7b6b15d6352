"""Stopping a background loop task (a poller, a runner) within a bound.

Why not `task.cancel(); await task`: on Python 3.11 `asyncio.wait_for` drops a
cancellation that arrives just as the thing it waits for finishes (it returns the
result instead), and pymongo's async driver calls it on every socket write
(`pymongo.network_layer.async_sendall`). A loop task cancelled while a Mongo operation
is in flight can therefore carry on: its `except StoreUnavailable` / `while True` takes
it to the next round, and whoever awaits it waits forever (seen: `ConfigCache.aclose`
in the Mongo outage test, the poll loop still polling). So every such loop also checks,
before each round, that it is still wanted (its owner still holds it as its task, or a
stop flag), and its `aclose` waits for it here, bounded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

STOP_GRACE = 2.0
"""How long a cancelled loop may take to end (a store call in flight) before we go on."""


async def stop_task(task: asyncio.Task[Any], what: str, timeout: float = STOP_GRACE) -> bool:
    """Cancel `task` and wait at most `timeout` seconds for it to end; True if it did.

    The caller first lets go of the task (or sets the loop's stop flag), so a loop that
    swallowed the cancellation still ends at its next round; this only bounds the wait."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        log.warning("%s did not stop within %gs of being cancelled; it ends at its next round", what, timeout)
        return False
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("%s ended with an error", what, exc_info=exc)
    return True
