"""The event journal's one definition: what an event is, which types exist, and who made a
change.

One journal serves two readers: webhook delivery (every type) and the audit trail (the
`change` types: who changed which configuration, when, and why). An event is committed
with the change that caused it (`app.store.service` decides which events a change makes;
each backend commits them at that change's commit point), so neither exists without the
other.

Types live in a registry (`EVENT_TYPES`, `register_event_type`) with a payload model
each: the API validates webhook event filters against it, the OpenAPI document and the
README describe each payload from it, and new features (publishing, canaries, named
keys) add their types there.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.domain.analysis import SuccessVerdict
from app.domain.usage import SessionUsage
from app.domain.values import UtcDatetime, utcnow

EVENT_ID_PREFIX = "evt_"
MAX_NOTE_CHARS = 500
MAX_ACTOR_CHARS = 100

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


_last_id = [0]
_id_lock = threading.Lock()


def new_event_id(now_ms: int | None = None) -> str:
    """`evt_` + 26 characters: 48 bits of Unix milliseconds, then 80 random bits, in
    Crockford base32 (a monotonic ULID). Ids sort by creation time, and within one
    millisecond of one process by creation order (the random part is incremented), so a
    journal ordered by (time, id) reads in order; unique without a shared counter."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    n = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    with _id_lock:
        if n >> 80 == _last_id[0] >> 80 and n <= _last_id[0]:
            n = _last_id[0] + 1
        _last_id[0] = n
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[n & 31])
        n >>= 5
    return EVENT_ID_PREFIX + "".join(reversed(chars))


EVENT_ID_RE = re.compile(r"^evt_[0-9A-HJKMNP-TV-Z]{26}$")


class EventKind(str, Enum):
    change = "change"
    """A configuration change someone made: listed by the audit trail."""
    session = "session"
    """Something that happened in a conversation."""


class Event(BaseModel):
    """One journal entry. `id` is stable: it is the `webhook-id` of every delivery of it."""

    id: str = Field(description="`evt_…`, time-ordered; the `webhook-id` header of its deliveries")
    type: str
    at: UtcDatetime = Field(description="When the change was committed")
    agent_id: str | None = Field(None, description="The agent concerned, if any (for filters)")
    actor: str | None = Field(None, description="Name of the API key that made the change; null for sessions")
    note: str | None = Field(None, description="The change note (`X-Change-Note` header), if given")
    data: dict[str, Any] = Field(default_factory=dict, description="The payload; its shape depends on `type`")


def cap_note(note: str | None) -> str | None:
    """A change note as stored: control characters dropped, at most `MAX_NOTE_CHARS`."""
    if note is None:
        return None
    clean = "".join(ch for ch in note if ch.isprintable()).strip()
    if not clean:
        return None
    return clean if len(clean) <= MAX_NOTE_CHARS else clean[: MAX_NOTE_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class ChangeContext:
    """Who made a change and why: given to the store's write methods by the API, stored
    on the events the change produces. `actor` is the name of the API key (the single
    admin key is `admin`); `note` comes from the `X-Change-Note` header."""

    actor: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "note", cap_note(self.note))
        if self.actor is not None:
            object.__setattr__(self, "actor", self.actor[:MAX_ACTOR_CHARS])


SYSTEM = ChangeContext()
"""Changes nobody asked for over the API (sessions, sweeps, seeding)."""


# ------------------------------------------------------------------------- payloads


class AgentCreatedData(BaseModel):
    agent_id: str
    version: int = Field(description="Always 1")
    name: str


ChangeKind = Literal["create", "patch", "replace", "rollback"]


class AgentVersionCreatedData(BaseModel):
    agent_id: str
    version: int
    change: ChangeKind = Field(description="What made the version: the create, a merge patch, a replacement, a rollback")
    rolled_back_to: int | None = Field(None, description="For a rollback: the version whose content was restored")


class AgentDeletedData(BaseModel):
    agent_id: str


