"""The webhook dispatcher: one per process that runs `dev`, `start` or `chat`.

Each round it (1) relays journal events a crashed writer left behind (MongoDB, every
`SWEEP_INTERVAL`), (2) fans new journal events out to deliveries, (3) claims due
deliveries per enabled endpoint, as many as the endpoint has free slots in this process
(`webhook_concurrency`), each under a lease, and runs each attempt as its own task.
It sleeps `webhook_poll_interval`, or less when this process commits an event or an
attempt frees a slot.

Delivery is at least once: an attempt's result is recorded only while its lease is
held, and a process that dies mid-attempt leaves a lease that expires
(twice `webhook_timeout` + `LEASE_MARGIN`), after which any process tries again with the same
`webhook-id`. Two processes never run the same attempt at once (the claim is a
compare-and-swap). Nothing here runs on a session's path: sessions only commit events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import ssl
import time
from collections import OrderedDict

import httpx
from opentelemetry.trace import StatusCode

from app.background import stop_task
from app.domain import StoreUnavailable
from app.domain.events import Event
from app.domain.values import utcnow
from app.domain.webhooks import Delivery, DeliveryStatus, StoredWebhook
from app.observability import metrics, tracing
from app.settings import Settings
from app.store.base import ConfigStore
from app.webhooks.fanout import fan_out
from app.webhooks.retry import next_attempt
from app.webhooks.safety import UrlPolicy
from app.webhooks.sender import Outcome, attempt, new_client, tls_context

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 15.0
"""Seconds between journal relay sweeps (events a crashed MongoDB writer left embedded)."""
RELAY_GRACE = 30.0
"""A version write younger than this may still be in flight: the sweep leaves it to its writer."""
LEASE_MARGIN = 5.0
"""Lease = twice the total attempt timeout + this: an attempt is cut at the timeout, so a
live process records its outcome well inside its lease; a dead one's lease frees soon."""
STOP_GRACE = 2.0
"""At shutdown, how long running attempts may finish (the rest are retried by a lease expiry)."""
_EVENT_CACHE = 512
COUNT_INTERVAL = 5.0
"""Seconds between counts of the due deliveries (the `webhook_deliveries_due` gauge)."""


