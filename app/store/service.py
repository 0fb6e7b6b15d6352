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
    SessionOrder,
    SessionRecord,
    SessionStatus,
    StoreUnavailable,
    Turn,
    VersionConflict,
    patched_input,
)
from app.domain.analysis import AnalysisStatus, SessionAnalysis
from app.domain.errors import InvalidInput, PublishRefused, ReleaseConflict, RolloutConflict
from app.domain.events import SYSTEM, ChangeContext, ChangeKind, Event
from app.domain.rollout import (
    GuardPolicy,
    PublishedConfig,
    Release,
    Rollout,
    RolloutReport,
    arm_figures,
    compare,
)
from app.domain.usage import UsageGroup, UsageReport, UsageTotals
from app.store import event_rules
from app.store.agent_test_service import AgentTestStore
from app.store.backend import (
    Applied,
    Backend,
    EventFilter,
    HeadMoved,
    JournalEntry,
    Known,
    MissingAgents,
    NoSession,
    PublishStep,
    Routed,
    SessionExists,
    StoredRelease,
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
from app.store.key_service import KeyStore
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
from app.store.test_gate import require_passing_tests
from app.store.webhook_service import WebhookStore

log = logging.getLogger(__name__)

PublishCheck = Callable[[str, int], Awaitable[None]]
"""A pre-publish check: `(agent_id, version)`; raises `PublishRefused` to refuse."""

ROLLOUT_MAX_SESSIONS = 5000
"""The rollout figures read at most this many of a canary's newest sessions."""

def _agent_not_found(agent_id: Any, version: int | None = None) -> NotFound:
    what = f"agent {agent_id!r}" + (f" version {version}" if version is not None else "")
    return NotFound(f"{what} not found", agent_id=agent_id) if isinstance(agent_id, str) else NotFound(f"{what} not found")


class StoreService(WebhookStore, KeyStore, AgentTestStore, CallStore):
    """`app.store.base.ConfigStore` over one `Backend` (webhook rules: `WebhookStore`;
    API keys: `KeyStore`; stored tests and their runs: `AgentTestStore`; calls and
    campaigns: `CallStore`)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._listeners: list[ChangeListener] = []
        self._journal_listeners: list[ChangeListener] = []
        self._parsed = ParsedVersions()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._publish_checks: list[PublishCheck] = []

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
                publish = await self._publish_step(agent_id, new, change, rolled_back_to)
                try:
                    key = await configs.append(head.key, new, events, publish)
                except HeadMoved as e:
                    if expected_version is not None and e.actual is not None:
                        raise VersionConflict(agent_id, expected_version, e.actual) from None
                    await backoff(attempt)
                    continue
                self._parsed.remember(key, new)
                self._notify()
                return new
        raise VersionConflict(agent_id, expected_version, None)

    async def _publish_step(
        self, agent_id: str, new: AgentConfig, change: ChangeKind, rolled_back_to: int | None
    ) -> PublishStep | None:
        """Whether a new version is published as it is written: a rollback always is (it
        is a publish; refused while a canary runs), any other write when its config says
        `auto_publish` and no canary runs (then it is a draft) and the pre-publish checks
        pass (else it is a draft: the checks are asked, not overridden)."""
        rel = await self.backend.configs.release(agent_id)
        if rel is None:
            return None  # deleted meanwhile: the append finds out
        running = _running(rel)
        if change == "rollback":
            if running:
                raise RolloutConflict(f"agent {agent_id!r} has a canary running: promote or abort it first",
                                    agent_id=agent_id)
            await self._run_publish_checks(agent_id, new.version, writing=new, tests_of=rolled_back_to)
        elif not new.auto_publish or running:
            return None
        else:
            try:
                await self._run_publish_checks(agent_id, new.version, writing=new)
            except PublishRefused as e:
                log.info("agent %s version %s kept as a draft: %s", agent_id, new.version, e.message)
                return None
        # No `agent.published` here: `agent.version_created` announces these, as before drafts existed.
        return PublishStep(rel.rev, [])

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
        try:  # its stored tests and runs go with it (the gate also ignores runs older than a version)
            await self.backend.agent_tests.forget_agent(agent_id)
        except StoreUnavailable:
            log.warning("agent %r deleted, but not its stored tests (store unavailable): an agent created "
                        "again under that id finds them; the gate ignores their old runs", agent_id)

    async def rollback(
        self, agent_id: str, version: int, expected_version: int | None = None, *, ctx: ChangeContext = SYSTEM
    ) -> AgentConfig:
        """Write the content of `version` as a new current version."""
        target = await self.get_agent_config(agent_id, version)
        return await self._write_version(agent_id, target.input(), expected_version, ctx, "rollback", version)

    # ---------------------------------------------------------------- publishing

    def add_publish_check(self, check: PublishCheck) -> None:
        """Run `check(agent_id, version)` before every publish, canary start, promote and
        rollback (and before an auto-publish, which leaves a refused version a draft). A
        check refuses by raising `PublishRefused` (API: 409 naming `failing`)."""
        self._publish_checks.append(check)

    async def _run_publish_checks(
        self, agent_id: str, version: int, *, writing: AgentConfig | None = None, tests_of: int | None = None
    ) -> None:
        """The stored tests' gate (for versions that `require_passing_tests`), then the
        registered checks. `writing`: the version being written (no run can cover it yet).
        `tests_of`: a rollback's target, whose runs stand for the copy being written (the
        same content; an emergency must not wait for a test run)."""
        if tests_of is not None:
            await require_passing_tests(self, agent_id, tests_of)
        else:
            await require_passing_tests(self, agent_id, version, writing)
        for check in list(self._publish_checks):
            await check(agent_id, version)

    async def get_release(self, agent_id: str) -> Release:
        if not isinstance(agent_id, str):
            raise _agent_not_found(agent_id)
        rel = await self.backend.configs.release(agent_id)
        if rel is None:
            raise _agent_not_found(agent_id)
        return _release(rel)

    async def publish(
        self, agent_id: str, version: int, *, canary_percent: int | None = None, expected_rev: int | None = None,
        ctx: ChangeContext = SYSTEM,
    ) -> Release:
        """Publish `version` (routing hands it out to every new session), or with
        `canary_percent` start a canary of it beside the published version. `NotFound`
        for an unknown agent or version, `RolloutConflict` while a canary runs,
        `ReleaseConflict` when `expected_rev` is not the current revision (or another
        publisher won the race), `PublishRefused` from a pre-publish check."""
        if type(version) is not int or version < 1:
            raise _agent_not_found(agent_id, version if isinstance(version, int) else None)
        if canary_percent is not None and (type(canary_percent) is not int or not 1 <= canary_percent <= 99):
            raise InvalidInput("canary_percent must be an integer from 1 to 99", field="canary_percent")

        def change(rel: StoredRelease, now: datetime) -> tuple[int, int | None, Rollout | None, list[Event]] | None:
            if _running(rel):
                raise RolloutConflict(f"agent {agent_id!r} has a canary running (version "
                                    f"{_rollout(rel).version}): promote or abort it first",  # type: ignore[union-attr]
                                    agent_id=agent_id)
            if canary_percent is None:
                if version == rel.published_version:
                    return None  # already what routing hands out
                events = event_rules.published(agent_id, version, rel.published_version, "publish", now, ctx)
                return version, None, _rollout(rel), events
            if version == rel.published_version:
                raise InvalidInput(f"version {version} is the published version; a canary needs another one",
                                   field="version")
            rollout = Rollout(id=f"ro_{secrets.token_hex(8)}", version=version, stable_version=rel.published_version,
                              percent=canary_percent, status="running", started_at=now, started_by=ctx.actor)
            return rel.published_version, version, rollout, event_rules.rollout_changed(agent_id, rollout, now, ctx)

        return await self._change_release(agent_id, expected_rev, change, check_version=version)

    async def promote_canary(
        self, agent_id: str, *, expected_rev: int | None = None, ctx: ChangeContext = SYSTEM
    ) -> Release:
        """Publish the running canary's version for everyone (`InvalidInput` if none runs)."""

        def change(rel: StoredRelease, now: datetime) -> tuple[int, int | None, Rollout | None, list[Event]]:
            rollout = _running_or_refuse(agent_id, rel)
            done = rollout.model_copy(update={"status": "promoted", "ended_at": now, "ended_by": ctx.actor})
            return done.version, None, done, event_rules.rollout_changed(agent_id, done, now, ctx)

        rel = await self.get_release(agent_id)
        target = rel.canary.version if rel.canary is not None else None
        return await self._change_release(agent_id, expected_rev, change, check_version=target)

    async def abort_canary(
        self, agent_id: str, *, reason: str | None = None, expected_rev: int | None = None,
        ctx: ChangeContext = SYSTEM, figures: dict[str, object] | None = None, rollout_id: str | None = None,
    ) -> Release:
        """End the running canary: every new session gets the published version again.
        `rollout_id`: only that rollout (the guard's verdict was about it); `InvalidInput`
        if no canary (or another one) runs."""

        def change(rel: StoredRelease, now: datetime) -> tuple[int, int | None, Rollout | None, list[Event]]:
            rollout = _running_or_refuse(agent_id, rel)
            if rollout_id is not None and rollout.id != rollout_id:
                raise RolloutConflict(f"rollout {rollout_id} is not running", agent_id=agent_id)
            done = rollout.model_copy(update={
                "status": "aborted", "ended_at": now, "ended_by": ctx.actor, "reason": (reason or "aborted")[:500]})
            return rel.published_version, None, done, event_rules.rollout_changed(agent_id, done, now, ctx, figures)

        return await self._change_release(agent_id, expected_rev, change, check_version=None)

    async def _change_release(
        self, agent_id: str, expected_rev: int | None,
        change: Callable[[StoredRelease, datetime], tuple[int, int | None, Rollout | None, list[Event]] | None],
        *, check_version: int | None,
    ) -> Release:
        if not isinstance(agent_id, str):
            raise _agent_not_found(agent_id)
        configs = self.backend.configs
        async with self._lock(agent_id):
            for attempt in range(MAX_ATTEMPTS):
                rel = await configs.release(agent_id)
                if rel is None:
                    raise _agent_not_found(agent_id)
                if expected_rev is not None and expected_rev != rel.rev:
                    raise ReleaseConflict(agent_id, expected_rev, rel.rev)
                if check_version is not None and check_version > rel.current_version:
                    raise _agent_not_found(agent_id, check_version)
                decided = change(rel, self.backend.now())
                if decided is None:
                    return _release(rel)
                published, canary, rollout, events = decided
                if canary is not None and not (await self.get_agent_config(agent_id, canary)).enabled:
                    raise InvalidInput(f"version {canary} is disabled; a canary of it would take no calls",
                                       field="version")
                if check_version is not None:
                    await self._run_publish_checks(agent_id, check_version)
                doc = rollout.model_dump(mode="json") if rollout is not None else None
                ok = await configs.set_release(agent_id, rel.rev, published, canary, doc, events)
                if ok is None:
                    raise _agent_not_found(agent_id)
                if ok:
                    self._notify()
                    return Release(agent_id=agent_id, current_version=rel.current_version,
                                   published_version=published, rev=rel.rev + 1, rollout=rollout)
                if expected_rev is not None:
                    raise ReleaseConflict(agent_id, expected_rev, None)
                await backoff(attempt)
        raise ReleaseConflict(agent_id, expected_rev, None)

    async def list_published(self, *, offset: int = 0, limit: int = 500) -> tuple[list[PublishedConfig], int]:
        """What routing hands out, by agent id: each published config and its running canary."""
        rows, total = await self.backend.configs.list_published(offset, limit, self._parsed)
        if any((r.published.data is None and r.published.key not in self._parsed)
               or (r.canary is not None and r.canary.data is None and r.canary.key not in self._parsed) for r in rows):
            rows, total = await self.backend.configs.list_published(offset, limit, ())
        out: list[PublishedConfig] = []
        for row in rows:
            try:
                cfg = self._parsed.parse(row.published)
            except CorruptRecord as e:
                log.error("%s; not routable until it is replaced", e.message)
                continue
            canary = rollout = None
            if row.canary is not None and row.rollout is not None:
                try:
                    canary = self._parsed.parse(row.canary)
                    rollout = Rollout.model_validate(row.rollout)
                except (CorruptRecord, ValueError):
                    log.exception("agent %s: canary unreadable; every caller gets the published version",
                                  cfg.agent_id)
                    canary = rollout = None
            out.append(PublishedConfig(cfg, canary, rollout, row.current_version))
        return out, total

    async def rollout_report(self, agent_id: str, policy: GuardPolicy | None = None) -> RolloutReport:
        """The release state and, for the running (or last) canary, each arm's figures
        since it started (its newest `ROLLOUT_MAX_SESSIONS` sessions) and the verdict."""
        release = await self.get_release(agent_id)
        rollout = release.rollout
        if rollout is None:
            return RolloutReport(release=release, drafts=release.drafts)
        sessions, total = await self.backend.sessions.arm_sessions(agent_id, rollout.started_at, ROLLOUT_MAX_SESSIONS)
        required: dict[int, list[str]] = {}
        for v in {rollout.version, rollout.stable_version, *(s.config_version for s in sessions if s.config_version)}:
            try:
                required[v] = list((await self.get_agent_config(agent_id, v)).schema_config.get("required", []))
            except NotFound:
                required[v] = []
        stable = arm_figures("stable", rollout.stable_version, sessions, required)
        canary = arm_figures("canary", rollout.version, sessions, required)
        verdict = compare(stable, canary, policy or GuardPolicy())
        return RolloutReport(release=release, drafts=release.drafts, stable=stable, canary=canary, verdict=verdict,
                             truncated=total > len(sessions))

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
        order: SessionOrder = SessionOrder.newest,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[SessionRecord], int]:
        if agent_id is not None:
            must_be_str(agent_id, "agent_id")
        status = SessionStatus(status) if status is not None else None
        return await self.backend.sessions.list(agent_id, status, since, until, SessionOrder(order), offset, limit)

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


def _rollout(rel: StoredRelease) -> Rollout | None:
    return Rollout.model_validate(rel.rollout) if rel.rollout else None


def _running(rel: StoredRelease) -> bool:
    rollout = _rollout(rel)
    return rollout is not None and rollout.running


def _running_or_refuse(agent_id: str, rel: StoredRelease) -> Rollout:
    rollout = _rollout(rel)
    if rollout is None or not rollout.running:
        raise RolloutConflict(f"agent {agent_id!r} has no canary running", agent_id=agent_id)
    return rollout


def _release(rel: StoredRelease) -> Release:
    return Release(agent_id=rel.agent_id, current_version=rel.current_version,
                   published_version=rel.published_version, rev=rel.rev, rollout=_rollout(rel))
