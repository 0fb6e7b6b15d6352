"""The OpenAPI document's `webhooks` section (OpenAPI 3.1): one entry per event type in
the journal's registry, describing the POST a receiver gets — the Standard Webhooks
headers and the `{type, timestamp, data}` envelope with that type's payload schema.
Built from `app.domain.events.EVENT_TYPES`, so a newly registered type is documented
without touching this module."""

from __future__ import annotations

from typing import Any

from app.domain.events import EVENT_TYPES, EventKind

_HEADERS = [
    ("webhook-id", "The event id (`evt_…`): the same on every attempt and resend; deduplicate on it."),
    ("webhook-timestamp", "Unix seconds of this attempt; reject old ones to stop replays."),
    ("webhook-signature", "`v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}` keyed by the endpoint's "
     "secret; space-separated, one per valid secret (two during a rotation). Verify with any Standard "
     "Webhooks library."),
]


def webhooks_section() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, et in sorted(EVENT_TYPES.items()):
        payload = {
            "type": "object",
            "required": ["type", "timestamp", "data"],
            "properties": {
                "type": {"const": name},
                "timestamp": {"type": "string", "format": "date-time", "description": "When the event happened"},
                "data": {"$ref": f"#/components/schemas/{et.payload.__name__}"},
            },
        }
        out[name] = {"post": {
            "summary": et.description,
            "description": ("An audit (change) event. " if et.kind is EventKind.change else "")
            + "Answer 2xx to acknowledge; anything else is retried with backoff for the retry window, and "
            "410 Gone disables the endpoint. Redirects are not followed.",
            "operationId": f"webhook:{name}",
            "tags": ["webhook events"],
            "parameters": [{"name": h, "in": "header", "required": True, "description": d,
                            "schema": {"type": "string"}} for h, d in _HEADERS],
            "requestBody": {"required": True, "content": {"application/json": {"schema": payload}}},
            "responses": {"2XX": {"description": "Received"},
                          "410": {"description": "Gone: stop sending (the endpoint is disabled)"}},
        }}
    return out


def payload_models() -> list[Any]:
    return [et.payload for et in EVENT_TYPES.values()]
