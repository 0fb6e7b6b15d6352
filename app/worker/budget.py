"""Session budgets: LLM tokens, TTS characters and call duration, per agent.

The running agent's `SessionBudget` is checked against the session's totals as LiveKit
counts them (`AgentSession.usage`, updated after every model call) and against the time
since the session started (a tick once a second). Near a limit (`wrap_up_at` of it) the
agent is told once, by an instruction added to its own, to bring the call to a close.
At a limit the session ends the way `end_session` ends it: the record is finished
(`completed`, end_reason `budget_exhausted`), the agent says a short goodbye (one more
reply, without tools, that the caller cannot interrupt) and the session closes once it
has played. After a handoff the new agent's budget applies to the totals so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from app.domain import SessionBudget, SessionStatus
from app.worker.usage import usage_totals

if TYPE_CHECKING:
    from livekit.agents import AgentSession

    from app.agents.context import SessionRecorder

log = logging.getLogger(__name__)

END_REASON = "budget_exhausted"
WRAP_UP_INSTRUCTIONS = (
    "This call is close to its limit. Bring it to a close now: answer briefly, do not "
    "start anything new, and if something is left open tell the caller how to follow up."
)
GOODBYE_INSTRUCTIONS = (
    "The call has reached its limit and ends after this reply. In one or two short "
    "sentences, apologise that you have to end the call now, say how the caller can follow "
    "up if something is left open, and say goodbye. Do not call any tool."
)
TICK_S = 1.0

_LABELS = {"llm_tokens": "LLM tokens", "tts_characters": "TTS characters", "duration_s": "seconds"}


class BudgetGuard:
    def __init__(self, session: AgentSession[Any], recorder: SessionRecorder, *, tick_s: float = TICK_S) -> None:
        self._session = session
        self._recorder = recorder
        self._tick_s = tick_s
        self._started = time.monotonic()
        self._warned = False
        self._ended = False
        self._task: asyncio.Task[None] | None = None

    @property
    def ended(self) -> bool:
        return self._ended

    def attach(self) -> None:
        self._session.on("session_usage_updated", lambda _ev: self.check())
        self._session.on("close", lambda _ev: self.stop())
        self._task = asyncio.create_task(self._tick(), name="session-budget")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _tick(self) -> None:
        while not self._ended:
            await asyncio.sleep(self._tick_s)
            self.check()

    def _budget(self) -> SessionBudget | None:
        try:
            agent = self._session.current_agent
        except RuntimeError:  # not started yet, or closed
            return None
        config = getattr(agent, "config", None)
        return getattr(config, "budget", None)

    def used(self) -> dict[str, float]:
        totals = usage_totals(self._session.usage)  # read as the session record reads it
        return {
            "llm_tokens": totals.llm_tokens, "tts_characters": totals.tts_characters,
            "duration_s": time.monotonic() - self._started,
        }

    def check(self) -> None:
        """Warn or end the session if the running agent's budget says so."""
        budget = self._budget()
        if self._ended or budget is None:
            return
        used = self.used()
        near: tuple[str, float, float] | None = None
        for name, value in used.items():
            limit = getattr(budget, name)
            if limit is None:
                continue
            if value >= limit:
                self._end(name, value, limit)
                return
            if near is None and value >= limit * budget.wrap_up_at:
                near = (name, value, limit)
        if near is not None and not self._warned:
            self._warn(*near)

    def _warn(self, name: str, value: float, limit: float) -> None:
        self._warned = True
        detail = f"{_LABELS[name]}: {value:.0f} of {limit:g} used; told to wrap up"
        log.info("session budget: %s", detail)
        self._recorder.record_event("budget_warning", detail)
        agent = self._session.current_agent
        task = asyncio.create_task(agent.update_instructions(f"{agent.instructions}\n\n{WRAP_UP_INSTRUCTIONS}"))
        task.add_done_callback(_log_failure)

    def _end(self, name: str, value: float, limit: float) -> None:
        self._ended = True
        self.stop()
        detail = f"{_LABELS[name]}: {value:.0f} of {limit:g} used; the session ends"
        log.info("session budget: %s", detail)
        self._recorder.record_event("budget_exhausted", detail)
        self._recorder.finish(SessionStatus.completed, END_REASON)
        session = self._session
        try:
            handle = session.generate_reply(
                instructions=GOODBYE_INSTRUCTIONS, tool_choice="none", allow_interruptions=False
            )
        except RuntimeError as e:  # the session is already closing
            log.info("session budget: no goodbye (%s)", e)
            session.shutdown()
            return
        handle.add_done_callback(lambda _: session.shutdown())


def _log_failure(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        if (e := task.exception()) is not None:
            log.warning("session budget: the wrap-up instruction was not applied: %s", e)


def attach_budget_guard(
    session: AgentSession[Any], recorder: SessionRecorder, *, tick_s: float = TICK_S
) -> BudgetGuard:
    """Watch `session` against its running agent's budget (module docstring); call
    with the loop running, before `session.start`."""
    guard = BudgetGuard(session, recorder, tick_s=tick_s)
    guard.attach()
    return guard
