"""The `ConfigStore` protocol: the one persistence interface the API and worker use.

One implementation, `app.store.service.StoreService`, holds the rules; it runs over a
backend (`app.store.sql`, `app.store.mongo`) that implements the narrow primitives of
`app.store.backend`. Every backend passes the same contract test suite
(`tests/store/test_contract.py`). Rules the store keeps:

- every agent change writes a new immutable version row; current = highest version;
- `expected_version` mismatches and lost races raise `VersionConflict` (never a lost update);
- each write is atomic: a failed call leaves nothing half-written (one documented
  exception: a session write batch on MongoDB, see `apply_session_writes`);
- `config_epoch()` increases on every agent or route write, so caches in other processes
  can tell cheaply that something changed;
- every change commits its journal events (`app.domain.events`) with it: agent and
  route writes, session starts, handoffs and ends (also abandonment); write methods
  take a `ChangeContext` (who, why) that the events carry;
- a session write is durable once the call returns, so a crash loses at most what was
  in flight: `apply_session_writes` applies a batch of one session's writes (what its
  writer had queued) in order, on SQL in one transaction (all or nothing), on MongoDB
  as an ordered sequence of single-document writes (see `apply_session_writes`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from app.domain import (
    AgentConfig,
    AgentConfigInput,
    Handoff,
    Route,
    SessionOrder,
    SessionRecord,
    SessionStatus,
    Turn,
)
from app.domain.analysis import SessionAnalysis
from app.domain.events import SYSTEM, ChangeContext, Event
from app.domain.rollout import GuardPolicy, PublishedConfig, Release, RolloutReport
from app.domain.usage import UsageGroup, UsageReport

if TYPE_CHECKING:
    from app.domain.agent_tests import AgentTest, AgentTestCreate, AgentTestInput, TestRun
    from app.domain.calls import CallOutcome, CallRecord, Campaign, CampaignInput, CampaignView, Contact, ContactStatus
    from app.domain.keys import ApiKey, ApiKeyCreated, ApiKeyInput, StoredApiKey
    from app.domain.webhooks import (
        Delivery,
        DeliveryStatus,
        SecretRotation,
        StoredWebhook,
        Webhook,
        WebhookCreated,
        WebhookInput,
    )
    from app.store.backend import JournalEntry
    from app.store.call_service import ClaimedContact

ChangeListener = Callable[[], None]


# ------------------------------------------------------------ session write ops
#
# One typed value per kind of session write, so a queued write is data, not a closure:
# it can be logged with its payload, handed to another task (`PendingWrites`), and a
# store can apply a run of them in one transaction.


@dataclass(frozen=True, slots=True)
class StartSession:
    record: SessionRecord

    @property
    def name(self) -> str:
        return "start_session"

    def payload(self) -> dict[str, Any]:
        r = self.record
        return {"session_id": r.session_id, "agent_id": r.agent_id, "room": r.room}


@dataclass(frozen=True, slots=True)
class AppendTurn:
    turn: Turn

    @property
    def name(self) -> str:
        return "append_turn"

    def payload(self) -> dict[str, Any]:
        return {"seq": self.turn.seq, "role": self.turn.role, "text": self.turn.text}


@dataclass(frozen=True, slots=True)
class RecordData:
    data: Mapping[str, Any]

    @property
    def name(self) -> str:
        return "record_data"

    def payload(self) -> dict[str, Any]:
        return dict(self.data)


@dataclass(frozen=True, slots=True)
class RecordHandoff:
    handoff: Handoff

    @property
    def name(self) -> str:
        return "record_handoff"

    def payload(self) -> dict[str, Any]:
        return self.handoff.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class UpdateSession:
    """Set top-level fields; a later one in the same batch overrides an earlier one's
    fields, so of several queued `metrics` snapshots only the last is written."""

    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "update_metrics" if set(self.fields) == {"metrics"} else "update_session"

    def payload(self) -> dict[str, Any]:
        return dict(self.fields)


@dataclass(frozen=True, slots=True)
class FinishSession:
    status: SessionStatus
    reason: str | None = None
    error: str | None = None
    ended_at: datetime | None = None

    @property
    def name(self) -> str:
        return "finish_session"

    def payload(self) -> dict[str, Any]:
        return {"status": SessionStatus(self.status).value, "reason": self.reason, "error": self.error}


SessionWrite = StartSession | AppendTurn | RecordData | RecordHandoff | UpdateSession | FinishSession
"""One queued write to a session record (`ConfigStore.apply_session_writes`)."""

OPS_APPLIED_ATTR = "session_ops_applied"
"""Set on an exception from `apply_session_writes` when a store that cannot apply a
batch atomically (MongoDB) had already applied that many leading ops."""


def ops_applied_before(exc: BaseException) -> int:
    """How many leading ops of a failed `apply_session_writes` batch were applied (0 on SQL)."""
    n = getattr(exc, OPS_APPLIED_ATTR, 0)
    return n if isinstance(n, int) and n > 0 else 0


@dataclass(frozen=True, slots=True)
class ClaimedAnalysis:
    """A pending analysis this process now holds (`ConfigStore.claim_analyses`)."""

    record: SessionRecord
    """With its turns; `record.analysis` is the pending request."""
    token: str
    """Proves the lease: renew, finish and release only work with it."""
    claims: int
    """How many times it was claimed, this time included (a process that died holding it
    claimed it too)."""


@runtime_checkable
class ConfigStore(Protocol):
    # lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Connect, create tables/indexes, run migrations. Idempotent."""

    async def aclose(self) -> None: ...

    async def ping(self) -> None:
        """Raise `StoreUnavailable` if the database cannot answer right now."""

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Called (synchronously, after commit) on every agent/route write in this process."""

    async def config_epoch(self) -> int:
        """A counter bumped by every agent or route write, from any process."""

    # agent configs -----------------------------------------------------------
    async def create_agent_config(self, data: AgentConfigInput, *, ctx: ChangeContext = SYSTEM) -> AgentConfig: ...

    async def get_agent_config(self, agent_id: str, version: int | None = None) -> AgentConfig: ...

    async def list_agent_configs(
        self, *, enabled: bool | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[AgentConfig], int]:
        """Current versions ordered by agent id, and the total count matching the filter."""

    async def update_agent_config(
        self,
        agent_id: str,
        patch: Mapping[str, Any] | AgentConfigInput,
        expected_version: int | None = None,
        *,
        ctx: ChangeContext = SYSTEM,
    ) -> AgentConfig:
        """A merge patch (mapping) or a full replacement (`AgentConfigInput`) as a new version."""

    async def delete_agent_config(
        self, agent_id: str, expected_version: int | None = None, *, ctx: ChangeContext = SYSTEM
    ) -> None:
        """Delete every version; `InUse` if a route points at the agent; with
        `expected_version`, `VersionConflict` unless that is still the current version
        when the delete commits (a concurrent write is never deleted unseen)."""

    async def list_versions(self, agent_id: str) -> list[AgentConfig]:
        """Every version, oldest first."""

    async def rollback(
        self, agent_id: str, version: int, expected_version: int | None = None, *, ctx: ChangeContext = SYSTEM
    ) -> AgentConfig:
        """Write the content of `version` as a new current version."""

    # publishing (`app.domain.rollout`) ----------------------------------------
    def add_publish_check(self, check: Callable[[str, int], Awaitable[None]]) -> None:
        """Run before every publish, canary start, promote and rollback; raises `PublishRefused` to refuse."""

    async def get_release(self, agent_id: str) -> Release: ...

    async def publish(
        self, agent_id: str, version: int, *, canary_percent: int | None = None, expected_rev: int | None = None,
        ctx: ChangeContext = SYSTEM,
    ) -> Release:
        """Publish `version`, or start a canary of it for `canary_percent` of new sessions."""

    async def promote_canary(
        self, agent_id: str, *, expected_rev: int | None = None, ctx: ChangeContext = SYSTEM
    ) -> Release: ...

    async def abort_canary(
        self, agent_id: str, *, reason: str | None = None, expected_rev: int | None = None,
        ctx: ChangeContext = SYSTEM, figures: dict[str, object] | None = None, rollout_id: str | None = None,
    ) -> Release: ...

    async def list_published(self, *, offset: int = 0, limit: int = 500) -> tuple[list[PublishedConfig], int]:
        """What routing hands out, by agent id: published configs and running canaries."""

    async def rollout_report(self, agent_id: str, policy: GuardPolicy | None = None) -> RolloutReport: ...

    # routes ------------------------------------------------------------------
    async def list_routes(self) -> list[Route]: ...

    async def get_route(self, purpose: str) -> Route: ...

    async def put_route(self, route: Route, *, ctx: ChangeContext = SYSTEM) -> Route:
        """Create or replace; `is_default=True` clears the flag on every other route."""

    async def replace_routes(self, routes: list[Route], *, ctx: ChangeContext = SYSTEM) -> list[Route]:
        """Replace the whole table atomically; at most one default."""

    async def delete_route(self, purpose: str, *, ctx: ChangeContext = SYSTEM) -> None: ...

    # sessions ----------------------------------------------------------------
    async def start_session(self, record: SessionRecord) -> SessionRecord: ...

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        """Idempotent on (session_id, turn.seq), so a retried write cannot duplicate."""

    async def record_data(self, session_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Merge fields into `collected`; returns the merged result."""

    async def record_handoff(self, session_id: str, handoff: Handoff) -> None: ...

    async def update_session(self, session_id: str, **fields: Any) -> None:
        """Set top-level fields (agent_id, config_version, degraded, metrics...)."""

    async def finish_session(
        self,
        session_id: str,
        status: SessionStatus,
        reason: str | None = None,
        error: str | None = None,
        ended_at: datetime | None = None,
    ) -> None: ...

    async def list_sessions(
        self,
        *,
        agent_id: str | None = None,
        status: SessionStatus | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        order: SessionOrder = SessionOrder.newest,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[SessionRecord], int]:
        """In `order` (newest first by default), without turns (use `get_session` for a transcript)."""

    async def get_session(self, session_id: str) -> SessionRecord: ...

    async def apply_session_writes(self, session_id: str, ops: list[SessionWrite]) -> None:
        """Apply one session's queued writes, in order, as one batch: the session
        writer's hot path (one round of I/O for whatever queued up meanwhile).

        The result equals calling the per-op methods in order. SQL: one transaction, so
        on any error nothing of the batch is applied. MongoDB (no multi-document
        transactions): an ordered sequence of single-document writes; on error the
        exception carries how many leading ops were applied (`ops_applied_before`), and
        re-applying those is harmless except that a handoff could be recorded twice.
        Errors are the per-op ones (`NotFound`, `AlreadyExists`, `InvalidInput`,
        `StoreUnavailable`); isolating the op that failed is the caller's job."""

    async def heartbeat(self, owner: str) -> int:
        """Stamp `heartbeat_at = now` on `owner`'s active sessions: the owner is alive.
        Returns how many sessions were stamped."""

    async def abandon_stale_sessions(self, cutoff: datetime, reason: str) -> int:
        """Crash recovery with many processes on one database: active sessions whose
        owner last proved alive (`heartbeat_at`, else `started_at`) before `cutoff` are
        marked abandoned with `reason` and `ended_at`. Returns how many."""

    async def abandon_active_sessions(self, reason: str) -> int:
        """Start-up recovery when one process owns the database (SQLite): mark every
        session left `active` (by a dead predecessor) as abandoned."""

    # post-call analysis -------------------------------------------------------
    async def claim_analyses(self, owner: str, *, lease_s: float, limit: int) -> list[ClaimedAnalysis]:
        """Lease up to `limit` pending analyses to this process for `lease_s` seconds,
        oldest session first. One whose lease ran out (its process died, or stopped
        renewing) can be claimed again; one held by a live lease never is."""

    async def renew_analysis(self, claim: ClaimedAnalysis, lease_s: float) -> bool:
        """Extend the lease by `lease_s` from now; False if it was lost."""

    async def finish_analysis(self, claim: ClaimedAnalysis, analysis: SessionAnalysis) -> bool:
        """Store the finished (done or failed) analysis and end the lease; False, writing
        nothing, if the lease was lost (another process holds it now)."""

    async def release_analysis(self, claim: ClaimedAnalysis) -> None:
        """Give up the lease unfinished (shutdown): it can be claimed again at once."""

    # usage --------------------------------------------------------------------
    async def usage_report(
        self,
        *,
        group_by: list[UsageGroup],
        agent_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> UsageReport:
        """Usage and cost summed over the sessions started in [since, until), grouped by
        agent, version and/or UTC day, with the total."""
    # journal -----------------------------------------------------------------
    async def list_events(
        self,
        *,
        types: list[str] | None = None,
        agent_id: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[Event], int]:
        """Journal events, newest first, and how many match (the audit trail lists the
        `change` types)."""

    async def get_event(self, event_id: str) -> JournalEntry: ...

    async def unfanned_events(self, limit: int = 100) -> list[JournalEntry]:
        """Events whose webhook deliveries are not made yet, oldest first."""

    async def freeze_event(self, event_id: str, agent_id: str | None, data: dict[str, Any]) -> JournalEntry:
        """Set a stub's rendered payload once; the first renderer wins."""

    async def mark_fanned_out(self, event_ids: list[str]) -> None: ...

    async def relay_events(self, grace_s: float = 30.0) -> int:
        """Move events committed with a change but left out of the journal by a crash
        into it (MongoDB; a no-op on SQL). Idempotent."""

    def add_journal_listener(self, listener: ChangeListener) -> None:
        """Called after every write in this process that committed journal events."""

    # webhooks (`app.store.webhook_service`) ------------------------------------
    async def create_webhook(self, data: WebhookInput, *, ctx: ChangeContext = SYSTEM) -> WebhookCreated:
        """A new endpoint with a new secret (returned only here)."""

    async def list_webhooks(self) -> list[Webhook]: ...

    async def dispatch_targets(self) -> list[StoredWebhook]:
        """Every endpoint with its secrets, for the dispatcher."""

    async def get_webhook(self, webhook_id: str) -> Webhook: ...

    async def update_webhook(
        self, webhook_id: str, patch: Mapping[str, Any], *, ctx: ChangeContext = SYSTEM
    ) -> Webhook: ...

    async def rotate_webhook_secret(
        self, webhook_id: str, grace_period_s: int, *, ctx: ChangeContext = SYSTEM
    ) -> SecretRotation: ...

    async def disable_webhook(self, webhook_id: str, reason: str) -> None: ...

    async def delete_webhook(self, webhook_id: str, *, ctx: ChangeContext = SYSTEM) -> None: ...

    async def add_deliveries(self, deliveries: list[Delivery]) -> int:
        """Idempotent per (event, endpoint)."""

    async def claim_deliveries(self, webhook_id: str, owner: str, lease_s: float, limit: int) -> list[Delivery]:
        """Lease due attempts (compare-and-swap): no two processes hold the same one."""

    async def finish_delivery(self, delivery_id: str, owner: str, attempt: int, **values: Any) -> bool: ...

    async def get_delivery(self, delivery_id: str) -> Delivery: ...

    async def list_deliveries(
        self, *, webhook_id: str | None = None, status: DeliveryStatus | None = None, offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[Delivery], int]: ...

    async def resend_delivery(self, delivery_id: str, window_s: float) -> Delivery: ...

    async def count_due_deliveries(self) -> int: ...

    # named API keys (`app.store.key_service`) -----------------------------------
    async def create_api_key(self, data: ApiKeyInput, *, ctx: ChangeContext = SYSTEM) -> ApiKeyCreated:
        """A new key; `AlreadyExists` for a name in use. Its secret is returned only here."""

    async def list_api_keys(self) -> list[ApiKey]:
        """Every key by name, never a secret or hash."""

    async def api_key_table(self) -> list[StoredApiKey]:
        """Every key with the hash of its secret: for the API guard only."""

    async def revoke_api_key(self, name: str, *, ctx: ChangeContext = SYSTEM) -> ApiKey:
        """Delete the key (`NotFound` if there is none); returns what it was."""

    async def touch_api_key(self, name: str, at: datetime) -> None:
        """Record that the key authenticated a request at `at`."""

    # tests stored with an agent (`app.store.agent_test_service`) ---------------
    async def create_agent_test(
        self, agent_id: str, data: AgentTestCreate, *, ctx: ChangeContext = SYSTEM
    ) -> AgentTest: ...

    async def replace_agent_test(
        self, agent_id: str, name: str, data: AgentTestInput, *, ctx: ChangeContext = SYSTEM
    ) -> AgentTest: ...

    async def delete_agent_test(self, agent_id: str, name: str, *, ctx: ChangeContext = SYSTEM) -> None: ...

    async def get_agent_test(self, agent_id: str, name: str) -> AgentTest: ...

    async def list_agent_tests(self, agent_id: str) -> list[AgentTest]: ...

    async def create_test_run(
        self, agent_id: str, version: int, *, ctx: ChangeContext = SYSTEM
    ) -> tuple[TestRun, list[AgentTest]]: ...

    async def save_test_run(self, run: TestRun) -> bool: ...

    async def get_test_run(self, agent_id: str, run_id: str) -> TestRun: ...

    async def list_test_runs(self, agent_id: str, version: int | None = None, limit: int = 20) -> list[TestRun]: ...

    async def abandon_unfinished_test_runs(self, reason: str, *, created_before: datetime | None = None) -> int: ...
    # ------------------------------------------------------ calls and campaigns

    async def create_call(self, call: CallRecord, *, ctx: ChangeContext = SYSTEM) -> CallRecord:
        """Store a call being dialled (status `dialing`) with its `call.placed` event."""

    async def finish_call(self, call_id: str, outcome: CallOutcome, **fields: Any) -> CallRecord:
        """Its outcome, once (`WrongState` when it is no longer dialing)."""

    async def get_call(self, call_id: str) -> CallRecord: ...

    async def list_calls(
        self, *, campaign_id: str | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[CallRecord], int]: ...

    async def create_campaign(self, data: CampaignInput, *, ctx: ChangeContext = SYSTEM) -> CampaignView:
        """The campaign and every contact, atomically, `running`."""

    async def get_campaign(self, campaign_id: str) -> CampaignView: ...

    async def list_campaigns(self, *, offset: int = 0, limit: int = 50) -> tuple[list[CampaignView], int]: ...

    async def running_campaigns(self) -> list[Campaign]: ...

    async def change_campaign(self, campaign_id: str, change: str, *, ctx: ChangeContext = SYSTEM) -> CampaignView:
        """`paused` / `resumed` / `cancelled` / `completed`; `WrongState` if it does not apply."""

    async def campaign_contacts(
        self, campaign_id: str, *, status: ContactStatus | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[Contact], int]: ...

    async def claim_contacts(
        self, campaign: Campaign, owner: str, *, lease_s: float, limit: int
    ) -> list[ClaimedContact]:
        """Lease due contacts (never one another runner holds)."""

    async def release_contact(self, claim: ClaimedContact, **values: Any) -> bool: ...
