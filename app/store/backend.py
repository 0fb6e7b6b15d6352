"""The narrow persistence primitives a database backend implements, split by concern.

`app.store.service.StoreService` holds every rule (versioning, route-table invariants,
session-field rules, listener fan-out) and calls these; a backend (`app.store.sql`,
`app.store.mongo`) only stores and fetches, atomically. What each primitive must
guarantee is stated on it; the contract suite (`tests/store/`) checks the whole.

Every config write primitive (`create`, `append`, `delete`, `swap`) bumps the config
epoch as part of its commit, so another process's cache notices it.

Every write primitive takes the journal events the service made for it (`events`, or
`Run.events` for sessions) and commits them at the write's own commit point: in the
same transaction on SQL; on MongoDB embedded in the commit-point document and relayed
into the journal right after (`JournalBackend.relay` repeats that after a crash). A
failed write leaves no event; a committed write always yields its events.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from app.domain import AgentConfig, Route, SessionOrder, SessionRecord, SessionStatus
from app.domain.agent_tests import AgentTest, TestRun
from app.domain.calls import CallRecord, Campaign, Contact, ContactStatus
from app.domain.events import Event
from app.domain.keys import StoredApiKey
from app.domain.rollout import ArmSession
from app.domain.usage import UsageGroup, UsageRow
from app.domain.webhooks import Delivery, DeliveryStatus, StoredWebhook
from app.store.session_rules import Run


class VersionKey(NamedTuple):
    """One stored version's identity: `token` tells apart two agents that had the same id
    (an SQL row id, a Mongo generation), so a parsed version can be memoised forever."""

    agent_id: str
    token: int | str
    version: int


@dataclass(frozen=True, slots=True)
class StoredVersion:
    key: VersionKey
    data: Any | None
    """The stored config JSON; None when the caller said it already has `key` parsed."""
    head_created_at: datetime | None = None
    """On `current()`: when the agent was created (repairs a version that no longer parses)."""


@dataclass(frozen=True, slots=True)
class StoredRelease:
    """An agent's release state as stored on its head (`app.domain.rollout.Release`)."""

    agent_id: str
    current_version: int
    published_version: int
    """Databases from before publishing: the current version (every write was published)."""
    rev: int
    rollout: dict[str, Any] | None
    """`Rollout` as JSON: the running canary, or the last one that ended."""


@dataclass(frozen=True, slots=True)
class PublishStep:
    """`append`'s instruction to also publish the new version, only if the release is
    still at revision `rev` (else the version is stored as a draft and `events` dropped)."""

    rev: int
    events: list[Event]


@dataclass(frozen=True, slots=True)
class PublishedAgent:
    """What routing hands out for one agent: the published version and a running canary."""

    published: StoredVersion
    canary: StoredVersion | None
    rollout: dict[str, Any] | None
    current_version: int


class Known(Protocol):
    """Version keys the caller has parsed already (its memo): data for these may be left out."""

    def __contains__(self, key: object, /) -> bool: ...


@dataclass(frozen=True, slots=True)
class RouteTable:
    rev: int
    """Bumped by every swap: the compare-and-swap token."""
    routes: list[Route]


@dataclass(frozen=True, slots=True)
class Applied:
    """What a session batch produced that the caller may return."""

    started: SessionRecord | None = None
    """The record as stored (times at the backend's precision), if the batch started the session."""
    collected: dict[str, Any] | None = None
    """The merged `collected`, if the batch recorded data."""


class HeadMoved(Exception):
    """`append`/`delete`: the agent's current version is no longer the one given."""

    def __init__(self, actual: int | None) -> None:
        super().__init__(actual)
        self.actual = actual


class Routed(Exception):
    """`delete`: routes still point at the agent."""

    def __init__(self, purposes: list[str]) -> None:
        super().__init__(purposes)
        self.purposes = purposes


