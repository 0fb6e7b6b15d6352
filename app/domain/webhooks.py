"""Webhook endpoints and their deliveries: the one definition the API, the store and the
dispatcher share.

An endpoint subscribes a URL to event types (optionally of one agent). Its signing
secret (`whsec_…`, Standard Webhooks) is shown once, when created or rotated, and never
again; a rotation keeps the previous secret valid until `previous_secret_expires_at`,
and deliveries meanwhile carry a signature for each.

A delivery is one event to one endpoint: retried with backoff until a 2xx, or until its
window ends (`failed`, and kept); the event id is its `webhook-id` on every attempt.
"""

from __future__ import annotations

import os
import secrets as _secrets
from datetime import datetime
from enum import Enum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, field_validator

from app.domain.events import EVENT_TYPES
from app.domain.models import AgentId, _Model
from app.domain.values import JsonBool, UtcDatetime

WEBHOOK_ID_PREFIX = "wh_"
DELIVERY_ID_PREFIX = "dlv_"
MAX_WEBHOOK_URL_CHARS = 2048
MAX_DESCRIPTION_CHARS = 500
MAX_EVENT_TYPES = 64


def new_webhook_id() -> str:
    return WEBHOOK_ID_PREFIX + _secrets.token_hex(12)


def new_delivery_id() -> str:
    return DELIVERY_ID_PREFIX + _secrets.token_hex(12)


def _check_url(url: str) -> str:
    """An absolute http(s) URL with a host, no credentials, no fragment. Where it may
    point (https only, public addresses only) is the dispatcher's URL policy
    (`app.webhooks.safety`), which depends on how the process runs."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError("URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a bad port
    except ValueError as e:
        raise ValueError(f"not a valid URL ({e})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("URL scheme must be https (or http where the URL policy allows it)")
    if not parts.hostname:
        raise ValueError("URL must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("URL must not contain credentials (user:password@); use the signature to authenticate")
    if parts.fragment:
        raise ValueError("URL must not have a #fragment")
    if port == 0:
        raise ValueError("URL port must be 1-65535")
    return url


WebhookUrl = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_WEBHOOK_URL_CHARS), AfterValidator(_check_url)
]


def _known_types(types: list[str]) -> list[str]:
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r}; known: {', '.join(sorted(EVENT_TYPES))}")
    if len(set(types)) != len(types):
        raise ValueError("an event type is listed twice")
    return types


EventTypeList = Annotated[
    list[Annotated[str, StringConstraints(max_length=64)]],
    Field(min_length=1, max_length=MAX_EVENT_TYPES),
    AfterValidator(_known_types),
]


class WebhookInput(_Model):
    """What a client writes (create; a PATCH is a merge patch of it)."""

    url: WebhookUrl = Field(description="Where events are POSTed (https in production)")
    events: EventTypeList = Field(description="Event types to receive")
    agent_id: AgentId | None = Field(None, description="Only events of this agent")
    enabled: JsonBool = True
    description: str = Field("", max_length=MAX_DESCRIPTION_CHARS)


class Webhook(WebhookInput):
    """An endpoint as the API shows it: never its secret."""

    id: str
    created_at: UtcDatetime
    updated_at: UtcDatetime
    disabled_reason: str | None = Field(None, description="Why the dispatcher disabled it (a 410 from the receiver)")
    previous_secret_expires_at: UtcDatetime | None = Field(
        None, description="After a rotation: until when the previous secret still signs deliveries")


class WebhookCreated(Webhook):
    secret: str = Field(description="`whsec_…`: shown only in this response; verify signatures with it")


class SecretRotation(BaseModel):
    id: str
    secret: str = Field(description="The new `whsec_…` secret, shown only in this response")
    previous_secret_expires_at: UtcDatetime | None


class RotateSecretInput(_Model):
    grace_period_s: Annotated[int, Field(ge=0, le=7 * 86400)] = Field(
        86400, description="How long the previous secret keeps signing deliveries (0: revoke it now)")

    @field_validator("grace_period_s", mode="before")
    @classmethod
    def _int(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("Input should be a JSON integer")
        return v


class StoredWebhook(Webhook):
    """The stored endpoint, with its secrets (never serialised to a client)."""

    secret: str
    previous_secret: str | None = None

    def public(self) -> Webhook:
        return Webhook.model_validate(self.model_dump(exclude={"secret", "previous_secret"}))

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets deliveries are signed with now (the previous one during its grace)."""
        keys = [self.secret]
        if self.previous_secret and self.previous_secret_expires_at and now < self.previous_secret_expires_at:
            keys.append(self.previous_secret)
        return keys

    def wants(self, event_type: str, agent_id: str | None) -> bool:
        return self.enabled and event_type in self.events and (self.agent_id is None or self.agent_id == agent_id)


def new_secret() -> str:
    """`whsec_` + base64 of 32 random bytes (the Standard Webhooks secret format)."""
    import base64

    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


class DeliveryStatus(str, Enum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class Delivery(BaseModel):
    id: str
    webhook_id: str
    event_id: str = Field(description="Also the `webhook-id` header of every attempt")
    event_type: str
    status: DeliveryStatus = DeliveryStatus.pending
    attempts: int = 0
    next_attempt_at: UtcDatetime | None = Field(None, description="When the next attempt is due (pending only)")
    window_ends_at: UtcDatetime = Field(description="Retries stop here; the delivery is then failed")
    last_attempt_at: UtcDatetime | None = None
    last_status_code: int | None = None
    last_error: str | None = Field(None, description="What went wrong on the last attempt (never a body beyond a cap)")
    delivered_at: UtcDatetime | None = None
    created_at: UtcDatetime
