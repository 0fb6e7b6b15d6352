"""The dispatcher against a real HTTP receiver on loopback, every fault the issue names:
500s, timeouts, a slow body, a 10 MB body, redirects, connection refused, a receiver
down then back, 410, the end of the retry window. Signatures are checked with the
`standardwebhooks` library, as a receiver would; duplicates may only repeat a
`webhook-id`."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

from app.domain import AgentConfigInput, SessionRecord, SessionStatus, Turn
from app.domain.events import ChangeContext
from app.domain.webhooks import DeliveryStatus
from app.webhooks.dispatcher import Dispatcher
from sim.webhook_receiver import Behaviour, WebhookReceiver
from tests.store.conftest import agent_document
from tests.webhooks.conftest import fast_settings, subscribe, verify


async def a_session(store, sid: str = "s-1", agent_id: str = "support-agent", version: int | None = 1) -> None:
    await store.start_session(SessionRecord(session_id=sid, room=f"room-{sid}", agent_id=agent_id,
                                            config_version=version, user_id="u-1"))
    await store.append_turn(sid, Turn(seq=0, role="assistant", text="Hello, what is your order number?"))
    await store.append_turn(sid, Turn(seq=1, role="user", text="It is A-17."))
    await store.record_data(sid, {"order_id": "A-17"})
    await store.finish_session(sid, SessionStatus.completed, "user said goodbye")


async def deliveries_of(store, hook_id: str):
    items, _ = await store.list_deliveries(webhook_id=hook_id, limit=200)
    return items


async def wait_status(store, hook_id: str, status: DeliveryStatus, n: int, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = [d for d in await deliveries_of(store, hook_id) if d.status == status]
        if len(items) >= n:
            return items
        await asyncio.sleep(0.05)
    raise AssertionError(f"{status}: {await deliveries_of(store, hook_id)}")


async def test_session_ended_arrives_signed_with_transcript_and_validated_data(store, receiver, dispatcher_factory):
    await store.create_agent_config(AgentConfigInput.model_validate(agent_document("support-agent")))
    hook = await subscribe(store, receiver.url)
    dispatcher_factory()
    await a_session(store)
    got = await receiver.wait_for(2, timeout=10)
    for req in got:
        verify(hook.secret, req)  # raises on a bad signature
    ended = next(r for r in got if r.json["type"] == "session.ended")
    started = next(r for r in got if r.json["type"] == "session.started")
    events = {e.id: e for e in (await store.list_events(limit=50))[0]}
    assert ended.webhook_id in events and events[ended.webhook_id].type == "session.ended"
    data = ended.json["data"]
    assert [t["text"] for t in data["transcript"]] == ["Hello, what is your order number?", "It is A-17."]
    assert data["collected"] == {"order_id": "A-17"}
    assert data["collected_validation"] == {"state": "complete", "missing_required": [], "problems": []}
    assert (data["status"], data["end_reason"], data["config_version"]) == ("completed", "user said goodbye", 1)
    assert started.json["data"]["user_id"] == "u-1"
    assert ended.headers["content-type"] == "application/json"
    # the receiver has the request before the dispatcher has read its answer and stored it
    done = await wait_status(store, hook.id, DeliveryStatus.succeeded, 2)
    (d_end,) = [d for d in done if d.event_type == "session.ended"]
    assert (d_end.status, d_end.attempts, d_end.last_status_code) == (DeliveryStatus.succeeded, 1, 200)
    # rendered once, frozen: the journal holds what was sent
    assert (await store.get_event(ended.webhook_id)).event.data == data


async def test_validation_state_reports_missing_and_invalid(store, receiver, dispatcher_factory):
    await store.create_agent_config(AgentConfigInput.model_validate(agent_document("support-agent")))
    await subscribe(store, receiver.url, ["session.ended"])
    dispatcher_factory()
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="support-agent", config_version=1))
    await store.record_data("s-1", {"rating": 9})
    await store.finish_session("s-1", SessionStatus.abandoned, "caller hung up")
    await store.start_session(SessionRecord(session_id="s-2", room="r", agent_id="gone-agent", config_version=4))
    await store.finish_session("s-2", SessionStatus.failed, "error", "boom")
    got = {r.json["data"]["session_id"]: r.json["data"] for r in await receiver.wait_for(2, timeout=10)}
    v = got["s-1"]["collected_validation"]
    assert v["state"] == "invalid" and v["missing_required"] == ["order_id"]
    assert any("rating" in p for p in v["problems"])
    assert got["s-2"]["collected_validation"]["state"] == "unknown" and got["s-2"]["error"] == "boom"


async def test_500s_are_retried_with_the_same_webhook_id(store, receiver, dispatcher_factory):
    receiver.script = [500, 503, 500]
    hook = await subscribe(store, receiver.url, ["session.started"])
    dispatcher_factory()
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
    got = await receiver.wait_for(4, timeout=10)
    assert len({r.webhook_id for r in got}) == 1
    assert len({r.headers["webhook-signature"] for r in got}) >= 1
    for r in got:
        verify(hook.secret, r)
    (d,) = await wait_status(store, hook.id, DeliveryStatus.succeeded, 1)
    assert d.attempts == 4 and d.last_status_code == 200


async def test_a_timeout_and_a_slow_body_do_not_hold_up_other_endpoints(store, dispatcher_factory):
    async with WebhookReceiver() as slow, WebhookReceiver() as fast:
        slow.script = [Behaviour(delay=5), Behaviour(trickle=0.3, body_bytes=100)]
        h_slow = await subscribe(store, slow.url, ["session.started"])
        h_fast = await subscribe(store, fast.url, ["session.started"])
        dispatcher_factory(webhook_timeout=1.0)
        t0 = time.monotonic()
        for i in range(5):
            await store.start_session(SessionRecord(session_id=f"s-{i}", room="r", agent_id="a"))
        await fast.wait_for(5, timeout=5)
        assert time.monotonic() - t0 < 1.5  # not behind the stalled receiver
        done = await wait_status(store, h_slow.id, DeliveryStatus.succeeded, 5, timeout=15)
        errors = [d.last_error for d in await deliveries_of(store, h_slow.id)]
        assert len(done) == 5
        retried = [d for d in done if d.attempts > 1]
        assert len(retried) >= 1, errors
        assert (await wait_status(store, h_fast.id, DeliveryStatus.succeeded, 5))


async def test_a_10mb_answer_is_not_read(store, receiver, dispatcher_factory):
    receiver.default = Behaviour(status=200, body_bytes=10 * 1024 * 1024)
    hook = await subscribe(store, receiver.url, ["session.started"])
    dispatcher_factory(webhook_max_response_bytes=4096)
    t0 = time.monotonic()
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
    (d,) = await wait_status(store, hook.id, DeliveryStatus.succeeded, 1, timeout=5)
    assert d.attempts == 1 and time.monotonic() - t0 < 2


async def test_redirects_are_not_followed(store, dispatcher_factory):
    async with WebhookReceiver() as rx, WebhookReceiver() as elsewhere:
        rx.default = Behaviour(status=307, location=elsewhere.url)
        hook = await subscribe(store, rx.url, ["session.started"])
        dispatcher_factory(webhook_retry_window=1.0)
        await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
        (d,) = await wait_status(store, hook.id, DeliveryStatus.failed, 1, timeout=10)
        assert d.last_status_code == 307 and "redirects are not followed" in (d.last_error or "")
        assert len(rx.received) >= 2 and elsewhere.received == []


async def test_connection_refused_then_the_receiver_comes_back(store, dispatcher_factory):
    rx = WebhookReceiver()  # not started: its port refuses connections
    hook = await subscribe(store, rx.url, ["session.started"])
    dispatcher_factory()
    for i in range(3):
        await store.start_session(SessionRecord(session_id=f"s-{i}", room="r", agent_id="a"))
    await asyncio.sleep(1.0)
    ds = await deliveries_of(store, hook.id)
    assert all(d.status == DeliveryStatus.pending and d.attempts >= 2 for d in ds)
    assert all("connection failed" in (d.last_error or "") for d in ds)
    await rx.start()
    try:
        got = await rx.wait_for(3, timeout=10)
        assert sorted({r.json["data"]["session_id"] for r in got}) == ["s-0", "s-1", "s-2"]
    finally:
        await rx.stop()


async def test_receiver_down_for_a_while_then_back_loses_nothing(store, receiver, dispatcher_factory):
    """The issue's "down for minutes", on a retry schedule scaled down to seconds."""
    hook = await subscribe(store, receiver.url, ["session.started", "session.ended"])
    dispatcher_factory(webhook_retry_max_delay=0.5)
    await store.start_session(SessionRecord(session_id="s-0", room="r", agent_id="a"))
    await receiver.wait_for(1, timeout=5)
    await receiver.stop()
    for i in range(1, 11):
        await store.start_session(SessionRecord(session_id=f"s-{i}", room="r", agent_id="a"))
        await store.finish_session(f"s-{i}", SessionStatus.completed)
    await asyncio.sleep(2.5)  # down: every attempt fails meanwhile
    assert sum(d.attempts for d in await deliveries_of(store, hook.id)) > 20
    await receiver.start()
    await wait_status(store, hook.id, DeliveryStatus.succeeded, 21, timeout=15)
    ids = Counter(r.webhook_id for r in receiver.received)
    assert len(ids) == 21  # every event, each under its own id
    for r in receiver.received:
        verify(hook.secret, r)