class MissingAgents(Exception):
    """`swap`: a route names an agent that does not exist (or is being deleted)."""

    def __init__(self, agent_ids: list[str]) -> None:
        super().__init__(agent_ids)
        self.agent_ids = agent_ids


class NoSession(Exception):
    """A session write or read found no such session."""


class SessionExists(Exception):
    """A session start found the id taken."""


class Lifecycle(Protocol):
    async def start(self) -> None:
        """Connect, create tables/indexes, migrate. Idempotent; `StoreUnavailable` if unreachable."""

    async def aclose(self) -> None: ...

    async def ping(self) -> None:
        """`StoreUnavailable` unless the database can read and write right now."""

    async def config_epoch(self) -> int: ...

    def now(self) -> datetime:
        """The current UTC time at the precision this database keeps (a re-read equals it)."""


class ConfigsBackend(Protocol):
    async def current(self, agent_id: str, known: Known) -> StoredVersion | None:
        """The version the agent's head points at (with `head_created_at`), None if no agent."""

    async def version(self, agent_id: str, version: int, known: Known) -> StoredVersion | None:
        """One version of a live agent, never one above its head; None if absent."""

    async def list_current(
        self, enabled: bool | None, offset: int, limit: int, known: Known
    ) -> tuple[list[StoredVersion], int]:
        """Current versions ordered by agent id, and how many agents match `enabled`."""

    async def versions(self, agent_id: str) -> list[StoredVersion]:
        """Every version up to the head, oldest first; empty if no agent."""

    async def create(self, cfg: AgentConfig, events: list[Event]) -> VersionKey | None:
        """Store version 1 and its head atomically; None if the id is taken."""

    async def append(
        self, head: VersionKey, cfg: AgentConfig, events: list[Event], publish: PublishStep | None = None
    ) -> VersionKey:
        """Store `cfg` (version head.version + 1) and move the head to it, only if the head
        is still `head`: else `HeadMoved` (with the version now current, when known; None
        also when the agent is gone). A lost race never overwrites anything. With
        `publish`, the new version is also published (revision + 1, `publish.events`
        committed with it) if the release is still at `publish.rev`; otherwise it stays a
        draft (a canary started or someone published meanwhile)."""

    async def release(self, agent_id: str) -> StoredRelease | None:
        """The agent's release state; None if no agent."""

    async def set_release(
        self, agent_id: str, rev: int, published_version: int, canary_version: int | None,
        rollout: dict[str, Any] | None, events: list[Event],
    ) -> bool | None:
        """Set the release state (revision `rev` + 1) only if it is still at `rev`
        (False if not; None if there is no agent), `events` committed with it."""

    async def list_published(
        self, offset: int, limit: int, known: Known
    ) -> tuple[list[PublishedAgent], int]:
        """Published versions (and running canaries) ordered by agent id, and the agent count."""

    async def delete(self, agent_id: str, expected_version: int | None, events: list[Event]) -> bool:
        """Remove the agent and every version, only if no route points at it (`Routed`)
        and, with `expected_version`, its head is still that version (`HeadMoved`), both
        checked atomically with the delete. False if there is no agent."""


class RoutesBackend(Protocol):
    async def table(self) -> RouteTable: ...

    async def swap(self, rev: int, routes: list[Route], agent_ids: set[str], events: list[Event]) -> bool:
        """Replace the table with `routes` only if its revision is still `rev` (False if
        not) and every agent in `agent_ids` exists then (`MissingAgents`): a route never points at a missing agent, even one being deleted."""


