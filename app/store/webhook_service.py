"""The store's webhook rules, once for every backend (mixed into `StoreService`):
endpoints (ids, secrets, merge patches, rotation with a grace period, the limit on
their number) and their deliveries' bookkeeping. Every endpoint change commits its
`webhook.*` journal event with it, like agent and route changes. When to retry a
delivery is the dispatcher's rule (`app.webhooks.retry`); the store keeps the state."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from app.domain import InvalidInput, NotFound, StoreUnavailable
from app.domain.errors import InProgress
from app.domain.events import (
    SYSTEM,
    WEBHOOK_CREATED,
    WEBHOOK_DELETED,
    WEBHOOK_SECRET_ROTATED,
    WEBHOOK_UPDATED,
    ChangeContext,
    Event,
    EventType,
    WebhookChangedData,
    make_event,
)
from app.domain.models import apply_merge_patch
from app.domain.webhooks import (
    Delivery,
    DeliveryStatus,
    SecretRotation,
    StoredWebhook,
    Webhook,
    WebhookCreated,
    WebhookInput,
    new_secret,
    new_webhook_id,
)
from app.store.backend import Backend, DeliveryInFlight
from app.store.retry import MAX_ATTEMPTS, backoff
from app.store.session_rules import must_be_str

MAX_WEBHOOKS = 100
"""Endpoints per deployment: each is polled and fanned out to by every dispatcher."""


def _event(et: EventType, hook: StoredWebhook, change: str, ctx: ChangeContext) -> list[Event]:
    data = WebhookChangedData.model_validate({
        "webhook_id": hook.id, "change": change, "url": hook.url, "events": hook.events,
        "agent_id": hook.agent_id, "enabled": hook.enabled, "disabled_reason": hook.disabled_reason})
    return [make_event(et, data, at=hook.updated_at, agent_id=hook.agent_id, ctx=ctx)]


def _not_found(webhook_id: object) -> NotFound:
    return NotFound(f"webhook {webhook_id!r} not found", webhook_id=str(webhook_id))


class WebhookStore:
    backend: Backend

    def _journaled(self) -> None:  # StoreService: wake in-process journal readers
        raise NotImplementedError

    # ---------------------------------------------------------------- endpoints

    async def create_webhook(self, data: WebhookInput, *, ctx: ChangeContext = SYSTEM) -> WebhookCreated:
        if len(await self.backend.webhooks.all()) >= MAX_WEBHOOKS:
            raise InvalidInput(f"at most {MAX_WEBHOOKS} webhook endpoints")
        now = self.backend.now()
        hook = StoredWebhook.model_validate({**data.model_dump(), "id": new_webhook_id(), "secret": new_secret(),
                                             "created_at": now, "updated_at": now})
        await self.backend.webhooks.create(hook, 0, _event(WEBHOOK_CREATED, hook, "created", ctx))
        self._journaled()
        return WebhookCreated.model_validate({**hook.public().model_dump(), "secret": hook.secret})

    async def list_webhooks(self) -> list[Webhook]:
        return [h.public() for h in await self.backend.webhooks.all()]

    async def dispatch_targets(self) -> list[StoredWebhook]:
        """Every endpoint with its secrets: for the dispatcher only, never a client."""
        return await self.backend.webhooks.all()

    async def get_webhook(self, webhook_id: str) -> Webhook:
        return (await self._stored(webhook_id))[0].public()

    async def _stored(self, webhook_id: str) -> tuple[StoredWebhook, int]:
        got = await self.backend.webhooks.get(must_be_str(webhook_id, "webhook_id"))
        if got is None:
            raise _not_found(webhook_id)
        return got

    async def _rewrite(self, webhook_id: str, change: Any, et: EventType, what: str, ctx: ChangeContext) -> StoredWebhook:
        """Read, change (`change(hook, now) -> new hook`), write back if nobody wrote
        meanwhile (else again on top of the winner)."""
        for attempt in range(MAX_ATTEMPTS):
            hook, rev = await self._stored(webhook_id)
            now = self.backend.now()
            new: StoredWebhook = change(hook, now)
            if await self.backend.webhooks.replace(new, rev, _event(et, new, what, ctx)):
                self._journaled()
                return new
            await backoff(attempt)
        raise StoreUnavailable(f"webhook {webhook_id!r} is changing too fast, try again")

    async def update_webhook(
        self, webhook_id: str, patch: Mapping[str, Any], *, ctx: ChangeContext = SYSTEM
    ) -> Webhook:
        """An RFC 7386 merge patch of the endpoint's `WebhookInput` fields. Enabling it
        again clears the reason the dispatcher disabled it for."""

        def change(hook: StoredWebhook, now: Any) -> StoredWebhook:
            current = WebhookInput.model_validate(hook.model_dump(include=set(WebhookInput.model_fields)))
            new = WebhookInput.model_validate(apply_merge_patch(current.model_dump(mode="json"), dict(patch)))
            reason = None if new.enabled else hook.disabled_reason
            return hook.model_copy(update={**new.model_dump(), "disabled_reason": reason, "updated_at": now})

        return (await self._rewrite(webhook_id, change, WEBHOOK_UPDATED, "updated", ctx)).public()

    async def rotate_webhook_secret(
        self, webhook_id: str, grace_period_s: int, *, ctx: ChangeContext = SYSTEM
    ) -> SecretRotation:
        """A new secret; the current one keeps signing (as a second signature) for
        `grace_period_s`, so receivers can switch without dropping a delivery."""
        fresh = new_secret()

        def change(hook: StoredWebhook, now: Any) -> StoredWebhook:
            keep = grace_period_s > 0
            return hook.model_copy(update={
                "secret": fresh, "previous_secret": hook.secret if keep else None,
                "previous_secret_expires_at": now + timedelta(seconds=grace_period_s) if keep else None,
                "updated_at": now})

        hook = await self._rewrite(webhook_id, change, WEBHOOK_SECRET_ROTATED, "secret_rotated", ctx)
        return SecretRotation(id=hook.id, secret=fresh, previous_secret_expires_at=hook.previous_secret_expires_at)

    async def disable_webhook(self, webhook_id: str, reason: str) -> None:
        """The dispatcher's doing (a 410 Gone): recorded with no actor."""

        def change(hook: StoredWebhook, now: Any) -> StoredWebhook:
            return hook.model_copy(update={"enabled": False, "disabled_reason": reason[:500], "updated_at": now})

        await self._rewrite(webhook_id, change, WEBHOOK_UPDATED, "disabled", SYSTEM)

    async def delete_webhook(self, webhook_id: str, *, ctx: ChangeContext = SYSTEM) -> None:
        hook, _ = await self._stored(webhook_id)
        gone = hook.model_copy(update={"updated_at": self.backend.now()})
        if not await self.backend.webhooks.delete(hook.id, _event(WEBHOOK_DELETED, gone, "deleted", ctx)):
            raise _not_found(webhook_id)
        self._journaled()

    # --------------------------------------------------------------- deliveries

    async def add_deliveries(self, deliveries: list[Delivery]) -> int:
        return await self.backend.deliveries.add(deliveries)

    async def claim_deliveries(self, webhook_id: str, owner: str, lease_s: float, limit: int) -> list[Delivery]:
        now = self.backend.now()
        return await self.backend.deliveries.claim(webhook_id, now, owner, now + timedelta(seconds=lease_s), limit)

    async def finish_delivery(self, delivery_id: str, owner: str, attempt: int, **values: Any) -> bool:
        if "status" in values:
            values["status"] = DeliveryStatus(values["status"]).value
        return await self.backend.deliveries.finish(delivery_id, owner, attempt, values)

    async def get_delivery(self, delivery_id: str) -> Delivery:
        got = await self.backend.deliveries.get(must_be_str(delivery_id, "delivery_id"))
        if got is None:
            raise NotFound(f"delivery {delivery_id!r} not found", delivery_id=str(delivery_id))
        return got

    async def list_deliveries(
        self, *, webhook_id: str | None = None, status: DeliveryStatus | None = None, offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[Delivery], int]:
        if webhook_id is not None:
            must_be_str(webhook_id, "webhook_id")
        status = DeliveryStatus(status) if status is not None else None
        return await self.backend.deliveries.list(webhook_id, status, offset, limit)

    async def resend_delivery(self, delivery_id: str, window_s: float) -> Delivery:
        """Due now again with a fresh retry window, whatever its state; the same event id
        (`webhook-id`), so a receiver that got it before can tell."""
        now = self.backend.now()
        try:
            got = await self.backend.deliveries.resend(must_be_str(delivery_id, "delivery_id"), now,
                                                       now + timedelta(seconds=window_s))
        except DeliveryInFlight:
            raise InProgress("an attempt of this delivery is running; try again when it ends",
                             delivery_id=delivery_id) from None
        if got is None:
            raise NotFound(f"delivery {delivery_id!r} not found", delivery_id=str(delivery_id))
        self._journaled()
        return got

    async def count_due_deliveries(self) -> int:
        return await self.backend.deliveries.count_due(self.backend.now())