async def test_410_disables_the_endpoint(store, receiver, dispatcher_factory):
    receiver.default = Behaviour(status=410)
    hook = await subscribe(store, receiver.url, ["session.started"])
    dispatcher_factory()
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
    (d,) = await wait_status(store, hook.id, DeliveryStatus.failed, 1)
    assert d.attempts == 1 and d.last_status_code == 410
    await asyncio.sleep(0.2)
    got = await store.get_webhook(hook.id)
    assert not got.enabled and "410" in (got.disabled_reason or "")
    await store.start_session(SessionRecord(session_id="s-2", room="r", agent_id="a"))
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 1  # nothing more for a disabled endpoint
    events, _ = await store.list_events(types=["webhook.updated"])
    assert events[0].data["change"] == "disabled"


async def test_a_410_whose_endpoint_cannot_be_disabled_is_still_recorded_and_counted(
    store, receiver, dispatcher_factory, monkeypatch, caplog
):
    """The outcome is stored before the endpoint is disabled: a store outage in between
    leaves the endpoint enabled (its next 410 disables it), not the attempt unrecorded."""
    from app.domain import StoreUnavailable
    from tests.webhooks.test_observability import attempts, counted, samples

    receiver.default = Behaviour(status=410)
    hook = await subscribe(store, receiver.url, ["session.started"])
    real = store.disable_webhook

    async def down(webhook_id: str, reason: str) -> None:
        raise StoreUnavailable("database unreachable")

    monkeypatch.setattr(store, "disable_webhook", down)
    before = samples()
    dispatcher_factory()
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
    (d,) = await wait_status(store, hook.id, DeliveryStatus.failed, 1)
    assert d.last_status_code == 410
    assert attempts(before, await counted(before, "gone", 1), "gone") == 1
    assert (await store.get_webhook(hook.id)).enabled
    assert "was not disabled" in caplog.text and "outcome not recorded" not in caplog.text

    monkeypatch.setattr(store, "disable_webhook", real)
    await store.start_session(SessionRecord(session_id="s-2", room="r", agent_id="a"))
    await wait_status(store, hook.id, DeliveryStatus.failed, 2)
    deadline = asyncio.get_running_loop().time() + 5
    while (await store.get_webhook(hook.id)).enabled and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert not (await store.get_webhook(hook.id)).enabled


