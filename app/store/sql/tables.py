"""SQL table declarations (SQLModel) for the SQL backend.

The rows are storage envelopes around the domain models: an agent version row keeps
the whole validated `AgentConfig` as JSON plus the few columns we filter or join on,
so there is still exactly one definition of what a config is (`app.domain`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 11
"""1: initial tables. 2: `sessions.owner` and `sessions.heartbeat_at` (crash recovery with
several processes on one database). 3: `sessions.usage` and `sessions.events` (what a call
consumed, which providers served it, fail-overs, cut replies, budget warnings). 4: the
event journal (the `events` table), webhook endpoints and deliveries (new tables:
`create_all` adds them). 5: `sessions.analysis` and the analysis queue columns
(post-call analysis). 6: `sessions.worst_turn_ms` (sessions listed slowest first; filled in
for older rows from their stored metrics). 7: `routes.phone_numbers` (inbound calls routed
by the dialled number) and `sessions.call` (a phone session's numbers, call id and
voicemail outcome). 8: named API keys (the `api_keys` table, new: `create_all` adds it).
9: publishing and canaries: `agent_heads.published_version` (NULL on rows from
before: the current version, as every write was published), `canary_version`,
`release_rev` and `rollout`, and `sessions.arm`. 10: `agent_tests` and `test_runs` (tests stored
with an agent and their runs; new tables). 11: outbound calls and campaigns (new tables
`calls`, `campaigns`, `campaign_contacts`). `SQLDatabase.start` adds what an older database lacks (tables,
columns and indexes only if missing, so every step is idempotent)."""


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on every backend (SQLite has no tz)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _ts(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


def _json(**kw: Any) -> Any:
    return Field(sa_type=sa.JSON, **kw)


class MetaRow(SQLModel, table=True):
    __tablename__ = "meta"
    key: str = Field(primary_key=True, max_length=64)
    value: int = 0


class AgentHeadRow(SQLModel, table=True):
    """One row per agent: its current version. The conditional update of
    `current_version` is what makes concurrent writers conflict instead of racing."""

    __tablename__ = "agent_heads"
    agent_id: str = Field(primary_key=True, max_length=64)
    current_version: int
    enabled: bool = Field(index=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    # the release (`app.domain.rollout.Release`); `release_rev` is its compare-and-swap token
    published_version: int | None = None
    canary_version: int | None = None
    release_rev: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    rollout: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON(none_as_null=True), nullable=True)


class AgentVersionRow(SQLModel, table=True):
    __tablename__ = "agent_configs"
    # AUTOINCREMENT: SQLite would otherwise hand a deleted row's id to the next insert,
    # and ids key the store's cache of parsed (immutable) versions.
    __table_args__ = (
        sa.UniqueConstraint("agent_id", "version", name="uq_agent_version"),
        {"sqlite_autoincrement": True},
    )
    id: int | None = Field(default=None, primary_key=True)
    agent_id: str = Field(index=True, max_length=64)
    version: int
    data: dict[str, Any] = _json()
    created_at: datetime = _ts()


class RouteRow(SQLModel, table=True):
    __tablename__ = "routes"
    purpose: str = Field(primary_key=True, max_length=64)
    agent_id: str = Field(index=True, max_length=64)
    is_default: bool = False
    updated_at: datetime = _ts()
    phone_numbers: list[str] = _json(default_factory=list)


class SessionRow(SQLModel, table=True):
    __tablename__ = "sessions"
    session_id: str = Field(primary_key=True, max_length=64)
    room: str = Field(max_length=256)
    agent_id: str = Field(index=True, max_length=64)
    config_version: int | None = None
    user_id: str | None = Field(default=None, max_length=256)
    arm: str | None = Field(default=None, max_length=8)
    status: str = Field(index=True, max_length=16)
    started_at: datetime = _ts(index=True)
    ended_at: datetime | None = _ts(default=None, nullable=True)
    end_reason: str | None = None
    route_reason: str | None = None
    degraded: str | None = None
    collected: dict[str, Any] = _json(default_factory=dict)
    handoffs: list[dict[str, Any]] = _json(default_factory=list)
    metrics: list[dict[str, Any]] = _json(default_factory=list)
    usage: dict[str, Any] = _json(default_factory=dict)
    events: list[dict[str, Any]] = _json(default_factory=list)
    error: str | None = None
    owner: str | None = Field(default=None, max_length=256)
    heartbeat_at: datetime | None = _ts(default=None, nullable=True)
    analysis: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON(none_as_null=True), nullable=True)
    # the analysis queue (`session_rules.QUEUE_FIELDS`)
    analysis_status: str | None = Field(default=None, max_length=16, index=True)
    analysis_owner: str | None = Field(default=None, max_length=300)
    analysis_lease_until: datetime | None = _ts(default=None, nullable=True)
    analysis_claims: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    worst_turn_ms: float | None = Field(default=None, index=True)  # from `metrics` (session_rules)
    call: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON(none_as_null=True), nullable=True)


class TurnRow(SQLModel, table=True):
    __tablename__ = "session_turns"
    session_id: str = Field(primary_key=True, max_length=64)
    seq: int = Field(primary_key=True)
    role: str = Field(max_length=16)
    text: str
    at: datetime = _ts()
    agent_id: str | None = Field(default=None, max_length=64)


class EventRow(SQLModel, table=True):
    """The journal: one row per event, written in the transaction of the change that
    caused it. `seq` orders rows written in one millisecond; `id` is the public id."""

    __tablename__ = "events"
    __table_args__ = ({"sqlite_autoincrement": True},)
    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(unique=True, max_length=40)
    type: str = Field(index=True, max_length=64)
    at: datetime = _ts(index=True)
    agent_id: str | None = Field(default=None, index=True, max_length=64)
    actor: str | None = Field(default=None, index=True, max_length=100)
    note: str | None = Field(default=None, max_length=500)
    data: dict[str, Any] = _json(default_factory=dict)
    rendered: bool = True
    fanout_pending: bool = Field(default=True, index=True)


class WebhookRow(SQLModel, table=True):
    __tablename__ = "webhooks"
    id: str = Field(primary_key=True, max_length=40)
    rev: int = 0
    url: str = Field(sa_type=sa.Text)
    events: list[str] = _json(default_factory=list)
    agent_id: str | None = Field(default=None, max_length=64)
    enabled: bool = True
    description: str = Field(default="", sa_type=sa.Text)
    secret: str = Field(max_length=100)
    previous_secret: str | None = Field(default=None, max_length=100)
    previous_secret_expires_at: datetime | None = _ts(default=None, nullable=True)
    disabled_reason: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class DeliveryRow(SQLModel, table=True):
    """One event to one endpoint. `lease_owner`/`lease_until`: the process running an
    attempt now; `attempts` doubles as the attempt's compare-and-swap token."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("event_id", "webhook_id", name="uq_delivery_event_webhook"),
        sa.Index("ix_delivery_due", "webhook_id", "status", "next_attempt_at"),
    )
    id: str = Field(primary_key=True, max_length=40)
    webhook_id: str = Field(max_length=40)
    event_id: str = Field(max_length=40)
    event_type: str = Field(max_length=64)
    status: str = Field(index=True, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = _ts(default=None, nullable=True)
    window_ends_at: datetime = _ts()
    last_attempt_at: datetime | None = _ts(default=None, nullable=True)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    delivered_at: datetime | None = _ts(default=None, nullable=True)
    created_at: datetime = _ts(index=True)
    lease_owner: str | None = Field(default=None, max_length=256)
    lease_until: datetime | None = _ts(default=None, nullable=True)


class ApiKeyRow(SQLModel, table=True):
    """A named API key: only the SHA-256 of its secret (`app.domain.keys`)."""

    __tablename__ = "api_keys"
    name: str = Field(primary_key=True, max_length=64)
    role: str = Field(max_length=16)
    key_hash: str = Field(unique=True, max_length=64)
    created_at: datetime = _ts()
    last_used_at: datetime | None = _ts(default=None, nullable=True)


class AgentTestRow(SQLModel, table=True):
    """A test document stored with an agent (its YAML verbatim)."""

    __tablename__ = "agent_tests"
    agent_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(primary_key=True, max_length=64)
    content: str = Field(sa_type=sa.Text)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class TestRunRow(SQLModel, table=True):
    """One run of an agent's tests against a version; `data` is the whole `TestRun`."""

    __tablename__ = "test_runs"
    __table_args__ = (sa.Index("ix_test_runs_agent_version", "agent_id", "version", "created_at"),)
    id: str = Field(primary_key=True, max_length=40)
    agent_id: str = Field(max_length=64)
    version: int
    status: str = Field(index=True, max_length=16)
    created_at: datetime = _ts()
    data: dict[str, Any] = _json()


class CallRow(SQLModel, table=True):
    """One dialled call (`app.domain.calls.CallRecord`); `status` moves from `dialing` once."""

    __tablename__ = "calls"
    __table_args__ = (sa.Index("ix_calls_campaign", "campaign_id", "created_at"),)
    id: str = Field(primary_key=True, max_length=40)
    to: str = Field(max_length=16)
    status: str = Field(max_length=16)
    agent_id: str | None = Field(default=None, max_length=64)
    purpose: str | None = Field(default=None, max_length=64)
    version: int | None = None
    trunk: str = Field(max_length=64)
    room: str = Field(max_length=256, index=True)
    variables: dict[str, Any] = _json(default_factory=dict)
    dispatch_id: str | None = Field(default=None, max_length=64)
    participant_identity: str | None = Field(default=None, max_length=128)
    sip_call_id: str | None = Field(default=None, max_length=128)
    sip_status_code: int | None = None
    sip_status: str | None = Field(default=None, max_length=200)
    error: str | None = Field(default=None, sa_type=sa.Text)
    campaign_id: str | None = Field(default=None, max_length=40)
    contact_seq: int | None = None
    actor: str | None = Field(default=None, max_length=100)
    created_at: datetime = _ts(index=True)
    ended_at: datetime | None = _ts(default=None, nullable=True)


class CampaignRow(SQLModel, table=True):
    """A campaign's settings (`settings`: the `CampaignSettings` JSON) and status; `rev` is
    the compare-and-swap token of status changes."""

    __tablename__ = "campaigns"
    id: str = Field(primary_key=True, max_length=40)
    rev: int = 0
    status: str = Field(index=True, max_length=16)
    settings: dict[str, Any] = _json(default_factory=dict)
    total: int = 0
    actor: str | None = Field(default=None, max_length=100)
    created_at: datetime = _ts(index=True)
    updated_at: datetime = _ts()


class ContactRow(SQLModel, table=True):
    """One contact of a campaign. `lease_owner`/`lease_until`: the runner dialling it now."""

    __tablename__ = "campaign_contacts"
    __table_args__ = (sa.Index("ix_contacts_due", "campaign_id", "status", "next_attempt_at"),)
    campaign_id: str = Field(primary_key=True, max_length=40)
    seq: int = Field(primary_key=True)
    phone: str = Field(max_length=16)
    variables: dict[str, Any] = _json(default_factory=dict)
    timezone: str = Field(max_length=64)
    status: str = Field(max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = _ts(default=None, nullable=True)
    last_call_id: str | None = Field(default=None, max_length=40)
    last_sip_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    updated_at: datetime | None = _ts(default=None, nullable=True)
    lease_owner: str | None = Field(default=None, max_length=300)
    lease_until: datetime | None = _ts(default=None, nullable=True)


metadata = SQLModel.metadata
meta_t: sa.Table = MetaRow.__table__  # type: ignore[attr-defined]
heads_t: sa.Table = AgentHeadRow.__table__  # type: ignore[attr-defined]
versions_t: sa.Table = AgentVersionRow.__table__  # type: ignore[attr-defined]
routes_t: sa.Table = RouteRow.__table__  # type: ignore[attr-defined]
sessions_t: sa.Table = SessionRow.__table__  # type: ignore[attr-defined]
turns_t: sa.Table = TurnRow.__table__  # type: ignore[attr-defined]
events_t: sa.Table = EventRow.__table__  # type: ignore[attr-defined]
webhooks_t: sa.Table = WebhookRow.__table__  # type: ignore[attr-defined]
deliveries_t: sa.Table = DeliveryRow.__table__  # type: ignore[attr-defined]
api_keys_t: sa.Table = ApiKeyRow.__table__  # type: ignore[attr-defined]
agent_tests_t: sa.Table = AgentTestRow.__table__  # type: ignore[attr-defined]
test_runs_t: sa.Table = TestRunRow.__table__  # type: ignore[attr-defined]
calls_t: sa.Table = CallRow.__table__  # type: ignore[attr-defined]
campaigns_t: sa.Table = CampaignRow.__table__  # type: ignore[attr-defined]
contacts_t: sa.Table = ContactRow.__table__  # type: ignore[attr-defined]

ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "sessions": (
        "owner", "heartbeat_at",  # 2
        "usage", "events",  # 3
        "analysis", "analysis_status", "analysis_owner", "analysis_lease_until", "analysis_claims",  # 5
        "worst_turn_ms",  # 6
        "call",  # 7
        "arm",  # 9
    ),
    "routes": ("phone_numbers",),  # 7
    "agent_heads": ("published_version", "canary_version", "release_rev", "rollout"),  # 9
}
"""Columns added after version 1, by table: `create_all` does not alter an existing table,
so `SQLDatabase.start` adds whichever of these are missing (ALTER TABLE ... ADD COLUMN),
and then the indexes declared on them."""
