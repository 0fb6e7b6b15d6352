"""Outbound phone calls and campaigns: what a call and a campaign are, and the rules that
need no I/O (E.164 numbers, what a SIP status means, calling hours in a contact's time
zone, when a contact is tried again).

A call is placed through LiveKit (`app.telephony`): a room, a dispatch of our agent into
it, then a SIP participant dialled into the room. Its record keeps the outcome and
LiveKit's SIP status; the session the agent runs in that room is found by `room`.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, time, timedelta
from enum import Enum
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.domain.models import MAX_VARIABLE_VALUE_CHARS, PURPOSE_RE, SLUG_RE
from app.domain.phone import E164_RE
from app.domain.values import JsonInt, UtcDatetime

PhoneNumber = Annotated[str, StringConstraints(pattern=E164_RE)]
VariableName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")]
VariableValue = Annotated[str, StringConstraints(max_length=MAX_VARIABLE_VALUE_CHARS)]
Variables = Annotated[dict[VariableName, VariableValue], Field(max_length=32)]


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as 'Europe/Berlin')") from None
    return name


TimeZoneName = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_zone)]


def new_call_id() -> str:
    return f"call_{secrets.token_hex(8)}"


def new_campaign_id() -> str:
    return f"cmp_{secrets.token_hex(8)}"


class CallOutcome(str, Enum):
    dialing = "dialing"
    """Placed, not answered yet (or the process placing it died: see `error`)."""
    answered = "answered"
    busy = "busy"
    no_answer = "no_answer"
    failed = "failed"


BUSY_CODES = frozenset({486, 600, 603})
"""Busy Here, Busy Everywhere, Decline: the person is there but not now."""
NO_ANSWER_CODES = frozenset({408, 480, 487})
"""Request Timeout, Temporarily Unavailable, Request Terminated (rang out)."""


def outcome_of_sip(code: int | None) -> CallOutcome:
    """What a failed dial's SIP status means for the caller (and for a campaign's retry)."""
    if code in BUSY_CODES:
        return CallOutcome.busy
    if code in NO_ANSWER_CODES:
        return CallOutcome.no_answer
    return CallOutcome.failed


RETRYABLE = frozenset({CallOutcome.busy, CallOutcome.no_answer})


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CallTarget(_Input):
    """Which agent takes the call: a purpose (routed) or an agent id (optionally a version)."""

    purpose: Annotated[str, StringConstraints(pattern=PURPOSE_RE)] | None = None
    agent_id: Annotated[str, StringConstraints(pattern=SLUG_RE)] | None = None
    version: Annotated[int, Field(ge=1)] | None = Field(
        None, description="A specific version of `agent_id` (e.g. a draft); needs the publish role")

    @model_validator(mode="after")
    def _one_target(self) -> CallTarget:
        if self.purpose and self.agent_id:
            raise ValueError("give either purpose or agent_id, not both")
        if self.version is not None and not self.agent_id:
            raise ValueError("version needs agent_id")
        return self


class CallInput(CallTarget):
    to: PhoneNumber = Field(description="The number to dial, E.164 (+15551234567)")
    variables: Variables = Field(default_factory=dict)
    trunk: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = Field(
        None, description="LiveKit outbound trunk id; default: the OUTBOUND_TRUNK_ID setting")


class CallRecord(BaseModel):
    """One dialled call, as stored."""

    id: str
    to: str
    status: CallOutcome
    agent_id: str | None = None
    purpose: str | None = None
    version: int | None = None
    trunk: str
    room: str = Field(description="The LiveKit room; the session the agent runs there has the same room")
    variables: dict[str, str] = Field(default_factory=dict)
    dispatch_id: str | None = None
    participant_identity: str | None = None
    sip_call_id: str | None = None
    sip_status_code: int | None = Field(None, description="LiveKit's SIP status of a failed dial (486, 480, ...)")
    sip_status: str | None = None
    error: str | None = None
    campaign_id: str | None = None
    contact_seq: int | None = None
    actor: str | None = Field(None, description="The API key that placed it (campaign calls: the campaign's creator)")
    created_at: UtcDatetime
    ended_at: UtcDatetime | None = Field(None, description="When the dial finished (answered or failed)")


# ------------------------------------------------------------------------ campaigns


class CallingHours(_Input):
    """When contacts may be called, in each contact's own time zone: from `start` to `end`
    (end excluded; 00:00 is midnight, the end of the day) on `days` (0 = Monday)."""

    start: time = time(9, 0)
    end: time = time(20, 0)
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(default_factory=lambda: [0, 1, 2, 3, 4, 5, 6],
                                                          min_length=1, max_length=7)

    @model_validator(mode="after")
    def _order(self) -> CallingHours:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("start and end are local times without an offset")
        if self.end <= self.start and self.end != time(0):
            raise ValueError("end must be after start (00:00 means midnight; windows across midnight are not "
                             "supported)")
        return self

    def next_open(self, now: datetime, zone: str) -> datetime | None:
        """None when `now` is inside the window in `zone`; else the UTC instant it opens next."""
        tz = ZoneInfo(zone)
        local = now.astimezone(tz)
        clock = local.time().replace(tzinfo=None)
        if local.weekday() in self.days and self.start <= clock and (self.end == time(0) or clock < self.end):
            return None
        for ahead in range(8):
            day = (local + timedelta(days=ahead)).date()
            if day.weekday() not in self.days:
                continue
            opens = datetime.combine(day, self.start, tzinfo=tz)
            if opens > local:
                return opens.astimezone(UTC)
        return None  # unreachable: days is never empty


class ContactInput(_Input):
    phone: PhoneNumber
    variables: Variables = Field(default_factory=dict)
    timezone: TimeZoneName | None = Field(None, description="IANA zone for calling hours; default: the campaign's")


class CampaignSettings(CallTarget):
    name: str = Field(min_length=1, max_length=200)
    trunk: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = None
    concurrency: Annotated[int, Field(ge=1, le=100)] = Field(2, description="Calls being dialled at once")
    calling_hours: CallingHours = Field(default_factory=CallingHours)
    timezone: TimeZoneName = Field("UTC", description="Contacts without their own time zone use this one")
    max_attempts: Annotated[int, Field(ge=1, le=10)] = Field(
        3, description="Dial attempts per contact; busy and no-answer are retried up to this")
    retry_delay_s: Annotated[float, Field(ge=0, le=7 * 86400)] = Field(
        1800, description="Seconds between a busy/no-answer attempt and the next")


class CampaignInput(CampaignSettings):
    contacts: list[ContactInput] = Field(min_length=1)


class CampaignStatus(str, Enum):
    running = "running"
    paused = "paused"
    completed = "completed"
    cancelled = "cancelled"


class ContactStatus(str, Enum):
    pending = "pending"
    """Waiting for its (next) attempt."""
    dialing = "dialing"
    """Leased by a runner that is dialling it now."""
    answered = "answered"
    busy = "busy"
    no_answer = "no_answer"
    failed = "failed"


FINAL_CONTACT = frozenset({ContactStatus.answered, ContactStatus.busy, ContactStatus.no_answer, ContactStatus.failed})


class Campaign(CampaignSettings):
    id: str
    status: CampaignStatus
    total: int = Field(description="Contacts in the campaign")
    actor: str | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class CampaignProgress(BaseModel):
    total: int
    by_status: dict[str, int] = Field(description="Contacts per status (pending, dialing, answered, busy, ...)")
    done: int = Field(description="Contacts with a final outcome")
    attempts: int = Field(description="Dial attempts so far")


class CampaignView(Campaign):
    progress: CampaignProgress


class Contact(BaseModel):
    campaign_id: str
    seq: int = Field(description="The contact's position in the list the campaign was created with")
    phone: str
    variables: dict[str, str] = Field(default_factory=dict)
    timezone: str
    status: ContactStatus = ContactStatus.pending
    attempts: JsonInt = 0
    next_attempt_at: UtcDatetime | None = None
    last_call_id: str | None = None
    last_sip_status_code: int | None = None
    last_error: str | None = None
    updated_at: UtcDatetime | None = None


def after_attempt(contact: Contact, outcome: CallOutcome, campaign: CampaignSettings, now: datetime) -> dict[str, Any]:
    """The contact's next state after a dial with `outcome` (its `attempts` already counts it)."""
    if outcome in RETRYABLE and contact.attempts < campaign.max_attempts:
        return {"status": ContactStatus.pending, "next_attempt_at": now + timedelta(seconds=campaign.retry_delay_s)}
    final = {CallOutcome.answered: ContactStatus.answered, CallOutcome.busy: ContactStatus.busy,
             CallOutcome.no_answer: ContactStatus.no_answer}.get(outcome, ContactStatus.failed)
    return {"status": final, "next_attempt_at": None}


