"""The rollout guard: aborts a running canary that is worse than its stable version.

Runs in the API process (the supervisor starts it), every `CANARY_GUARD_INTERVAL` seconds
and soon after a canary session ends (`nudge`, callable from any thread). For each agent
with a canary running it reads the arms' figures from the store (`rollout_report`) and
asks `app.domain.rollout.compare`; a "worse" verdict aborts that rollout (only that
one: `rollout_id`), recorded in the journal as `rollout.aborted` by `rollout-guard` with
the figures, so webhooks announce it. Several processes may run a guard on one database:
the abort is a compare-and-swap, so exactly one of them records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from app.background import stop_task
from app.domain import DomainError, RolloutConflict
from app.domain.events import ChangeContext
from app.domain.rollout import GUARD_ACTOR, GuardPolicy
from app.settings import Settings
from app.store.base import ConfigStore

log = logging.getLogger(__name__)

GUARD = ChangeContext(actor=GUARD_ACTOR, note="canary worse than stable: aborted automatically")
NUDGE_DELAY = 1.0
"""After a canary session ends, wait this long for others ending with it: one check for a burst."""


def guard_policy(settings: Settings) -> GuardPolicy:
    return GuardPolicy(min_sessions=settings.canary_min_sessions, margin=settings.canary_margin,
                       confidence=settings.canary_confidence)


class RolloutGuard:
    def __init__(self, store: ConfigStore, policy: GuardPolicy, *, interval: float = 15.0) -> None:
        self._store = store
        self.policy = policy
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self.aborted: list[str] = []
        """Agent ids this guard aborted a canary of, oldest first (for tests and logs)."""

    @classmethod
    def from_settings(cls, settings: Settings, store: ConfigStore) -> RolloutGuard:
        return cls(store, guard_policy(settings), interval=settings.canary_guard_interval)

    def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._run(), name="rollout-guard")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:  # bounded: a round in flight may swallow the cancel (app.background)
            await stop_task(task, "rollout guard")

    def nudge(self) -> None:
        """A canary session ended: check soon. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
            loop.call_soon_threadsafe(self._wake.set)

    async def check_all(self) -> list[str]:
        """One round over every running canary; returns the agent ids aborted now."""
        aborted: list[str] = []
        offset = 0
        while True:
            page, total = await self._store.list_published(offset=offset, limit=500)
            for agent in page:
                if agent.rollout is not None and agent.rollout.running and await self.check(
                    agent.config.agent_id, agent.rollout.id
                ):
                    aborted.append(agent.config.agent_id)
            offset += len(page)
            if not page or offset >= total:
                return aborted

    async def check(self, agent_id: str, rollout_id: str) -> bool:
        """Judge one canary; abort it if it is worse. True when this call aborted it."""
        report = await self._store.rollout_report(agent_id, self.policy)
        canary, verdict = report.release.canary, report.verdict
        if canary is None or canary.id != rollout_id or verdict is None or not verdict.worse:
            return False
        figures: dict[str, object] = {
            "stable": report.stable.model_dump(mode="json") if report.stable else None,
            "canary": report.canary.model_dump(mode="json") if report.canary else None,
            "verdict": verdict.model_dump(mode="json"),
        }
        try:
            await self._store.abort_canary(
                agent_id, reason=verdict.reason, ctx=GUARD, figures=figures, rollout_id=rollout_id)
        except RolloutConflict:
            return False  # ended meanwhile (by a person, or another process's guard)
        log.warning("agent %s: canary version %s aborted automatically: %s", agent_id, canary.version, verdict.reason)
        self.aborted.append(agent_id)
        return True

    async def _run(self) -> None:
        while self._task is asyncio.current_task():  # until `aclose` lets go of it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
                await asyncio.sleep(NUDGE_DELAY)
            self._wake.clear()
            started = time.monotonic()
            try:
                await self.check_all()
            except DomainError as e:  # the store is down, say: next round
                log.warning("rollout guard round failed: %s", e.message)
            except Exception:  # keep guarding whatever happens
                log.exception("rollout guard round failed")
            log.debug("rollout guard round took %.3fs", time.monotonic() - started)