class RouteData(BaseModel):
    purpose: str
    agent_id: str
    is_default: bool
    phone_numbers: list[str] = Field(default_factory=list, description="Dialled numbers the route answers")


class RoutesChangedData(BaseModel):
    change: Literal["put", "replace", "delete"]
    purpose: str | None = Field(None, description="The route written or deleted (null for a whole-table replace)")
    routes: list[RouteData] = Field(description="The whole table after the change")


class SessionStartedData(BaseModel):
    session_id: str
    room: str
    agent_id: str
    config_version: int | None
    user_id: str | None
    started_at: UtcDatetime
    route_reason: str | None = None
    degraded: str | None = None
    arm: Literal["stable", "canary"] | None = Field(None, description="The canary arm, while a canary ran")


class SessionHandoffData(BaseModel):
    session_id: str
    from_agent: str
    to_agent: str
    reason: str | None
    at: UtcDatetime


class TranscriptTurn(BaseModel):
    seq: int
    role: str
    text: str
    at: UtcDatetime
    agent_id: str | None = None


class CollectedValidation(BaseModel):
    state: Literal["complete", "incomplete", "invalid", "unknown"] = Field(
        description="complete: valid and every required field present; incomplete: valid so far, required "
        "fields missing; invalid: a value breaks the schema; unknown: the agent version is gone"
    )
    missing_required: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list, description="Schema violations, at most 5")


class CallTransferData(BaseModel):
    """A phone caller handed to a person (`transfer_call` tool), or the attempt that failed."""

    to: str = Field(description="The tel: or sip: URI transferred to")
    reason: str | None = Field(None, description="Why, as the agent gave it")
    status: Literal["completed", "failed"]
    transfer_id: str | None = None
    error: str | None = None
    at: UtcDatetime | None = None


class SessionEndedData(BaseModel):
    """Rendered once from the committed session record when the event is first fanned
    out (`app.webhooks.render`), then frozen: every retry sends this exact body."""

    session_id: str
    room: str | None = None
    agent_id: str
    config_version: int | None = None
    arm: Literal["stable", "canary"] | None = Field(None, description="The canary arm, while a canary ran")
    user_id: str | None = None
    status: str = Field(description="completed, failed or abandoned")
    end_reason: str | None = None
    error: str | None = None
    started_at: UtcDatetime | None = None
    ended_at: UtcDatetime | None = None
    duration_s: float | None = None
    degraded: str | None = None
    transcript: list[TranscriptTurn] = Field(default_factory=list)
    collected: dict[str, Any] = Field(default_factory=dict)
    collected_validation: CollectedValidation | None = None
    handoffs: list[SessionHandoffData] = Field(default_factory=list)
    metrics: list[dict[str, Any]] = Field(default_factory=list, description="Per-turn latency figures (voice)")
    usage: SessionUsage | None = Field(
        None, description="What the call used (tokens, audio, characters; per model) and its cost, with the "
        "providers that served it")
    analysis_requested: bool = Field(
        False, description="The agent has post-call analysis settings: a session.analyzed event follows "
        "when the analysis is stored (done or failed)")
    transfer: CallTransferData | None = Field(
        None, description="Phone calls handed to a person: the last transfer (or failed attempt), its reason; "
        "the data collected up to then is in `collected`")


class SessionAnalyzedData(BaseModel):
    """The post-call analysis as stored on the session record, sent when it is finished."""

    session_id: str
    agent_id: str
    config_version: int | None = None
    status: Literal["done", "failed"]
    summary: str | None = None
    success: SuccessVerdict | None = Field(None, description="The verdict on the success criteria, with its reason")
    extracted: dict[str, Any] | None = Field(None, description="The fields the extraction schema asked for")
    error: str | None = Field(None, description="Why the analysis failed (status failed)")
    model: str = Field(description="The model that was asked")
    attempts: int
    finished_at: UtcDatetime | None = None
    cost_usd: float | None = Field(None, description="Of the analysis calls; null: the model has no price")