async def test_failed_after_the_window_and_kept_then_resent(store, receiver, dispatcher_factory):
    receiver.default = Behaviour(status=500)
    hook = await subscribe(store, receiver.url, ["session.started"])
    dispatcher_factory(webhook_retry_window=0.6)
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
    (d,) = await wait_status(store, hook.id, DeliveryStatus.failed, 1, timeout=10)
    assert d.attempts >= 3 and d.last_status_code == 500 and d.next_attempt_at is None
    receiver.default = Behaviour(status=200)
    await store.resend_delivery(d.id, 60)
    (d2,) = await wait_status(store, hook.id, DeliveryStatus.succeeded, 1)
    assert d2.id == d.id and d2.attempts == d.attempts + 1
    assert {r.webhook_id for r in receiver.received} == {d.event_id}


async def test_rotation_signs_with_both_secrets_during_the_grace_period(store, receiver, dispatcher_factory):
    hook = await subscribe(store, receiver.url, ["session.started"])
    rotated = await store.rotate_webhook_secret(hook.id, 3600)
    dispatcher_factory()
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
    (req,) = await receiver.wait_for(1, timeout=5)
    assert len(req.headers["webhook-signature"].split(" ")) == 2
    verify(hook.secret, req)  # a receiver still on the old secret
    verify(rotated.secret, req)  # and one that switched


