"""Webhook endpoints and deliveries in the `ConfigStore` contract, on every backend
(sqlite, mongo, postgres): secrets shown once and rotated with a grace period, merge
patches under racing writers, `webhook.*` events committed with each change, and the
delivery bookkeeping the dispatcher relies on — idempotent fan-out, leases that two
processes never both win, results dropped when the lease was lost, resends."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pydantic import ValidationError

from app.domain import InvalidInput, NotFound
from app.domain.errors import InProgress
from app.domain.events import ChangeContext
from app.domain.webhooks import Delivery, DeliveryStatus, WebhookInput, new_delivery_id
from tests.store.test_contract import now_ms

ADMIN = ChangeContext(actor="admin", note="hook")


def hook_input(**kw) -> WebhookInput:
    doc = {"url": "https://example.com/hooks", "events": ["session.ended"], "description": "crm"}
    doc.update(kw)
    return WebhookInput.model_validate(doc)


def delivery(webhook_id: str, event_id: str, *, due=None, window_s: float = 3600) -> Delivery:
    now = now_ms()
    return Delivery(id=new_delivery_id(), webhook_id=webhook_id, event_id=event_id, event_type="session.ended",
                    next_attempt_at=due or now, window_ends_at=now + timedelta(seconds=window_s), created_at=now)


async def test_create_shows_the_secret_once_and_commits_its_event(store):
    created = await store.create_webhook(hook_input(agent_id="agent-a"), ctx=ADMIN)
    assert created.id.startswith("wh_") and created.secret.startswith("whsec_")
    got = await store.get_webhook(created.id)
    assert not hasattr(got, "secret") and "secret" not in got.model_dump()
    assert got.model_dump() == {k: v for k, v in created.model_dump().items() if k != "secret"}
    assert [h.id for h in await store.list_webhooks()] == [created.id]
    (target,) = await store.dispatch_targets()
    assert target.secret == created.secret
    events, _ = await store.list_events(types=["webhook.created"])
    assert len(events) == 1 and events[0].actor == "admin" and events[0].agent_id == "agent-a"
    assert created.secret not in str(events[0].model_dump())


async def test_patch_merges_validates_and_survives_racing_writers(store, open_another):
    hook = await store.create_webhook(hook_input())
    other = await open_another()
    updated = await store.update_webhook(hook.id, {"description": "new", "agent_id": "agent-b"})
    assert (updated.description, updated.agent_id, updated.url) == ("new", "agent-b", hook.url)
    assert (await store.update_webhook(hook.id, {"agent_id": None})).agent_id is None  # null removes
    with pytest.raises(ValidationError):
        await store.update_webhook(hook.id, {"events": ["no.such"]})
    with pytest.raises(ValidationError):
        await store.update_webhook(hook.id, {"url": "ftp://example.com"})
    assert (await store.get_webhook(hook.id)).events == ["session.ended"]

    await asyncio.gather(
        store.update_webhook(hook.id, {"description": "from one"}),
        other.update_webhook(hook.id, {"events": ["session.ended", "session.started"]}),
    )
    got = await store.get_webhook(hook.id)
    assert got.description == "from one" and got.events == ["session.ended", "session.started"]
    assert (await store.list_events(types=["webhook.updated"]))[1] == 4
    with pytest.raises(NotFound):
        await store.update_webhook("wh_nope", {"description": "x"})


async def test_disable_and_enable_again(store):
    hook = await store.create_webhook(hook_input())
    await store.disable_webhook(hook.id, "receiver answered 410 Gone")
    got = await store.get_webhook(hook.id)
    assert not got.enabled and got.disabled_reason == "receiver answered 410 Gone"
    events, _ = await store.list_events(types=["webhook.updated"])
    assert events[0].data["change"] == "disabled" and events[0].actor is None
    got = await store.update_webhook(hook.id, {"enabled": True})
    assert got.enabled and got.disabled_reason is None


async def test_rotation_keeps_the_old_secret_for_the_grace_period(store):
    hook = await store.create_webhook(hook_input())
    rotated = await store.rotate_webhook_secret(hook.id, 3600, ctx=ADMIN)
    assert rotated.secret != hook.secret and rotated.secret.startswith("whsec_")
    (stored,) = await store.dispatch_targets()
    now = now_ms()
    assert stored.signing_secrets(now) == [rotated.secret, hook.secret]
    assert stored.signing_secrets(now + timedelta(seconds=3601)) == [rotated.secret]
    assert (await store.get_webhook(hook.id)).previous_secret_expires_at == rotated.previous_secret_expires_at

    again = await store.rotate_webhook_secret(hook.id, 0)
    (stored,) = await store.dispatch_targets()
    assert stored.signing_secrets(now_ms()) == [again.secret] and stored.previous_secret is None
    assert (await store.list_events(types=["webhook.secret_rotated"]))[1] == 2


async def test_delete_removes_the_endpoint_and_its_deliveries(store):
    keep = await store.create_webhook(hook_input())
    hook = await store.create_webhook(hook_input())
    await store.add_deliveries([delivery(hook.id, "evt_1"), delivery(keep.id, "evt_1")])
    await store.delete_webhook(hook.id, ctx=ADMIN)
    with pytest.raises(NotFound):
        await store.get_webhook(hook.id)
    with pytest.raises(NotFound):
        await store.delete_webhook(hook.id)
    assert [h.id for h in await store.list_webhooks()] == [keep.id]
    items, total = await store.list_deliveries()
    assert total == 1 and items[0].webhook_id == keep.id
    assert (await store.list_events(types=["webhook.deleted"]))[1] == 1


async def test_endpoint_count_is_bounded(store, monkeypatch):
    monkeypatch.setattr("app.store.webhook_service.MAX_WEBHOOKS", 2)
    await store.create_webhook(hook_input())
    await store.create_webhook(hook_input())
    with pytest.raises(InvalidInput):
        await store.create_webhook(hook_input())


# ------------------------------------------------------------------ deliveries


async def test_fan_out_is_idempotent_per_event_and_endpoint(store):
    hook = await store.create_webhook(hook_input())
    assert await store.add_deliveries([delivery(hook.id, "evt_a"), delivery(hook.id, "evt_b")]) == 2
    assert await store.add_deliveries([delivery(hook.id, "evt_a"), delivery(hook.id, "evt_c")]) == 1
    items, total = await store.list_deliveries(webhook_id=hook.id)
    assert total == 3 and sorted(d.event_id for d in items) == ["evt_a", "evt_b", "evt_c"]
    assert all(d.status == DeliveryStatus.pending and d.attempts == 0 for d in items)


async def test_two_processes_never_claim_the_same_attempt(store, open_another):
    hook = await store.create_webhook(hook_input())
    await store.add_deliveries([delivery(hook.id, f"evt_{i}") for i in range(20)])
    other = await open_another()
    a, b = await asyncio.gather(
        store.claim_deliveries(hook.id, "proc-a", 60, 20), other.claim_deliveries(hook.id, "proc-b", 60, 20))
    ids_a, ids_b = {d.id for d in a}, {d.id for d in b}
    assert not ids_a & ids_b and len(ids_a | ids_b) == 20
    assert all(d.attempts == 1 for d in [*a, *b])
    assert await store.claim_deliveries(hook.id, "proc-c", 60, 20) == []  # all leased


async def test_an_expired_lease_is_taken_over_and_the_late_result_dropped(store):
    hook = await store.create_webhook(hook_input())
    await store.add_deliveries([delivery(hook.id, "evt_1")])
    (first,) = await store.claim_deliveries(hook.id, "slow", 0.05, 5)
    await asyncio.sleep(0.1)
    (second,) = await store.claim_deliveries(hook.id, "fast", 60, 5)
    assert second.id == first.id and second.attempts == 2
    # the slow attempt's result arrives after losing its lease: it is dropped
    assert not await store.finish_delivery(first.id, "slow", 1, status="succeeded", last_status_code=200)
    assert await store.finish_delivery(second.id, "fast", 2, status="succeeded", last_status_code=204,
                                       delivered_at=now_ms(), next_attempt_at=None)
    got = await store.get_delivery(first.id)
    assert (got.status, got.last_status_code, got.attempts) == (DeliveryStatus.succeeded, 204, 2)


async def test_claims_take_only_due_deliveries(store):
    hook = await store.create_webhook(hook_input())
    later = now_ms() + timedelta(minutes=5)
    await store.add_deliveries([delivery(hook.id, "evt_now"), delivery(hook.id, "evt_later", due=later)])
    claimed = await store.claim_deliveries(hook.id, "me", 60, 10)
    assert [d.event_id for d in claimed] == ["evt_now"]
    assert await store.count_due_deliveries() == 1  # leased, still pending
    await store.finish_delivery(claimed[0].id, "me", 1, status="failed", last_error="window over",
                                next_attempt_at=None)
    assert await store.count_due_deliveries() == 0
    items, total = await store.list_deliveries(status=DeliveryStatus.failed)
    assert total == 1 and items[0].last_error == "window over"


async def test_resend_makes_a_delivery_due_again_unless_in_flight(store):
    hook = await store.create_webhook(hook_input())
    await store.add_deliveries([delivery(hook.id, "evt_1")])
    (d,) = await store.claim_deliveries(hook.id, "me", 60, 5)
    with pytest.raises(InProgress):
        await store.resend_delivery(d.id, 3600)
    await store.finish_delivery(d.id, "me", 1, status="failed", next_attempt_at=None, last_status_code=500)
    again = await store.resend_delivery(d.id, 3600)
    assert again.status == DeliveryStatus.pending and again.attempts == 1
    assert again.next_attempt_at is not None and again.window_ends_at > d.window_ends_at
    (claimed,) = await store.claim_deliveries(hook.id, "me", 60, 5)
    assert claimed.attempts == 2 and claimed.event_id == "evt_1"
    with pytest.raises(NotFound):
        await store.resend_delivery("dlv_nope", 10)
    with pytest.raises(NotFound):
        await store.get_delivery("dlv_nope")


async def test_disabled_endpoints_have_nothing_due(store):
    hook = await store.create_webhook(hook_input())
    await store.add_deliveries([delivery(hook.id, "evt_1")])
    assert await store.count_due_deliveries() == 1
    await store.update_webhook(hook.id, {"enabled": False})
    assert await store.count_due_deliveries() == 0