class Dispatcher:
    def __init__(self, settings: Settings, store: ConfigStore, *, policy: UrlPolicy | None = None,
                 owner: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.policy = policy or UrlPolicy.from_settings(settings)
        self.owner = owner or f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.lease_s = 2 * settings.webhook_timeout + LEASE_MARGIN
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: dict[str, set[asyncio.Task[None]]] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._tls: ssl.SSLContext | None = None
        self._events: OrderedDict[str, Event] = OrderedDict()
        self._next_sweep = 0.0
        self._next_count = 0.0
        self._failing = False
        self.attempts = 0
        self.delivered = 0

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.store.add_journal_listener(self.wake)
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    def wake(self) -> None:
        """Look for work now (thread-safe: session writes may commit on another loop)."""
        loop, ev = self._loop, self._wake
        if loop is None or ev is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            ev.set()
        else:
            with contextlib.suppress(RuntimeError):  # that loop closed meanwhile: nothing to wake
                loop.call_soon_threadsafe(ev.set)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:  # bounded: a round in flight may swallow the cancel (app.background)
            await stop_task(task, "webhooks: the dispatch loop", STOP_GRACE)
        running = [t for tasks in self._inflight.values() for t in tasks]
        if running:
            _, pending = await asyncio.wait(running, timeout=STOP_GRACE)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
                log.info("webhooks: %d attempt(s) cut short by shutdown; retried after their lease expires",
                         len(pending))
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        self._clients.clear()

    async def flush(self, timeout: float) -> bool:
        """Wait until nothing is left to fan out, in flight, or due now; False on timeout
        (`chat` gives its session's events a chance before the process exits)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.wake()
            try:
                idle = (not any(self._inflight.values()) and not await self.store.unfanned_events(1)
                        and await self.store.count_due_deliveries() == 0)
            except StoreUnavailable:
                idle = False
            if idle:
                return True
            await asyncio.sleep(0.05)
        return False

    # ---------------------------------------------------------------- the loop

    async def _run(self) -> None:
        assert self._wake is not None
        while self._task is asyncio.current_task():  # until `aclose` lets go of it
            self._wake.clear()
            try:
                await self.round()
                if self._failing:
                    log.info("webhooks: store reachable again, dispatching")
                    self._failing = False
            except StoreUnavailable as e:
                if not self._failing:
                    log.warning("webhooks: store unavailable (%s); deliveries wait for it", e.message)
                    self._failing = True
            except Exception:
                log.exception("webhooks: dispatch round failed")
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that
            # arrives as the wake-up does, and `aclose` would wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.webhook_poll_interval):
                    await self._wake.wait()

    async def round(self) -> None:
        """One round of relay, fan-out and claims (public for tests and benchmarks)."""
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL
            await self.store.relay_events(RELAY_GRACE)
        targets = await self.store.dispatch_targets()
        while await fan_out(self.store, targets, self.settings.webhook_retry_window):
            pass
        for hook in targets:
            if not hook.enabled:
                continue
            running = self._inflight.setdefault(hook.id, set())
            free = self.settings.webhook_concurrency - len(running)
            if free <= 0:
                continue
            for delivery in await self.store.claim_deliveries(hook.id, self.owner, self.lease_s, free):
                task = asyncio.create_task(self._deliver(hook, delivery), name=f"webhook-{delivery.id}")
                running.add(task)
                task.add_done_callback(running.discard)
        self._drop_clients_of_gone(targets)
        if time.monotonic() >= self._next_count:  # the queue depth, for /metrics
            self._next_count = time.monotonic() + COUNT_INTERVAL
            metrics.WEBHOOK_DUE.set(await self.store.count_due_deliveries())

    def _drop_clients_of_gone(self, targets: list[StoredWebhook]) -> None:
        live = {h.id for h in targets}
        for hook_id in [k for k in self._clients if k not in live]:
            client = self._clients.pop(hook_id)
            asyncio.get_running_loop().create_task(client.aclose())

    # ---------------------------------------------------------------- attempts

    async def _event(self, event_id: str) -> Event | None:
        ev = self._events.get(event_id)
        if ev is None:
            try:
                ev = (await self.store.get_event(event_id)).event
            except Exception as e:
                if isinstance(e, StoreUnavailable):
                    raise
                return None
            self._events[event_id] = ev
            while len(self._events) > _EVENT_CACHE:
                self._events.popitem(last=False)
        return ev

    async def _client(self, hook: StoredWebhook) -> httpx.AsyncClient:
        client = self._clients.get(hook.id)
        if client is None:
            if self._tls is None:
                self._tls = await tls_context()
            client = self._clients.get(hook.id)  # another attempt may have made it meanwhile
            if client is None:
                s = self.settings
                client = self._clients[hook.id] = new_client(s.webhook_connect_timeout, s.webhook_timeout, self._tls)
        return client

    async def _deliver(self, hook: StoredWebhook, delivery: Delivery) -> None:
        s = self.settings
        try:
            event = await self._event(delivery.event_id)
            if event is None:
                outcome = Outcome(None, "the event is no longer in the journal")
            else:
                self.attempts += 1
                started = time.perf_counter()
                with tracing.tracer.start_as_current_span("webhook.delivery", attributes={
                    "webhook_id": hook.id, "event_id": event.id, "event_type": event.type,
                    "attempt": delivery.attempts,
                }) as span:
                    outcome = await attempt(
                        await self._client(hook), hook, event, self.policy, total_timeout=s.webhook_timeout,
                        connect_timeout=s.webhook_connect_timeout, max_response_bytes=s.webhook_max_response_bytes,
                        secrets=hook.signing_secrets(utcnow()),
                    )
                    if outcome.status_code is not None:
                        span.set_attribute("http.status_code", outcome.status_code)
                    if not outcome.ok:
                        span.set_status(StatusCode.ERROR, outcome.error or f"HTTP {outcome.status_code}")
                metrics.WEBHOOK_ATTEMPT_SECONDS.observe(time.perf_counter() - started)
            kind, recorded = await self._record(hook, delivery, outcome, retry=event is not None)
            metrics.WEBHOOK_ATTEMPTS.labels(event.type if event is not None else "unknown", kind).inc()
            if recorded and outcome.gone:
                await self._disable_gone(hook)
        except StoreUnavailable as e:
            log.warning("webhooks: delivery %s: outcome not recorded (%s); retried after its lease", delivery.id,
                        e.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhooks: delivery %s failed unexpectedly; retried after its lease", delivery.id)
        finally:
            self.wake()  # a slot is free

    async def _record(
        self, hook: StoredWebhook, delivery: Delivery, outcome: Outcome, *, retry: bool
    ) -> tuple[str, bool]:
        """Store the attempt's outcome; returns its kind (the metric's `outcome` label) and
        whether it was stored (False: the lease was lost to another dispatcher)."""
        now = utcnow()
        kind = "delivered" if outcome.ok else "gone" if outcome.gone else "retrying"
        values: dict[str, object] = {"last_status_code": outcome.status_code, "last_error": outcome.error}
        if outcome.ok:
            self.delivered += 1
            values.update(status=DeliveryStatus.succeeded, delivered_at=now, next_attempt_at=None)
        elif outcome.gone:
            values.update(status=DeliveryStatus.failed, next_attempt_at=None,
                          last_error="410 Gone: the receiver asked to stop; endpoint disabled")
        else:
            at = next_attempt(delivery.attempts, now, delivery.window_ends_at, self.settings) if retry else None
            values.update(status=DeliveryStatus.pending if at else DeliveryStatus.failed, next_attempt_at=at)
            if at is None:
                kind = "failed"
                log.warning("webhooks: delivery %s of %s to %s failed for good after %d attempt(s): %s",
                            delivery.id, delivery.event_id, hook.id, delivery.attempts, outcome.error)
        if not await self.store.finish_delivery(delivery.id, self.owner, delivery.attempts, **values):
            log.info("webhooks: delivery %s: lease lost before the outcome was recorded", delivery.id)
            return kind, False
        return kind, True

    async def _disable_gone(self, hook: StoredWebhook) -> None:
        """After the 410's outcome is stored and counted: a store outage here leaves the
        endpoint enabled, and its next 410 disables it."""
        try:
            await self.store.disable_webhook(hook.id, "the receiver answered 410 Gone")
        except StoreUnavailable as e:
            log.warning("webhooks: endpoint %s answered 410 Gone but was not disabled (%s); its next 410 will",
                        hook.id, e.message)
            return
        log.warning("webhooks: endpoint %s answered 410 Gone: disabled", hook.id)
