"""Run one stored test against one version of an agent, in this process.

Each session of the test is a LiveKit `AgentSession` in text mode around the agent the
factory builds from that exact version (not the routed one: a test is about the version
under test), with the test's `job_metadata.variables` as the prompt's variables. The
model is the scripted model (`app.agents.scripted_model`), or with `model: live` the
agent's own configured model chain. Each step's events are checked with the sim's own
checks (`app.agents.scenario_checks`), so a stored test passes in the server exactly
when it would pass in the sim. Nothing is written to the sessions table: the test's
conversation is collected by an in-memory recorder, and the result (per step, what was
expected and what happened) is what the run stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from app.agents.context import ConfigSource, NullRecorder, SessionContext
from app.agents.factory import AgentFactory, MissingVariables
from app.agents.providers import session_connect_options
from app.agents.scenario_checks import check_collected, check_events, describe_event, skip_activation
from app.agents.scripted_model import ScriptedModel
from app.domain import AgentConfig
from app.domain.agent_tests import StepCheck, StepResult, StoredTestScenario, TestResult, parse_test_document
from app.domain.field_errors import format_location
from app.domain.scenario.format import LoadedScenario, SessionSpec, StartSpec, Step
from app.domain.scenario.report import Checks, Failure, Loc
from app.settings import Settings

if TYPE_CHECKING:
    from livekit.agents.voice.run_result import RunResult

log = logging.getLogger(__name__)

TEST_TIMEOUT_S = {"scripted": 60.0, "live": 300.0}
"""A test that has not finished by then fails (a scripted test takes well under a second)."""
CLOSE_WAIT_S = 3.0
"""`closes: true`: end_session closes the session just after the goodbye is spoken."""


async def run_test(
    settings: Settings, configs: ConfigSource, config: AgentConfig, name: str, content: str
) -> TestResult:
    """Run the test document `content` against `config`; never raises for a failing
    test (its result says why), only for cancellation."""
    t0 = time.perf_counter()
    try:
        loaded = parse_test_document(name, content)
    except Exception as e:  # changed since it was stored? (stored documents were valid)
        return TestResult(name=name, passed=False, error=str(e))
    scenario = loaded.scenario
    assert isinstance(scenario, StoredTestScenario)
    checks = Checks(loaded.lines)
    steps: list[StepResult] = []
    error: str | None = None
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S[scenario.model]):
            for i, spec in enumerate(scenario.sessions):
                await _run_session(settings, configs, config, loaded, spec, i, checks, steps)
    except TimeoutError:
        error = f"the test did not finish within {TEST_TIMEOUT_S[scenario.model]:g} s"
    except Exception as e:
        log.warning("test %r of %s v%d could not run: %s", name, config.agent_id, config.version, e, exc_info=True)
        error = f"{type(e).__name__}: {e}"[:500]
    _attach(checks.failures, steps, loaded)
    passed = error is None and not checks.failures
    return TestResult(name=name, model=scenario.model, passed=passed, steps=steps, error=error,
                      duration_ms=round((time.perf_counter() - t0) * 1000, 1))


async def _run_session(
    settings: Settings, configs: ConfigSource, config: AgentConfig, loaded: LoadedScenario,
    spec: SessionSpec, i: int, checks: Checks, steps: list[StepResult],
) -> None:
    from livekit.agents import AgentSession

    scenario = loaded.scenario
    assert isinstance(scenario, StoredTestScenario)
    live = scenario.model == "live"
    loc: Loc = ("sessions", i)
    model = None if live else ScriptedModel()
    recorder = NullRecorder()
    metadata = spec.job_metadata if isinstance(spec.job_metadata, dict) else {}
    variables = metadata.get("variables") if isinstance(metadata.get("variables"), dict) else {}
    ctx = SessionContext(session_id=f"test-{uuid.uuid4().hex[:12]}", room="agent-test", recorder=recorder,
                         user_id=metadata.get("user_id") if isinstance(metadata.get("user_id"), str) else None,
                         variables={str(k): str(v) for k, v in (variables or {}).items()}, audio=False)
    factory = AgentFactory(settings, configs, transport=model)
    try:
        try:
            agent = factory.create_agent(config, ctx)
        except MissingVariables as e:
            checks.fail((*loc, "job_metadata"), f"the agent needs variable(s) {', '.join(e.names)}",
                        expected="job_metadata.variables with them", actual="missing")
            return
        closed = asyncio.Event()
        # text only: no VAD, so no turn detector either (it would only warn that it needs one)
        async with AgentSession(vad=None, turn_handling={"turn_detection": None},
                                conn_options=session_connect_options()) as session:
            session.on("close", lambda _ev: closed.set())

            async def step(where: Loc, st: Step, label: str, user: str | None,
                           run: Callable[[], Awaitable[RunResult[Any] | None]]) -> bool:
                return await _step(checks, where, st, label, user, model, live, run, steps, i)

            start = spec.start or StartSpec()
            if not await step((*loc, "start"), start, "start", None,
                              lambda: session.start(agent, capture_run=True)):
                return
            for j, turn in enumerate(spec.turns):
                tloc: Loc = (*loc, "turns", j)
                if closed.is_set():
                    checks.fail(tloc, "the session was already closed before this turn",
                                expected=f"user turn {turn.user!r}", actual="session closed")
                    return
                user = turn.user
                assert user is not None  # the stored format has text turns only
                if not await step(tloc, turn, f"turn {j}", user,
                                  lambda user=user: session.run(user_input=user)):  # type: ignore[misc]
                    return
            if spec.closes is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closed.wait(), CLOSE_WAIT_S if spec.closes else 0.05)
                checks.check(closed.is_set() == spec.closes, (*loc, "closes"),
                             "the agent did not close the session" if spec.closes else "the agent closed the session",
                             expected="closed by the agent" if spec.closes else "still open",
                             actual="closed" if closed.is_set() else "open")
        if spec.record is not None:
            check_collected(checks, (*loc, "record"), spec.record, recorder.collected, recorder.handoffs, live=live)
    finally:
        await ctx.aclose()


async def _step(
    checks: Checks, loc: Loc, step: Step, label: str, user: str | None, model: ScriptedModel | None, live: bool,
    run: Callable[[], Awaitable[RunResult[Any] | None]], steps: list[StepResult], session: int,
) -> bool:
    """Script, run and check one step; False when the session cannot go on."""
    if model is not None:
        model.script(step.llm)
    asked = model.asks if model is not None else 0
    try:
        result = await run()
    except Exception as e:  # the model failed (e.g. asked more often than scripted)
        hint = ""
        if model is not None and model.asks - asked > len(step.llm):
            hint = f" (the model was asked {model.asks - asked} time(s), {len(step.llm)} repl(ies) scripted)"
        checks.fail(loc, f"{label} raised {type(e).__name__}{hint}", expected="the step to complete",
                    actual=str(e)[:300])
        steps.append(StepResult(session=session, step=label, user=user, passed=False))
        return False
    events = [describe_event(ev) for ev in result.events] if result is not None else []
    steps.append(StepResult(session=session, step=label, user=user, passed=True, events=events))
    if model is not None:
        dropped = model.drop_pending()
        if dropped:
            checks.fail((*loc, "llm"), f"{dropped} scripted repl(ies) were never requested in this step",
                        expected=f"{len(step.llm)} request(s)", actual=f"{len(step.llm) - dropped} request(s)")
    if result is not None:
        first = skip_activation(result) if isinstance(step, StartSpec) else 0
        await check_events(checks, loc, step, result, first=first, live=live, judge_llm=None)
    elif step.expect:
        checks.fail((*loc, "expect"), "no run result to check (the step produced nothing)")
    return True


def _attach(failures: list[Failure], steps: list[StepResult], loaded: LoadedScenario) -> None:
    """Give each failure to the step its location is in (`sessions[i].start`,
    `sessions[i].turns[j]`), or to a `session` entry for checks after the conversation."""
    by_key = {(s.session, s.step): s for s in steps}
    for f in failures:
        loc = f.loc
        session = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
        label = "session"
        if len(loc) > 2 and loc[2] == "start":
            label = "start"
        elif len(loc) > 3 and loc[2] == "turns":
            label = f"turn {loc[3]}"
        target = by_key.get((session, label))
        if target is None:
            target = by_key[(session, label)] = StepResult(session=session, step=label, passed=False)
            steps.append(target)
        target.passed = False
        target.failures.append(StepCheck(
            line=loaded.lines.line(loc), field=format_location(loc), message=f.message,
            expected=f.expected, actual=f.actual))
