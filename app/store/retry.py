"""Retrying lost races: a compare-and-swap that lost to a concurrent writer tries again
after a short randomised pause, a bounded number of times."""

from __future__ import annotations

import asyncio
import random

MAX_ATTEMPTS = 100
"""Lost races before giving up (each one is a real concurrent write that won)."""


async def backoff(attempt: int) -> None:
    await asyncio.sleep(min(0.002 * (2 ** min(attempt, 6)), 0.1) * random.random())
