"""When a failed delivery is tried again: exponential backoff with jitter inside the
retry window, after which it is failed (and kept, to be resent by hand)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from app.settings import Settings


def next_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds before attempt `attempts + 1`: base * 2^(attempts-1), capped, then a random
    50-100 % of it ("equal jitter"), so endpoints that failed together do not come back
    in lockstep, yet the pause never collapses to nothing."""
    full = float(min(cap, base * 2 ** min(max(attempts - 1, 0), 32)))
    return full * (0.5 + random.random() / 2)


def next_attempt(attempts: int, now: datetime, window_ends_at: datetime, settings: Settings) -> datetime | None:
    """When to try again after `attempts` failed attempts: the backoff, or the end of the
    window if that comes first (one last try there); None once the window is over."""
    if now >= window_ends_at:
        return None
    at = now + timedelta(seconds=next_delay(attempts, settings.webhook_retry_base_delay,
                                            settings.webhook_retry_max_delay))
    return min(at, window_ends_at)
