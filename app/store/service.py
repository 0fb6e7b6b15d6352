"""`StoreService`: the `ConfigStore` every caller uses, holding every store rule once.

Rules here, for every backend (`app.store.backend` lists what a backend does instead):
- versioning: version 1 on create, N+1 on top of the head read (`append` only lands if
  the head is still N), `expected_version` checked against that head, replace vs merge
  patch vs rollback, a version that no longer parses repaired only by a replacement, and
  the parsed-config memo (`app.store.parsed`);
- lost races: a conditional write that loses is a `VersionConflict` when the caller gave
  `expected_version`, else retried on top of the winner (never a lost update);
- routes: table rules in `app.store.route_rules`, applied as a compare-and-swap of the
  whole table; a delete refused while routed;
- sessions: field rules and batch folding in `app.store.session_rules`; the per-op
  methods are thin wrappers over the one batch path;
- change listeners: called after every committed agent or route write in this process;
- the journal: which events each change produces (`app.store.event_rules`), handed to
  the backend with the write so both commit together; `ChangeContext` says who made a
  change and why (the API passes it; sessions and sweeps are `SYSTEM`).

In-process, writers to one agent (and route writers) take an asyncio lock first: fewer
lost races to retry. Across processes the backends' conditional writes decide.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from app.domain import (
    AgentConfig,
    AgentConfigInput,
    AlreadyExists,
    CorruptRecord,
    Handoff,
    InUse,
    InvalidReference,
    NotFound,
    Route,
    SessionRecord,
    SessionStatus,
    StoreUnavailable,
    Turn,
    VersionConflict,
    patched_input,
)
from app.domain.analysis import AnalysisStatus, SessionAnalysis
from app.domain.errors import InvalidInput
from app.domain.events import SYSTEM, ChangeContext, ChangeKind, Event
from app.domain.usage import UsageGroup, UsageReport, UsageTotals
from app.store import event_rules
from app.store.backend import (
    Applied,
    Backend,
    EventFilter,
    HeadMoved,
    JournalEntry,
    Known,
    MissingAgents,
    NoSession,
    Routed,
    SessionExists,
    StoredVersion,
)
from app.store.base import (
    OPS_APPLIED_ATTR,
    AppendTurn,
    ChangeListener,
    ClaimedAnalysis,
    FinishSession,
    RecordData,
    RecordHandoff,
    SessionWrite,
    StartSession,
    UpdateSession,
)
from app.store.call_service import CallStore
from app.store.parsed import ParsedVersions
from app.store.retry import MAX_ATTEMPTS, backoff
from app.store.route_rules import (
    by_purpose,
    check_table,
    find_route,
    stamped,
    with_route,
    without_route,
)
from app.store.session_rules import fold, must_be_str, session_fields
from app.store.webhook_service import WebhookStore

log = logging.getLogger(__name__)

def _agent_not_found(agent_id: Any, version: int | None = None) -> NotFound:
    what = f"agent {agent_id!r}" + (f" version {version}" if version is not None else "")
    return NotFound(f"{what} not found", agent_id=agent_id) if isinstance(agent_id, str) else NotFound(f"{what} not found")


class StoreService(WebhookStore, CallStore):
    """`app.store.base.ConfigStore` over one `Backend` (webhook rules: `WebhookStore`; calls and
    campaigns: `CallStore`)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._listeners: list[ChangeListener] = []
        self._journal_listeners: list[ChangeListener] = []
        self._parsed = ParsedVersions()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.backend.start()

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def ping(self) -> None:
        await self.backend.ping()

    async def config_epoch(self) -> int:
        return await self.backend.config_epoch()

    def add_change_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:  # a broken listener must not fail a committed write
                log.exception("config change listener failed")
        self._journaled()

    def add_journal_listener(self, listener: ChangeListener) -> None:
        """Called after every write in this process that committed journal events (the
        webhook dispatcher wakes up instead of waiting for its next poll)."""
        self._journal_listeners.append(listener)

    def _journaled(self) -> None:
        for listener in list(self._journal_listeners):
            try:
                listener()
            except Exception:
                log.exception("journal listener failed")

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # ------------------------------------------------------------- agent configs

    async def _load(self, fetch: Callable[[Known], Awaitable[StoredVersion | None]]) -> StoredVersion | None:
        stored = await fetch(self._parsed)
        if stored is not None and stored.data is None and stored.key not in self._parsed:
            stored = await fetch(())  # evicted from the memo meanwhile: fetch the data after all
        return stored

    def _new_version(self, data: AgentConfigInput, version: int, created_at: datetime | None) -> AgentConfig:
        now = self.backend.now()
        return AgentConfig.model_validate(
            {**data.model_dump(), "version": version, "created_at": created_at or now, "updated_at": now}
        )

    async def create_agent_config(self, data: AgentConfigInput, *, ctx: ChangeContext = SYSTEM) -> AgentConfig:
        cfg = self._new_version(data, 1, None)
        events = event_rules.agent_created(cfg, cfg.updated_at, ctx)
        async with self._lock(cfg.agent_id):
            key = await self.backend.configs.create(cfg, events)
        if key is None:
            raise AlreadyExists(f"agent {cfg.agent_id!r} already exists", agent_id=cfg.agent_id)
        self._parsed.remember(key, cfg)
        self._notify()
        return cfg

    async def get_agent_config(self, agent_id: str, version: int | None = None) -> AgentConfig:
        if not isinstance(agent_id, str) or (version is not None and type(version) is not int):
            raise _agent_not_found(agent_id)
        configs = self.backend.configs
        if version is None:
            stored = await self._load(lambda known: configs.current(agent_id, known))
        else:
            stored = await self._load(lambda known: configs.version(agent_id, version, known))
        if stored is None:
            raise _agent_not_found(agent_id, version)
        return self._parsed.parse(stored)

    async def list_agent_configs(
        self, *, enabled: bool | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[AgentConfig], int]:
        rows, total = await self.backend.configs.list_current(enabled, offset, limit, self._parsed)
        if any(r.data is None and r.key not in self._parsed for r in rows):
            rows, total = await self.backend.configs.list_current(enabled, offset, limit, ())
        return self._parsed.parse_listing(rows), total

    async def list_versions(self, agent_id: str) -> list[AgentConfig]:
        if not isinstance(agent_id, str):
            raise _agent_not_found(agent_id)
        rows = await self.backend.configs.versions(agent_id)
        if not rows:
            raise _agent_not_found(agent_id)
        return self._parsed.parse_listing(rows)

    async def update_agent_config(
        self,
        agent_id: str,
        patch: Mapping[str, Any] | AgentConfigInput,
        expected_version: int | None = None,
        *,
        ctx: ChangeContext = SYSTEM,
    ) -> AgentConfig:
        """A merge patch (mapping) or a full replacement (`AgentConfigInput`) as a new version."""
        change: ChangeKind = "replace" if isinstance(patch, AgentConfigInput) else "patch"
        return await self._write_version(agent_id, patch, expected_version, ctx, change, None)

    async def _write_version(
        self,
        agent_id: str,
        patch: Mapping[str, Any] | AgentConfigInput,
        expected_version: int | None,
        ctx: ChangeContext,
        change: ChangeKind,
        rolled_back_to: int | None,
    ) -> AgentConfig:
        if not isinstance(agent_id, str):
            raise _agent_not_found(agent_id)
        configs = self.backend.configs
        async with self._lock(agent_id):
            for attempt in range(MAX_ATTEMPTS):
                head = await self._load(lambda known: configs.current(agent_id, known))
                if head is None:
                    raise _agent_not_found(agent_id)
                seen = head.key.version
                if expected_version is not None and expected_version != seen:
                    raise VersionConflict(agent_id, expected_version, seen)
                new = self._next_version(agent_id, head, patch)
                events = event_rules.version_created(new, change, new.updated_at, ctx, rolled_back_to)
                try:
                    key = await configs.append(head.key, new, events)
                except HeadMoved as e:
                    if expected_version is not None and e.actual is not None:
                        raise VersionConflict(agent_id, expected_version, e.actual) from None
                    await backoff(attempt)
                    continue
                self._parsed.remember(key, new)
                self._notify()
                return new
        raise VersionConflict(agent_id, expected_version, None)

    def _next_version(
        self, agent_id: str, head: StoredVersion, patch: Mapping[str, Any] | AgentConfigInput
    ) -> AgentConfig:
        try:
            current: AgentConfig | None = self._parsed.parse(head)
        except CorruptRecord:
            if not isinstance(patch, AgentConfigInput):
                raise  # a patch needs a valid base; a replacement (or rollback) repairs it
            current = None
        if isinstance(patch, AgentConfigInput):
            if patch.agent_id != agent_id:
                raise InvalidInput("agent_id cannot be changed", agent_id=agent_id)
            new_input = patch
        else:
            assert current is not None
            new_input = patched_input(current, dict(patch))  # ValidationError: nothing written
        created_at = current.created_at if current is not None else head.head_created_at
        return self._new_version(new_input, head.key.version + 1, created_at)

    async def delete_agent_config(
        self, agent_id: str, expected_version: int | None = None, *, ctx: ChangeContext = SYSTEM
    ) -> None:
        """Delete every version; `InUse` while a route points at the agent; with
        `expected_version`, `VersionConflict` unless that is still the current version
        when the delete commits (a concurrent write is never deleted unseen)."""
        if not isinstance(agent_id, str):
            raise _agent_not_found(agent_id)
        if expected_version is not None and type(expected_version) is not int:
            raise VersionConflict(agent_id, None, None)
        async with self._lock(agent_id):
            try:
                events = event_rules.agent_deleted(agent_id, self.backend.now(), ctx)
                found = await self.backend.configs.delete(agent_id, expected_version, events)
            except Routed as e:
                raise InUse(f"agent {agent_id!r} is used by route(s): {', '.join(e.purposes)}",
                            routes=e.purposes) from None
            except HeadMoved as e:
                raise VersionConflict(agent_id, expected_version, e.actual) from None
        if not found:
            raise _agent_not_found(agent_id)
        self._notify()

    async def rollback(
        self, agent_id: str, version: int, expected_version: int | None = None, *, ctx: ChangeContext = SYSTEM
    ) -> AgentConfig:
        """Write the content of `version` as a new current version."""
        target = await self.get_agent_config(agent_id, version)
        return await self._write_version(agent_id, target.input(), expected_version, ctx, "rollback", version)

    # -------------------------------------------------------------------- routes

    async def list_routes(self) -> list[Route]:
        return by_purpose((await self.backend.routes.table()).routes)

    async def get_route(self, purpose: str) -> Route:
        return find_route((await self.backend.routes.table()).routes, purpose)

    async def put_route(self, route: Route, *, ctx: ChangeContext = SYSTEM) -> Route:
        """Create or replace; `is_default=True` clears the flag on every other route."""
        new = stamped(route, self.backend.now())
        await self._swap_routes(lambda routes: with_route(routes, new), {route.agent_id}, ctx, "put", route.purpose)
        return new

    async def replace_routes(self, routes: list[Route], *, ctx: ChangeContext = SYSTEM) -> list[Route]:
        """Replace the whole table atomically; at most one default."""
        check_table(routes)
        now = self.backend.now()
        new = by_purpose([stamped(r, now) for r in routes])
        await self._swap_routes(lambda _old: new, {r.agent_id for r in routes}, ctx, "replace", None)
        return new

    async def delete_route(self, purpose: str, *, ctx: ChangeContext = SYSTEM) -> None:
        await self._swap_routes(lambda routes: without_route(routes, purpose), set(), ctx, "delete", purpose)

    async def _swap_routes(
        self, mutate: Callable[[list[Route]], list[Route]], agent_ids: set[str], ctx: ChangeContext,
        change: str, purpose: str | None,
    ) -> None:
        async with self._lock("\x00routes"):
            for attempt in range(MAX_ATTEMPTS):
                table = await self.backend.routes.table()
                new = mutate(table.routes)
                events = event_rules.routes_changed(change, purpose, new, self.backend.now(), ctx)
                try:
                    swapped = await self.backend.routes.swap(table.rev, new, agent_ids, events)
                except MissingAgents as e:
                    missing = e.agent_ids
                    raise InvalidReference(f"no agent {', '.join(repr(m) for m in missing)}",
                                           agent_id=missing[0]) from None
                if swapped:
                    self._notify()
                    return
                await backoff(attempt)
        raise StoreUnavailable("routes are changing too fast, try again")

    # ------------------------------------------------------------------ sessions

    async def _write_session(self, session_id: str, ops: list[SessionWrite]) -> Applied:
        now = self.backend.now()
        runs = fold(ops, now)  # validates first: a bad op fails before any I/O
        event_rules.session_run_events(session_id, runs, now)
        try:
            applied = await self.backend.sessions.apply(must_be_str(session_id, "session_id"), runs)
            if any(run.events for run in runs):
                self._journaled()
            return applied
        except NoSession as e:
            err: Exception = NotFound(f"session {session_id!r} not found", session_id=session_id)
            cause: Exception = e
        except SessionExists as e:
            err, cause = AlreadyExists(f"session {session_id!r} already exists"), e
        if hasattr(cause, OPS_APPLIED_ATTR):
            setattr(err, OPS_APPLIED_ATTR, getattr(cause, OPS_APPLIED_ATTR))
        raise err from None

    async def apply_session_writes(self, session_id: str, ops: list[SessionWrite]) -> None:
        """One session's queued writes, in order, as one batch (see `ConfigStore`)."""
        if ops:
            await self._write_session(session_id, ops)

    async def start_session(self, record: SessionRecord) -> SessionRecord:
        return (await self._write_session(record.session_id, [StartSession(record)])).started or record

    async def append_turn(self, session_id: str, turn: Turn) -> None:
        await self._write_session(session_id, [AppendTurn(turn)])

    async def record_data(self, session_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        return (await self._write_session(session_id, [RecordData(data)])).collected or {}

    async def record_handoff(self, session_id: str, handoff: Handoff) -> None:
        await self._write_session(session_id, [RecordHandoff(handoff)])

    async def update_session(self, session_id: str, **fields: Any) -> None:
        session_fields(fields)  # an unknown field is refused even when nothing else would run
        if fields:
            await self._write_session(session_id, [UpdateSession(fields)])

    async def finish_session(
        self,
        session_id: str,
        status: SessionStatus,
        reason: str | None = None,
        error: str | None = None,
        ended_at: datetime | None = None,
    ) -> None:
        await self._write_session(session_id, [FinishSession(status, reason, error, ended_at)])

    async def list_sessions(
        self,
        *,
        agent_id: str | None = None,
        status: SessionStatus | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[SessionRecord], int]:
        if agent_id is not None:
            must_be_str(agent_id, "agent_id")
        status = SessionStatus(status) if status is not None else None
        return await self.backend.sessions.list(agent_id, status, since, until, offset, limit)

    async def get_session(self, session_id: str) -> SessionRecord:
        record = await self.backend.sessions.get(must_be_str(session_id, "session_id"))
        if record is None:
            raise NotFound(f"session {session_id!r} not found", session_id=session_id)
        return record

    # ------------------------------------------------------------------ liveness

    async def heartbeat(self, owner: str) -> int:
        return await self.backend.liveness.heartbeat(must_be_str(owner, "owner"), self.backend.now())

    async def abandon_stale_sessions(self, cutoff: datetime, reason: str) -> int:
        return await self._abandon(cutoff, reason)

    async def abandon_active_sessions(self, reason: str) -> int:
        return await self._abandon(None, reason)

    async def _abandon(self, cutoff: datetime | None, reason: str) -> int:
        now = self.backend.now()
        status = SessionStatus.abandoned.value

        def ended(session_id: str, agent_id: str) -> Event:
            return event_rules.session_ended(session_id, agent_id, status, reason, None, now, now)

        n = await self.backend.liveness.abandon(cutoff, reason, now, ended)
        if n:
            self._journaled()
        return n

    # ------------------------------------------------------------------- journal

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
        for value, what in ((agent_id, "agent_id"), (actor, "actor")):
            if value is not None:
                must_be_str(value, what)
        flt = EventFilter(tuple(must_be_str(t, "type") for t in types) if types is not None else None,
                          agent_id, actor, since, until)
        return await self.backend.journal.list(flt, offset, limit)

    async def get_event(self, event_id: str) -> JournalEntry:
        entry = await self.backend.journal.get(must_be_str(event_id, "event_id"))
        if entry is None:
            raise NotFound(f"event {event_id!r} not found", event_id=event_id)
        return entry

    async def unfanned_events(self, limit: int = 100) -> list[JournalEntry]:
        return await self.backend.journal.unfanned(limit)

    async def freeze_event(self, event_id: str, agent_id: str | None, data: dict[str, Any]) -> JournalEntry:
        """Render a stub once: the first caller's `data` is kept, later ones get it back."""
        entry = await self.backend.journal.freeze(event_id, agent_id, data)
        if entry is None:
            raise NotFound(f"event {event_id!r} not found", event_id=event_id)
        return entry

    async def mark_fanned_out(self, event_ids: list[str]) -> None:
        if event_ids:
            await self.backend.journal.fanned_out(event_ids)

    async def relay_events(self, grace_s: float = 30.0) -> int:
        """Finish moving committed events into the journal after a crash (MongoDB)."""
        return await self.backend.journal.relay(grace_s)

    # ---------------------------------------------------------- post-call analysis

    async def claim_analyses(self, owner: str, *, lease_s: float, limit: int) -> list[ClaimedAnalysis]:
        must_be_str(owner, "owner")
        if limit <= 0:
            return []
        token = f"{owner}/{secrets.token_hex(6)}"
        now = self.backend.now()
        taken = await self.backend.analysis.claim(token, now, now + timedelta(seconds=lease_s), limit)
        claimed = []
        for session_id, claims in taken:
            record = await self.backend.sessions.get(session_id)
            if record is None or record.analysis is None:  # not possible short of a hand edit
                log.warning("session %s: claimed an analysis that is not there; skipped", session_id)
                continue
            claimed.append(ClaimedAnalysis(record=record, token=token, claims=claims))
        return claimed

    async def renew_analysis(self, claim: ClaimedAnalysis, lease_s: float) -> bool:
        until = self.backend.now() + timedelta(seconds=lease_s)
        return await self.backend.analysis.renew(claim.record.session_id, claim.token, until)

    async def finish_analysis(self, claim: ClaimedAnalysis, analysis: SessionAnalysis) -> bool:
        if analysis.status == AnalysisStatus.pending:
            raise InvalidInput("a finished analysis is done or failed, not pending")
        doc = session_fields({"analysis": analysis})["analysis"]
        events = [event_rules.session_analyzed(claim.record, analysis, self.backend.now())]
        stored = await self.backend.analysis.finish(claim.record.session_id, claim.token, doc, events)
        if stored:
            self._journaled()
        return stored

    async def release_analysis(self, claim: ClaimedAnalysis) -> None:
        await self.backend.analysis.release(claim.record.session_id, claim.token)

    # ----------------------------------------------------------------------- usage

    async def usage_report(
        self,
        *,
        group_by: list[UsageGroup],
        agent_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> UsageReport:
        if agent_id is not None:
            must_be_str(agent_id, "agent_id")
        groups = [UsageGroup(g) for g in dict.fromkeys(group_by)]
        rows = await self.backend.usage.totals(groups, agent_id, since, until)
        total = UsageTotals()
        for row in rows:
            total = total.add(UsageTotals.model_validate(row.model_dump(include=set(UsageTotals.model_fields))))
        return UsageReport(
            group_by=groups, agent_id=agent_id, since=since, until=until,
            rows=[r.rounded() for r in rows], total=total.rounded(),
        )
