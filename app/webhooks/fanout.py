"""Fan-out: turn journal events into deliveries, one per subscribed endpoint.

Idempotent, so any number of dispatchers may run it at once: a delivery is unique per
(event, endpoint), the first renderer of a `session.ended` payload wins, and an event
is marked fanned out only after its deliveries exist (a crash in between fans it out
again, adding nothing). An endpoint receives events committed after it was created.
"""

from __future__ import annotations

from datetime import timedelta

from app.domain.values import utcnow
from app.domain.webhooks import Delivery, StoredWebhook, new_delivery_id
from app.store.base import ConfigStore
from app.store.event_rules import RENDERED_LATER
from app.webhooks.render import render_session_ended

BATCH = 200


async def fan_out(store: ConfigStore, targets: list[StoredWebhook], window_s: float, batch: int = BATCH) -> int:
    """Fan out up to `batch` events; returns how many were handled (0: nothing pending)."""
    entries = await store.unfanned_events(batch)
    if not entries:
        return 0
    now = utcnow()
    window_end = now + timedelta(seconds=window_s)
    deliveries: list[Delivery] = []
    for entry in entries:
        ev = entry.event
        candidates = [h for h in targets if h.enabled and ev.type in h.events and h.created_at <= ev.at]
        if not candidates:
            continue
        if not entry.rendered and ev.type in RENDERED_LATER:
            ev = (await render_session_ended(store, entry)).event
        deliveries += [
            Delivery(id=new_delivery_id(), webhook_id=h.id, event_id=ev.id, event_type=ev.type,
                     next_attempt_at=now, window_ends_at=window_end, created_at=now)
            for h in candidates if h.wants(ev.type, ev.agent_id)
        ]
    await store.add_deliveries(deliveries)
    await store.mark_fanned_out([e.event.id for e in entries])
    return len(entries)