class SessionsBackend(Protocol):
    async def apply(self, session_id: str, runs: list[Run]) -> Applied:
        """Apply one session's folded writes in order (see `app.store.session_rules`).
        `SessionExists` for a second start, `NoSession` for a missing session. A backend
        that cannot apply the batch atomically sets `OPS_APPLIED_ATTR` on the error."""

    async def get(self, session_id: str) -> SessionRecord | None:
        """With its turns, in order."""

    async def arm_sessions(self, agent_id: str, since: datetime, limit: int) -> tuple[list[ArmSession], int]:
        """Sessions of `agent_id` started at or after `since` with an arm, newest first (at
        most `limit`), projected to what the rollout figures need; and how many matched."""

    async def list(
        self, agent_id: str | None, status: SessionStatus | None, since: datetime | None,
        until: datetime | None, order: SessionOrder, offset: int, limit: int,
    ) -> tuple[list[SessionRecord], int]: ...


class LivenessBackend(Protocol):
    async def heartbeat(self, owner: str, now: datetime) -> int: ...

    async def abandon(self, cutoff: datetime | None, reason: str, now: datetime, ended: Ended) -> int:
        """Mark active sessions abandoned: all of them (`cutoff` None), or those whose
        owner last proved alive (`heartbeat_at`, else `started_at`) before `cutoff`;
        each with the event `ended(session_id, agent_id)` committed with its update."""


Ended = Callable[[str, str], Event]
"""`(session_id, agent_id)` -> the `session.ended` event of a session the sweep abandons."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    types: tuple[str, ...] | None = None
    agent_id: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class JournalEntry:
    event: Event
    rendered: bool
    """False for a payload committed as a stub, until `freeze` renders it."""


class JournalBackend(Protocol):
    async def get(self, event_id: str) -> JournalEntry | None: ...

    async def unfanned(self, limit: int) -> list[JournalEntry]:
        """Events not yet fanned out to webhook deliveries, oldest first."""

    async def freeze(self, event_id: str, agent_id: str | None, data: dict[str, Any]) -> JournalEntry | None:
        """Set a stub's rendered payload, only if it is still a stub (the first renderer
        wins); returns the entry as stored afterwards (None if there is no such event)."""

    async def fanned_out(self, event_ids: list[str]) -> None:
        """Mark events as fanned out (their deliveries exist)."""

    async def relay(self, grace_s: float) -> int:
        """Move events committed with a change but not yet in the journal (a process
        died between the two steps) into it; idempotent. Returns how many. SQL: 0."""

    async def list(self, flt: EventFilter, offset: int, limit: int) -> tuple[list[Event], int]:
        """Newest first, and how many match (declared last: the name shadows `list`)."""


class WebhooksBackend(Protocol):
    """Webhook endpoints: a record each, written whole under a revision check."""

    async def create(self, hook: StoredWebhook, rev: int, events: list[Event]) -> None: ...

    async def get(self, webhook_id: str) -> tuple[StoredWebhook, int] | None:
        """The endpoint and its revision (the compare-and-swap token of `replace`)."""

    async def replace(self, hook: StoredWebhook, rev: int, events: list[Event]) -> bool:
        """Write `hook` (revision `rev` + 1) only if its revision is still `rev`."""

    async def delete(self, webhook_id: str, events: list[Event]) -> bool:
        """Remove the endpoint and its deliveries; False if there was none."""

    async def all(self) -> list[StoredWebhook]:
        """Every endpoint, oldest first (fan-out and listing: a handful per deployment)."""


class KeysBackend(Protocol):
    """Named API keys: a record each, keyed by name, the secret's hash unique."""

    async def create(self, key: StoredApiKey, events: list[Event]) -> bool:
        """Insert; False (nothing written) if a key of that name exists."""

    async def delete(self, name: str, events: list[Event]) -> StoredApiKey | None:
        """Remove the key; what was removed, or None if there was none."""

    async def touch(self, name: str, at: datetime) -> None:
        """Set `last_used_at` (no event: using a key is not a change)."""

    async def all(self) -> list[StoredApiKey]:
        """Every key, by name (the guard's table: at most `MAX_KEYS`)."""


class DeliveryInFlight(Exception):
    """`resend`: an attempt of this delivery is running now."""