class AgentPublishedData(BaseModel):
    agent_id: str
    version: int = Field(description="The version routing hands out now")
    previous_version: int | None = Field(None, description="What it handed out before")
    change: Literal["publish", "promote"] = Field(
        description="publish: POST .../publish; promote: a canary promoted (a version written with auto_publish, "
        "or a rollback, is announced by agent.version_created alone)"
    )


class RolloutData(BaseModel):
    agent_id: str
    rollout_id: str
    version: int = Field(description="The canary version")
    stable_version: int
    percent: int
    reason: str | None = Field(None, description="Why it was aborted")
    automatic: bool = Field(False, description="Aborted by the rollout guard, not by a person")
    figures: dict[str, Any] | None = Field(
        None, description="The arms' figures and the guard's verdict when it was aborted automatically")


class WebhookChangedData(BaseModel):
    webhook_id: str
    change: Literal["created", "updated", "deleted", "secret_rotated", "disabled"]
    url: str | None = None
    events: list[str] | None = None
    agent_id: str | None = None
    enabled: bool | None = None
    disabled_reason: str | None = None


class KeyChangedData(BaseModel):
    name: str = Field(description="The key's name (never its secret or hash)")
    role: str
    change: Literal["created", "revoked"]


class AgentTestChangedData(BaseModel):
    agent_id: str
    name: str
    change: Literal["created", "updated", "deleted"]
class CallPlacedData(BaseModel):
    call_id: str
    to: str = Field(description="The dialled number, E.164")
    agent_id: str | None = None
    purpose: str | None = None
    version: int | None = None
    room: str
    campaign_id: str | None = None


class CallDialedData(BaseModel):
    call_id: str
    to: str
    status: Literal["answered", "busy", "no_answer", "failed"]
    sip_status_code: int | None = Field(None, description="LiveKit's SIP status of a failed dial")
    sip_status: str | None = None
    error: str | None = None
    room: str
    campaign_id: str | None = None


class CampaignChangedData(BaseModel):
    campaign_id: str
    change: Literal["created", "paused", "resumed", "cancelled", "completed"]
    name: str
    status: str
    total: int = Field(description="Contacts in the campaign")


# ------------------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    kind: EventKind
    description: str
    payload: type[BaseModel]


EVENT_TYPES: dict[str, EventType] = {}
"""Every event type this build knows, by name."""

_TYPE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


def register_event_type(name: str, kind: EventKind, description: str, payload: type[BaseModel]) -> EventType:
    """Add a type to the registry (at import time of the module that emits it)."""
    if not _TYPE_NAME_RE.match(name):
        raise ValueError(f"event type {name!r} must look like 'noun.verb'")
    if name in EVENT_TYPES and EVENT_TYPES[name].payload is not payload:
        raise ValueError(f"event type {name!r} is registered twice")
    EVENT_TYPES[name] = et = EventType(name, kind, description, payload)
    return et


AGENT_CREATED = register_event_type(
    "agent.created", EventKind.change, "An agent was created (its version 1 follows as agent.version_created).",
    AgentCreatedData)
AGENT_VERSION_CREATED = register_event_type(
    "agent.version_created", EventKind.change,
    "A new version of an agent's configuration was written: create, patch, replacement or rollback.",
    AgentVersionCreatedData)
AGENT_DELETED = register_event_type(
    "agent.deleted", EventKind.change, "An agent and its history were deleted.", AgentDeletedData)
ROUTES_CHANGED = register_event_type(
    "routes.changed", EventKind.change, "The routing table changed (a route written or deleted, or replaced whole).",
    RoutesChangedData)
SESSION_STARTED = register_event_type(
    "session.started", EventKind.session, "A conversation started with a routed agent.", SessionStartedData)
SESSION_HANDOFF = register_event_type(
    "session.handoff", EventKind.session, "A conversation was handed from one agent to another.", SessionHandoffData)