async def test_filters_by_event_type_and_agent(store, receiver, dispatcher_factory):
    await store.create_agent_config(AgentConfigInput.model_validate(agent_document("agent-a")))
    await subscribe(store, receiver.url, ["session.ended", "agent.version_created"], agent_id="agent-a")
    dispatcher_factory()
    await a_session(store, "s-a", "agent-a")
    await a_session(store, "s-b", "agent-b")
    await store.update_agent_config("agent-a", {"description": "x"}, ctx=ChangeContext(actor="admin"))
    got = await receiver.wait_for(2, timeout=5)
    await asyncio.sleep(0.5)
    assert sorted(r.json["type"] for r in receiver.received) == ["agent.version_created", "session.ended"]
    assert {r.json["data"].get("agent_id") for r in got} == {"agent-a"}


async def test_only_events_after_the_endpoint_was_created(store, receiver, dispatcher_factory):
    await store.start_session(SessionRecord(session_id="before", room="r", agent_id="a"))
    await asyncio.sleep(0.01)
    await subscribe(store, receiver.url, ["session.started"])
    dispatcher_factory()
    await store.start_session(SessionRecord(session_id="after", room="r", agent_id="a"))
    await receiver.wait_for(1, timeout=5)
    await asyncio.sleep(0.3)
    assert [r.json["data"]["session_id"] for r in receiver.received] == ["after"]


async def test_two_dispatchers_on_one_store_deliver_each_event_once(store, receiver, dispatcher_factory, tmp_path):
    from app.store import open_store

    other_store = open_store(f"sqlite+aiosqlite:///{tmp_path}/hooks.db")
    await other_store.start()
    try:
        hook = await subscribe(store, receiver.url, ["session.started"])
        dispatcher_factory(store)
        dispatcher_factory(other_store)
        for i in range(40):
            await store.start_session(SessionRecord(session_id=f"s-{i}", room="r", agent_id="a"))
        await wait_status(store, hook.id, DeliveryStatus.succeeded, 40, timeout=15)
        await asyncio.sleep(0.3)
        counts = Counter(r.webhook_id for r in receiver.received)
        assert len(counts) == 40 and max(counts.values()) == 1
    finally:
        await other_store.aclose()


async def test_deliveries_wait_out_a_store_outage(store, receiver, dispatcher_factory, monkeypatch):
    from app.domain import StoreUnavailable

    await subscribe(store, receiver.url, ["session.started"])
    d = dispatcher_factory()
    real = store.dispatch_targets

    async def down():
        raise StoreUnavailable("database unreachable")

    monkeypatch.setattr(store, "dispatch_targets", down)
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
    await asyncio.sleep(0.3)
    assert receiver.received == [] and d._task is not None and not d._task.done()
    monkeypatch.setattr(store, "dispatch_targets", real)
    await receiver.wait_for(1, timeout=5)


async def test_flush_waits_for_due_deliveries(store, receiver):
    receiver.script = [Behaviour(delay=0.3)]
    await subscribe(store, receiver.url, ["session.started"])
    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
    d = Dispatcher(fast_settings(webhook_poll_interval=5), store)
    d.start()
    try:
        assert await d.flush(5.0)
        assert len(receiver.received) == 1
    finally:
        await d.aclose()


def test_retry_schedule_backs_off_with_jitter_inside_the_window():
    from app.domain.models import utcnow
    from app.webhooks.retry import next_attempt, next_delay

    delays = [next_delay(n, 5, 3600) for n in range(1, 12)]
    assert 2.5 <= delays[0] <= 5 and 40 <= delays[4] <= 80 and all(d <= 3600 for d in delays)
    assert len({round(next_delay(3, 5, 3600), 6) for _ in range(20)}) > 1  # jittered
    s = fast_settings(webhook_retry_base_delay=5, webhook_retry_max_delay=3600)
    now = utcnow()
    assert next_attempt(1, now, now + timedelta(hours=1), s) <= now + timedelta(seconds=5)
    assert next_attempt(20, now, now + timedelta(seconds=10), s) == now + timedelta(seconds=10)  # last try
    assert next_attempt(2, now, now - timedelta(seconds=1), s) is None