class DeliveriesBackend(Protocol):
    """Webhook deliveries: one per (event, endpoint); attempts leased with a CAS."""

    async def add(self, deliveries: list[Delivery]) -> int:
        """Insert, skipping any (event_id, webhook_id) that exists; returns how many were new."""

    async def claim(
        self, webhook_id: str, now: datetime, owner: str, lease_until: datetime, limit: int
    ) -> list[Delivery]:
        """Up to `limit` due deliveries of the endpoint (pending, `next_attempt_at` <= now,
        not leased or lease expired), each leased to `owner` and its `attempts` counted,
        by a conditional write: two processes never hold the same attempt."""

    async def finish(self, delivery_id: str, owner: str, attempt: int, values: dict[str, Any]) -> bool:
        """Record an attempt's outcome and drop the lease, only if `owner` still holds
        attempt number `attempt`; False if the lease was lost (the result is dropped)."""

    async def get(self, delivery_id: str) -> Delivery | None: ...

    async def resend(self, delivery_id: str, now: datetime, window_ends_at: datetime) -> Delivery | None:
        """Make a delivery due now with a new window; `DeliveryInFlight` while leased."""

    async def count_due(self, now: datetime) -> int:
        """Pending deliveries of enabled endpoints due by `now` (leased ones included)."""

    async def list(
        self, webhook_id: str | None, status: DeliveryStatus | None, offset: int, limit: int
    ) -> tuple[list[Delivery], int]:
        """Newest first (declared last: the name shadows `list`)."""


class AnalysisQueueBackend(Protocol):
    """The claimable state of post-call analyses (`session_rules.QUEUE_FIELDS`). Every
    change is one conditional write, so of several processes exactly one holds a lease."""

    async def claim(self, token: str, now: datetime, lease_until: datetime, limit: int) -> list[tuple[str, int]]:
        """Take up to `limit` pending analyses whose lease is free (none, or ended before
        `now`), oldest session first: lease them to `token` until `lease_until` and count
        the claim. Returns (session_id, claims so far) of each taken."""

    async def renew(self, session_id: str, token: str, lease_until: datetime) -> bool:
        """Extend the lease, only while `token` holds it."""

    async def finish(self, session_id: str, token: str, analysis: dict[str, Any], events: list[Event]) -> bool:
        """Store the finished `analysis` (its JSON form) and clear the lease, only while
        `token` holds it (else nothing is written: another process took over); `events`
        (`session.analyzed`) commit with it."""

    async def release(self, session_id: str, token: str) -> bool:
        """Give the lease up unfinished (shutdown), only while `token` holds it."""


class UsageBackend(Protocol):
    async def totals(
        self, group_by: Sequence[UsageGroup], agent_id: str | None, since: datetime | None, until: datetime | None
    ) -> list[UsageRow]:
        """Sums over the sessions started in [since, until) (of `agent_id`), one row per
        distinct value of the `group_by` keys (the day is the UTC day the session started),
        ordered by those keys; one row when `group_by` is empty (none if no session)."""


class AgentTestsBackend(Protocol):
    """Test documents, one per `(agent_id, name)`; each write commits its events with it."""

    async def create(self, test: AgentTest, events: list[Event]) -> bool:
        """False if the name is taken (the unique key decides between racing creators)."""

    async def replace(self, test: AgentTest, events: list[Event]) -> bool:
        """False if there is no such test."""

    async def delete(self, agent_id: str, name: str, events: list[Event]) -> bool: ...

    async def get(self, agent_id: str, name: str) -> AgentTest | None: ...

    async def list(self, agent_id: str) -> list[AgentTest]:
        """Every test of the agent, by name."""

    async def forget_agent(self, agent_id: str) -> None:
        """Remove the agent's tests and runs (after the agent itself was deleted)."""