SESSION_ENDED = register_event_type(
    "session.ended", EventKind.session,
    "A conversation ended (completed, failed, or abandoned by the stale-session sweep or a shutdown), with its "
    "transcript, collected data and validation state, handoffs and per-turn metrics.",
    SessionEndedData)
SESSION_ANALYZED = register_event_type(
    "session.analyzed", EventKind.session,
    "A conversation's post-call analysis was stored: done (summary, success verdict, extracted fields) or "
    "failed (with the reason). Sent after session.ended, for agents with analysis settings.",
    SessionAnalyzedData)


AGENT_PUBLISHED = register_event_type(
    "agent.published", EventKind.change,
    "Routing hands out another version of an agent: published explicitly, or a canary promoted (versions "
    "written with auto_publish, and rollbacks, go live with their agent.version_created).", AgentPublishedData)
ROLLOUT_STARTED = register_event_type(
    "rollout.started", EventKind.change, "A canary started: a share of new sessions runs another version.",
    RolloutData)
ROLLOUT_PROMOTED = register_event_type(
    "rollout.promoted", EventKind.change, "A canary was promoted: its version is published for everyone.",
    RolloutData)
ROLLOUT_ABORTED = register_event_type(
    "rollout.aborted", EventKind.change,
    "A canary was aborted, by a person or automatically by the rollout guard (worse than stable): every "
    "caller is back on the stable version.", RolloutData)


WEBHOOK_CREATED = register_event_type(
    "webhook.created", EventKind.change, "A webhook endpoint was created (never with its secret).", WebhookChangedData)
WEBHOOK_UPDATED = register_event_type(
    "webhook.updated", EventKind.change,
    "A webhook endpoint was changed, or disabled by the dispatcher because its receiver answered 410 Gone.",
    WebhookChangedData)
WEBHOOK_DELETED = register_event_type(
    "webhook.deleted", EventKind.change, "A webhook endpoint was deleted with its deliveries.", WebhookChangedData)
WEBHOOK_SECRET_ROTATED = register_event_type(
    "webhook.secret_rotated", EventKind.change, "A webhook endpoint's signing secret was rotated.",
    WebhookChangedData)

AGENT_TEST_CHANGED = register_event_type(
    "agent.test_changed", EventKind.change, "A test stored with an agent was created, replaced or deleted.",
    AgentTestChangedData)


KEY_CREATED = register_event_type(
    "key.created", EventKind.change, "A named API key was created (never with its secret).", KeyChangedData)
KEY_REVOKED = register_event_type(
    "key.revoked", EventKind.change, "A named API key was revoked: it authenticates no further request.",
    KeyChangedData)


CALL_PLACED = register_event_type(
    "call.placed", EventKind.change, "An outbound call was placed (POST /calls, or a campaign's runner).",
    CallPlacedData)
CALL_DIALED = register_event_type(
    "call.dialed", EventKind.session,
    "An outbound call's dial finished: answered (the agent is on the call), busy, no answer or failed, with "
    "LiveKit's SIP status.", CallDialedData)
CAMPAIGN_CREATED = register_event_type(
    "campaign.created", EventKind.change, "A calling campaign was created.", CampaignChangedData)
CAMPAIGN_UPDATED = register_event_type(
    "campaign.updated", EventKind.change, "A campaign was paused, resumed, cancelled, or completed (its last "
    "contact has an outcome).", CampaignChangedData)


def change_types() -> list[str]:
    """The types the audit trail lists."""
    return sorted(n for n, t in EVENT_TYPES.items() if t.kind is EventKind.change)


def make_event(
    event_type: EventType, data: BaseModel | dict[str, Any], *, at: datetime | None = None,
    agent_id: str | None = None, ctx: ChangeContext = SYSTEM,
) -> Event:
    """A new event with a fresh id."""
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else dict(data)
    when = at or utcnow()
    return Event(
        id=new_event_id(int(when.timestamp() * 1000)), type=event_type.name, at=when, agent_id=agent_id,
        actor=ctx.actor, note=ctx.note, data=payload,
    )
