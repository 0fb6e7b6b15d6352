"""Webhook deliveries in /metrics: attempts by event type and outcome, attempt time, the
queue depth (read with prometheus_client's own parser, as deltas: the registry is
process-wide)."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.domain import SessionRecord
from app.domain.webhooks import DeliveryStatus
from sim.webhook_receiver import Behaviour
from tests.webhooks.conftest import subscribe
from tests.webhooks.test_dispatcher import wait_status


def samples() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(REGISTRY).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def attempts(before: dict, after: dict, outcome: str) -> float:  # type: ignore[type-arg]
    key = ("webhook_delivery_attempts_total", frozenset({("event_type", "session.started"), ("outcome", outcome)}))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def counted(before: dict, outcome: str, n: float, timeout: float = 5.0) -> dict:  # type: ignore[type-arg]
    """The samples once `n` attempts of `outcome` are counted: the dispatcher counts an attempt
    just after storing its outcome, so a reader of the store can get there first."""
    deadline = time.monotonic() + timeout
    after = samples()
    while attempts(before, after, outcome) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        after = samples()
    return after


async def test_attempts_and_outcomes_are_counted(store, receiver, dispatcher_factory):
    receiver.script = [500, 500]
    hook = await subscribe(store, receiver.url, ["session.started"])
    before = samples()
    dispatcher = dispatcher_factory()
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
    await wait_status(store, hook.id, DeliveryStatus.succeeded, 1)
    after = await counted(before, "delivered", 1)
    assert attempts(before, after, "retrying") == 2
    assert attempts(before, after, "delivered") == 1
    count = ("webhook_delivery_attempt_seconds_count", frozenset())
    assert after[count] - before.get(count, 0.0) == 3
    # the queue depth is counted by the dispatcher's rounds (its own loop stopped first: its
    # rounds would race this one for the gauge): nothing is due once delivered
    await dispatcher.aclose()
    dispatcher._next_count = 0.0
    await dispatcher.round()
    assert samples()[("webhook_deliveries_due", frozenset())] == await store.count_due_deliveries() == 0


async def test_a_410_counts_as_gone(store, receiver, dispatcher_factory):
    receiver.default = Behaviour(status=410)
    hook = await subscribe(store, receiver.url, ["session.started"])
    before = samples()
    dispatcher_factory()
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
    await wait_status(store, hook.id, DeliveryStatus.failed, 1)
    assert attempts(before, await counted(before, "gone", 1), "gone") == 1