class TestRunsBackend(Protocol):
    """Test runs, one document each, replaced whole as the run progresses."""

    async def add(self, run: TestRun) -> None: ...

    async def save(self, run: TestRun) -> bool:
        """Replace the stored run of that id unless it is already finished (a run marked
        abandoned stays so); False when nothing was replaced."""

    async def get(self, run_id: str) -> TestRun | None: ...

    async def list(self, agent_id: str, version: int | None, limit: int) -> list[TestRun]:
        """Newest first."""

    async def abandon_unfinished(self, now: datetime, reason: str, created_before: datetime | None) -> int:
        """Mark queued or running runs (created before `created_before`, if given)
        `abandoned`, finished now with `reason`."""


class CallsBackend(Protocol):
    """Dialled calls: inserted when dialling starts, finished once."""

    async def insert(self, call: CallRecord, events: list[Event]) -> None: ...

    async def finish(self, call_id: str, values: dict[str, Any], events: list[Event]) -> bool:
        """Set the outcome fields, only while the call is still `dialing` (False if not)."""

    async def get(self, call_id: str) -> CallRecord | None: ...

    async def list(self, campaign_id: str | None, offset: int, limit: int) -> tuple[list[CallRecord], int]:
        """Newest first (declared last: the name shadows `list`)."""


class CampaignsBackend(Protocol):
    """Campaigns and their contacts. A contact is dialled only under a lease taken by a
    conditional write, so two runners never dial one contact at once."""

    async def create(self, campaign: Campaign, contacts: list[Contact], events: list[Event]) -> None:
        """The campaign and all its contacts, atomically: readers (and runners) see all or none."""

    async def get(self, campaign_id: str) -> tuple[Campaign, int] | None:
        """The campaign and its revision (the compare-and-swap token of `set_status`)."""

    async def page(self, offset: int, limit: int) -> tuple[list[Campaign], int]:
        """Newest first."""

    async def running(self) -> list[Campaign]: ...

    async def set_status(self, campaign: Campaign, rev: int, events: list[Event]) -> bool:
        """Write the campaign's status and `updated_at` only if its revision is still `rev`."""

    async def progress(self, campaign_id: str) -> tuple[dict[str, int], int]:
        """Contacts per status, and the sum of their attempts."""

    async def contacts(
        self, campaign_id: str, status: ContactStatus | None, offset: int, limit: int
    ) -> tuple[list[Contact], int]:
        """In list order."""

    async def claim(
        self, campaign_id: str, token: str, now: datetime, lease_until: datetime, limit: int, cap: int
    ) -> list[Contact]:
        """Lease up to `limit` due contacts (pending with `next_attempt_at` <= now, or
        dialing under a lease that ended before `now`), in list order, setting them
        `dialing`, while fewer than `cap` hold a live lease. Each take is conditional:
        of two claimers exactly one gets a contact."""

    async def release(self, campaign_id: str, seq: int, token: str, values: dict[str, Any]) -> bool:
        """Write the contact's new state and drop the lease, only while `token` holds it."""


class Backend(Lifecycle, Protocol):
    """One database: its lifecycle plus one repository per concern."""

    @property
    def configs(self) -> ConfigsBackend: ...

    @property
    def routes(self) -> RoutesBackend: ...

    @property
    def sessions(self) -> SessionsBackend: ...

    @property
    def liveness(self) -> LivenessBackend: ...

    @property
    def analysis(self) -> AnalysisQueueBackend: ...

    @property
    def usage(self) -> UsageBackend: ...

    @property
    def journal(self) -> JournalBackend: ...

    @property
    def webhooks(self) -> WebhooksBackend: ...

    @property
    def deliveries(self) -> DeliveriesBackend: ...

    @property
    def keys(self) -> KeysBackend: ...

    @property
    def agent_tests(self) -> AgentTestsBackend: ...

    @property
    def test_runs(self) -> TestRunsBackend: ...

    @property
    def calls(self) -> CallsBackend: ...

    @property
    def campaigns(self) -> CampaignsBackend: ...
