"""Run a scenario through the real worker path and check its expectations.

What is real: metadata routing, the store (a temporary SQLite file, or any URL the
caller gives), the config cache, `AgentFactory`, `SessionManager`, the built-in and
HTTP tools, LiveKit's `AgentSession` in text mode driven through the entrypoint logic
(`prepare_job` under `fake_job_context`), the `livekit-plugins-openai` LLM, and (for
`via: api` config changes) the admin API app. What is fake: the model (a scripted
OpenAI-compatible endpoint; or a real one in live mode), the far end of HTTP tools
(respx), and store outages (`sim.outage`).

Library use (benchmarks, drain and hardening tests)::

    result = await run_scenario(Path("sim/scenarios/support_happy_path.yaml"))
    assert result.passed, result.report()

    async with SimEnvironment(scenario) as env:          # shared services...
        await asyncio.gather(*(run_session(env, spec) for spec in specs))   # ...concurrent sessions
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import shutil
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import respx
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.beta.workflows.utils import DtmfEvent, dtmf_event_to_code
from livekit.agents.testing import fake_job_context
from livekit.agents.voice.run_result import RunResult

from app.agents.providers import session_connect_options
from app.agents.test_pool import TestRunPool
from app.domain import NotFound, SessionRecord, StoreUnavailable
from app.domain.analysis import SessionAnalysis
from app.seed import seed
from app.settings import Settings
from app.store import open_store
from app.worker.budget import attach_budget_guard
from app.worker.dtmf import DtmfInput, keypad_text
from app.worker.entrypoint import prepare_job
from app.worker.model_unavailable import ModelUnavailable
from app.worker.services import WorkerServices
from app.worker.session_start import PreparedSession
from app.worker.voicemail import apply_verdict
from sim.config_ops import ConfigApplier
from sim.endpoints import SimEndpoints
from sim.expect import (
    check_analysis,
    check_closes,
    check_events,
    check_llm_received,
    check_record,
    check_route,
    describe_event,
    skip_activation,
)
from sim.fake_openai import CapturedRequest, FakeOpenAI, ScriptedError, ScriptedText, Usage, script_asks
from sim.http_mocks import add_routes, check_calls
from sim.llm import LiveConfig, LiveLLM, ScriptedLLM, SessionLLM
from sim.outage import SwitchableStore
from sim.report import Checks, Failure, Loc
from sim.scenario import (
    AnalysisExpect,
    AnalysisReply,
    LoadedScenario,
    Scenario,
    SessionSpec,
    StartSpec,
    Step,
    load_scenario,
    render_metadata,
)
from sim.yamlsrc import LineMap

__all__ = [
    "ADMIN_KEY",
    "ScenarioResult",
    "SessionHooks",
    "SessionOutcome",
    "SimEnvironment",
    "StepOutcome",
    "run_scenario",
    "run_session",
]

ADMIN_KEY = "sim-admin-key"
CACHE_POLL_S = 0.05
"""The sim's cache poll interval: a store outage is noticed within ~0.1 s."""


# ---------------------------------------------------------------------- outcomes


@dataclass
class StepOutcome:
    label: str
    user: str | None
    duration_ms: float
    requests: list[CapturedRequest]
    events: list[str]
    result: RunResult | None = None


@dataclass
class SessionOutcome:
    name: str
    session_id: str | None = None
    agent_id: str | None = None
    config_version: int | None = None
    route_reason: str | None = None
    steps: list[StepOutcome] = field(default_factory=list)
    requests: list[CapturedRequest] = field(default_factory=list)
    record: SessionRecord | None = None
    closed_by_agent: bool = False
    voice: Any = None
    """`io: voice`: the session's `sim.voice.runner.VoiceDriver` (audio recorded, timeline)."""
    endpoints: SimEndpoints | None = None
    """Offline: the scripted servers the session's models reached (`sim.endpoints`)."""
    analysis: SessionAnalysis | None = None
    """The finished post-call analysis, when the session's spec awaits it."""
    keys_sent: list[str] = field(default_factory=list)
    """Keys the agent pressed (`send_dtmf`) on a phone session, in order."""

    async def press_key(self, code: int, digit: str) -> None:
        self.keys_sent.append(digit)

    @property
    def turns(self) -> int:
        """User turns completed."""
        return sum(1 for s in self.steps if s.user is not None and s.result is not None)


@dataclass
class ScenarioResult:
    name: str
    path: Path | None
    live: bool
    failures: list[Failure] = field(default_factory=list)
    sessions: list[SessionOutcome] = field(default_factory=list)
    duration_s: float = 0.0
    skipped: str | None = None
    notes: list[Failure] = field(default_factory=list)
    """Expectations reported as not checked (live `intent:` without a judge)."""

    @property
    def passed(self) -> bool:
        return self.skipped is None and not self.failures

    def report(self) -> str:
        if self.skipped:
            return f"scenario {self.name!r} skipped: {self.skipped}"
        notes = "".join(f"\n  {n.where}: {n.message}" for n in self.notes)
        if not self.failures:
            return f"scenario {self.name!r} passed ({len(self.sessions)} session(s), {self.duration_s:.2f}s){notes}"
        head = f"scenario {self.name!r}: {len(self.failures)} expectation(s) failed"
        return head + "\n\n" + "\n\n".join(f.render() for f in self.failures) + notes


# --------------------------------------------------------------------- environment

_template: Path | None = None


async def _seeded_template() -> Path:
    """A SQLite file seeded by `app.seed.seed` from prompts/, made once per process.

    Each scenario gets its own copy: the same fresh, seeded store as seeding it anew,
    without paying ~0.1 s of seed writes per scenario and per mutant.
    """
    global _template
    if _template is None or not _template.exists():
        path = Path(tempfile.mkdtemp(prefix="sim-template-")) / "seeded.db"
        store = open_store(f"sqlite+aiosqlite:///{path}")
        await store.start()
        try:
            await seed(store)
        finally:
            await store.aclose()  # the last connection checkpoints the WAL into the file
        atexit.register(shutil.rmtree, path.parent, True)
        _template = path
    return _template



@functools.cache
def process_vad() -> Any:
    """One silero VAD per test process, shared by every scenario's `WorkerServices` (as
    one worker process shares it between its sessions): loading it per scenario cost an
    ONNX session each."""
    from livekit.plugins import silero

    return silero.VAD.load()


class SimEnvironment:
    """One worker's worth of services for a scenario: store, cache, settings, API.

    Sessions run inside it share these, as sessions in one worker process do.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        live: LiveConfig | None = None,
        tmp_dir: Path | None = None,
        database_url: str | None = None,
        settings_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.scenario = scenario
        self.live = live
        self._tmp_given = tmp_dir
        self._database_url = database_url
        self._overrides = settings_overrides or {}
        self.tmp: Path | None = None
        self.raw_store: Any = None
        self.store: SwitchableStore = None  # type: ignore[assignment]
        self.settings: Settings = None  # type: ignore[assignment]
        self.services: WorkerServices = None  # type: ignore[assignment]
        self.applier: ConfigApplier = None  # type: ignore[assignment]
        self.router: respx.MockRouter | None = None
        self._api: Any = None
        self.judge_llm: Any = None
        self.analysis_llm: FakeOpenAI | None = None
        """Offline: the scripted post-call analysis model (a session's `analysis.replies`)."""
        self._analysis_client: Any = None
        self.test_runs: TestRunPool | None = None

    async def __aenter__(self) -> SimEnvironment:
        sc = self.scenario
        if self._database_url is None:
            self.tmp = self._tmp_given or Path(tempfile.mkdtemp(prefix="sim-"))
            url = f"sqlite+aiosqlite:///{self.tmp}/sim.db"
            if sc.store.seed:
                shutil.copyfile(await _seeded_template(), self.tmp / "sim.db")
        else:
            url = self._database_url
        self.raw_store = open_store(url)
        await self.raw_store.start()
        if sc.store.seed and self._database_url is not None:
            await seed(self.raw_store)
        self.store = SwitchableStore(self.raw_store)
        self.store.down = not sc.store.available
        opts: dict[str, Any] = {
            "agent_mode": sc.mode,
            "cache_poll_interval": CACHE_POLL_S,
            "admin_api_key": ADMIN_KEY,
            "database_url": url,
        }
        if self.live is not None:
            opts["default_llm_model"] = self.live.model
        opts.update(self._overrides)
        self.settings = Settings(_env_file=None, **opts)  # type: ignore[call-arg]
        # the process's silero VAD, loaded once (as a worker's prewarm loads it) and before
        # any session is prepared, so voice agents get it from the factory as in production
        if self.live is None:
            self.analysis_llm = FakeOpenAI(name="analysis")
            self._analysis_client = self.analysis_llm.client()
        self.services = WorkerServices(  # type: ignore[arg-type]
            self.settings, self.store, vad=process_vad(), analysis_llm_client=self._analysis_client
        )
        await self.services.start()
        # stored tests (`put_test` / `run_tests` ops) run in the background, as in the server
        self.test_runs = TestRunPool(self.settings, self.store)  # type: ignore[arg-type]
        self.applier = ConfigApplier(self.store, api=self.api, default_via=sc.config_via, cache=self.services.cache,
                                     test_runs=self.test_runs)
        if self.live is not None:
            self.judge_llm = self.live.judge_llm()
        return self

    async def api(self) -> Any:
        """The admin API (`create_app` around this environment's store and cache), on first use.

        Served in-process on *this* event loop through `httpx.ASGITransport`, as uvicorn
        serves it beside the worker in production. Not `litestar.testing.AsyncTestClient`:
        that runs the app on a portal thread with its own loop and blocks the caller's
        loop while a request runs, which deadlocks as soon as a session's record write
        holds the store (a change made mid-session) and puts the store on two loops.
        """
        if self._api is None:
            import httpx

            from app.api.app import create_app

            app = create_app(self.settings, self.store, cache=self.services.cache,  # type: ignore[arg-type]
                             test_runs=self.test_runs)
            self._api = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://sim-admin",
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
        return self._api

    def new_llm(self) -> SessionLLM:
        return LiveLLM(self.live) if self.live is not None else ScriptedLLM(self.settings.default_llm_model)

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.test_runs is not None:
                await self.test_runs.aclose()
            if self._api is not None:
                await self._api.aclose()
            if self.judge_llm is not None:
                await self.judge_llm.aclose()
            await self.services.aclose()
            if self._analysis_client is not None:
                await self._analysis_client.close()
        finally:
            await self.raw_store.aclose()
            if self.tmp is not None and self._tmp_given is None:
                shutil.rmtree(self.tmp, ignore_errors=True)


# -------------------------------------------------------------------------- hooks


@dataclass
class SessionHandle:
    env: SimEnvironment
    spec: SessionSpec
    session: AgentSession
    prepared: PreparedSession
    llm: SessionLLM


Hook = Callable[[SessionHandle], Awaitable[None]]


@dataclass
class SessionHooks:
    """Callbacks for code reusing the harness (e.g. hold sessions open for a density
    measurement, or start a drain mid-conversation)."""

    after_start: Hook | None = None
    after_turn: Callable[[SessionHandle, int], Awaitable[None]] | None = None
    before_close: Hook | None = None


# ------------------------------------------------------------------------ session


async def run_session(
    env: SimEnvironment,
    spec: SessionSpec,
    *,
    checks: Checks | None = None,
    loc: Loc = ("sessions", 0),
    hooks: SessionHooks | None = None,
) -> SessionOutcome:
    """Run one session of a scenario in `env`; failures go to `checks`."""
    checks = checks if checks is not None else Checks()
    hooks = hooks or SessionHooks()
    live = env.live is not None
    outcome = SessionOutcome(name=spec.name or f"{loc}")
    await env.applier.apply_all(checks, (*loc, "config"), spec.config)
    if spec.analysis is not None and env.analysis_llm is not None:
        env.analysis_llm.clear()
        for reply in spec.analysis.replies:
            env.analysis_llm.add(_analysis_reply(reply))
    llm = env.new_llm()
    voice = None
    if env.scenario.io == "voice":  # speech audio through VAD/STT/TTS: sim/voice/runner.py
        from sim.voice.runner import VoiceDriver

        voice = outcome.voice = VoiceDriver(env, spec)
    routes = add_routes(env.router, spec.http) if spec.http and env.router is not None else []
    participant = None
    if spec.participant is not None:
        kind = (rtc.ParticipantKind.PARTICIPANT_KIND_SIP if spec.participant.kind == "sip"
                else rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD)
        participant = SimpleNamespace(
            identity=spec.participant.identity, metadata=render_metadata(spec.participant.metadata),
            kind=kind, attributes=dict(spec.participant.attributes),
        )
    try:
        with fake_job_context(job_metadata=render_metadata(spec.job_metadata)) as ctx:
            if spec.room_metadata is not None:
                ctx.job.room.metadata = render_metadata(spec.room_metadata)
            prepared = await prepare_job(ctx, env.services, participant, **_model_kwargs(env, spec, llm, voice, outcome))
            record = prepared.record
            if participant is not None and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP:
                prepared.context.dtmf_sender = outcome.press_key  # as the worker's room would publish them
            outcome.session_id = record.session_id
            outcome.agent_id, outcome.config_version = record.agent_id, record.config_version
            outcome.route_reason = record.route_reason
            if spec.route is not None:
                check_route(checks, (*loc, "route"), spec.route, record,
                            fallback=prepared.decision.is_fallback, source=prepared.decision.source)
            try:
                if voice is not None:
                    await voice.converse(spec, prepared, llm, checks, loc, outcome, hooks, live)
                else:
                    await _converse(env, spec, prepared, llm, checks, loc, outcome, hooks, live)
            finally:
                if env.store.down:
                    checks.fail(loc, "the store is still down at the end of the session: add `store: up` "
                                "before the session ends (the record could not be written)")
                    env.store.down = False
                await prepared.aclose()
    finally:
        outcome.requests = list(llm.requests)
        await llm.aclose()
        if voice is not None:
            await voice.aclose()
        if routes and env.router is not None:
            check_calls(checks, (*loc, "http"), spec.http, routes)
            env.router.routes.clear()
    try:
        outcome.record = await env.raw_store.get_session(outcome.session_id)
    except (NotFound, StoreUnavailable):
        outcome.record = None
    if spec.record is not None:
        check_record(checks, (*loc, "record"), spec.record, outcome.record, live=live)
    if spec.dtmf_sent is not None:
        sent = "".join(outcome.keys_sent)
        checks.check(sent == spec.dtmf_sent, (*loc, "dtmf_sent"), "the keys the agent pressed differ",
                     expected=repr(spec.dtmf_sent), actual=repr(sent))
    if voice is not None:
        voice.check_session(checks, loc, outcome.record, live=live)
    if spec.analysis is not None:
        await _check_analysis(env, spec.analysis, outcome, checks, (*loc, "analysis"), live)
    elif outcome.record is not None and outcome.record.analysis is not None and env.services.analysis is not None:
        # not checked, but let it finish: a later session's scripted analysis replies are its own
        settings = outcome.record.analysis.request.settings
        await env.services.analysis.wait_for(outcome.record.session_id, settings.max_attempts * (settings.timeout_s + 2))
    return outcome


def _analysis_reply(reply: AnalysisReply) -> ScriptedText | ScriptedError:
    if reply.error is not None:
        return ScriptedError(reply.error, "scripted analysis error")
    u = reply.usage
    usage = Usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens) if u is not None else None
    text = json.dumps(reply.json_) if reply.json_ is not None else reply.text or ""
    return ScriptedText(text, usage=usage)


async def _check_analysis(
    env: SimEnvironment, spec: AnalysisExpect, outcome: SessionOutcome, checks: Checks, loc: Loc, live: bool
) -> None:
    """Wait for the session's analysis (run by the environment's runner, as the worker's
    runs it after the call) and check it; then every scripted reply must have been asked."""
    record, runner = outcome.record, env.services.analysis
    if record is None or runner is None:
        return
    if record.analysis is None:
        checks.fail(loc, "the session has no analysis: the agent that ran it has no `analysis` settings",
                    expected="a pending analysis on the record", actual="None")
        return
    request = record.analysis.request.settings
    timeout = request.max_attempts * (request.timeout_s + 2) + 5
    outcome.analysis = await runner.wait_for(record.session_id, timeout)
    check_analysis(checks, loc, spec, outcome.analysis, live=live)
    fake = env.analysis_llm
    if fake is not None and fake.pending:
        checks.fail((*loc, "replies"), f"{fake.pending} scripted analysis repl(ies) were never requested",
                    expected="every reply used", actual=f"{len(spec.replies) - fake.pending} used")


def _model_kwargs(
    env: SimEnvironment, spec: SessionSpec, llm: SessionLLM, voice: Any, outcome: SessionOutcome
) -> dict[str, Any]:
    """How the session's models reach their servers. Offline: every client the factory
    builds (each chain member, with its own timeouts) sends through the scripted
    endpoints. Live: the one real LLM client (and the voice fake for audio)."""
    if isinstance(llm, ScriptedLLM):
        specs = {**env.scenario.endpoints, **spec.endpoints}
        outcome.endpoints = SimEndpoints(llm.endpoint, audio=voice.audio if voice else None, specs=specs)
        # `stt: local` / `tts: local`: those models talk to the real local model server
        return {"transport": outcome.endpoints, "audio": voice is not None, **(voice.local_kwargs() if voice else {})}
    return {"llm_client": llm.client(), **(voice.prepare_kwargs() if voice else {"audio": False})}


async def _converse(
    env: SimEnvironment,
    spec: SessionSpec,
    prepared: PreparedSession,
    llm: SessionLLM,
    checks: Checks,
    loc: Loc,
    outcome: SessionOutcome,
    hooks: SessionHooks,
    live: bool,
) -> None:
    closed = asyncio.Event()
    # As the entrypoint does: the process's shared VAD. Omitted, LiveKit would build its
    # bundled inference VAD for every session (~30 ms of CPU each).
    async with AgentSession(vad=env.services.load_vad(), conn_options=session_connect_options()) as session:
        prepared.manager.attach(session)
        attach_budget_guard(session, prepared.manager)
        guard = ModelUnavailable.attach(session, prepared.manager, env.settings)  # as the entrypoint does
        session.on("close", lambda _ev: closed.set())

        def model_failed() -> bool:
            return guard.outcome is not None

        handle = SessionHandle(env, spec, session, prepared, llm)

        start = spec.start or StartSpec()  # no `start:` block: nothing checked
        ok = await _step(
            checks, (*loc, "start"), start, llm, outcome, "start", None, live, env,
            lambda: session.start(prepared.agent, capture_run=True), model_failed,
        )
        if not ok:
            return
        if model_failed():
            await guard.wait()  # the session is closed now: any turn left is reported below
        if hooks.after_start is not None:
            await hooks.after_start(handle)
        if spec.amd is not None:  # as the worker's AMD task acts on LiveKit's verdict
            await apply_verdict(session, prepared, spec.amd)
        keypad = DtmfInput(lambda text: session.run(user_input=text), pause_s=SIM_DTMF_PAUSE_S)
        for j, turn in enumerate(spec.turns):
            tloc = (*loc, "turns", j)
            await env.applier.apply_all(checks, (*tloc, "config"), turn.config)
            if closed.is_set():
                checks.fail(tloc, "the session was already closed before this turn (end_session or an error)",
                            expected=f"user turn {turn.user!r}", actual="session closed")
                return
            llm.force_tool_choice(turn.tool_choice)
            if turn.dtmf is not None:
                ok = await _step(
                    checks, tloc, turn, llm, outcome, f"turn {j}", keypad_text(turn.dtmf.rstrip("#")), live, env,
                    lambda keys=turn.dtmf: press_keys(keypad, keys), model_failed,  # type: ignore[misc]
                )
            else:
                user = turn.user
                ok = await _step(
                    checks, tloc, turn, llm, outcome, f"turn {j}", user, live, env,
                    lambda user=user: session.run(user_input=user),  # type: ignore[misc]
                    model_failed,
                )
            if not ok:
                return
            if model_failed():
                await guard.wait()
            if hooks.after_turn is not None:
                await hooks.after_turn(handle, j)
        outcome.closed_by_agent = await check_closes(checks, spec.closes, closed, loc)
        if hooks.before_close is not None:
            await hooks.before_close(handle)


SIM_DTMF_PAUSE_S = 0.3
"""The keypad buffer's pause in the sim (the worker's: the `dtmf_pause_s` setting): keys without a
closing `#` are submitted after it."""


async def press_keys(keypad: DtmfInput, keys: str) -> RunResult[Any]:
    """Each key as LiveKit's SIP service reports it, then the turn the buffer submitted."""
    for key in keys:
        keypad.on_dtmf(rtc.SipDTMF(code=dtmf_event_to_code(DtmfEvent(key)), digit=key))
    task = await asyncio.wait_for(keypad.submitted.get(), timeout=keypad.pause_s + 5)
    result: RunResult[Any] = await task
    return result


async def _step(
    checks: Checks,
    loc: Loc,
    step: Step,
    llm: SessionLLM,
    outcome: SessionOutcome,
    label: str,
    user: str | None,
    live: bool,
    env: SimEnvironment,
    run: Callable[[], Awaitable[RunResult | None]],
    model_failed: Callable[[], bool] = lambda: False,
) -> bool:
    """Script, run and check one step; False if the session cannot go on. `model_failed`:
    whether the session's model was found unavailable (then a failed run is expected)."""
    llm.script(step.llm)
    first_request = len(llm.requests)
    t0 = time.perf_counter()
    try:
        result = await run()
    except Exception as e:  # the model or the session failed: report it as the step's outcome
        requests = llm.requests[first_request:]
        under_scripted = not live and script_asks(requests) > len(step.llm)
        if model_failed() and not under_scripted:  # a scripted failure: the session ends as
            # failed (checked by `closes` and `record`, as the worker records it)
            outcome.steps.append(StepOutcome(label, user, (time.perf_counter() - t0) * 1000, list(requests), []))
            return True
        hint = ""
        if under_scripted:
            hint = f" (the model was asked {script_asks(requests)} time(s) but only {len(step.llm)} repl(ies) were scripted)"
        checks.fail(loc, f"{label} raised {type(e).__name__}{hint}", expected="the step to complete",
                    actual=str(e)[:500], context="".join(traceback.format_exception_only(e)).strip())
        outcome.steps.append(StepOutcome(label, user, (time.perf_counter() - t0) * 1000, list(requests), []))
        return False
    elapsed_ms = (time.perf_counter() - t0) * 1000
    requests = llm.requests[first_request:]
    events = [describe_event(ev) for ev in result.events] if result is not None else []
    if model_failed() and not live and script_asks(requests) > len(step.llm):
        # the scripted endpoint answers an unscripted request with a 400, which fails the model
        checks.fail(loc, f"{label}: the model was asked {script_asks(requests)} time(s) but only {len(step.llm)} "
                    "repl(ies) were scripted; the unanswered request failed the model, which ends the session",
                    context="\n".join(f"  {e}" for e in events))
        outcome.steps.append(StepOutcome(label, user, elapsed_ms, list(requests), events, result))
        return False
    outcome.steps.append(StepOutcome(label, user, elapsed_ms, list(requests), events, result))
    if not live:
        dropped = llm.drop_pending()
        if dropped:
            checks.fail((*loc, "llm"), f"{dropped} scripted LLM repl(ies) were never requested in this step",
                        expected=f"{len(step.llm)} request(s)", actual=f"{len(requests)} request(s)",
                        context="\n".join(f"  {e}" for e in events))
        if step.within_ms is not None:
            checks.check(elapsed_ms <= step.within_ms, (*loc, "within_ms"), f"{label} took too long",
                         expected=f"<= {step.within_ms:g} ms", actual=f"{elapsed_ms:.1f} ms")
    if result is not None:
        first = skip_activation(result) if isinstance(step, StartSpec) else 0
        await check_events(checks, loc, step, result, first=first, live=live, judge_llm=env.judge_llm)
    elif step.expect:
        checks.fail((*loc, "expect"), "no run result to check (the step produced nothing)")
    if step.llm_received is not None:
        check_llm_received(checks, (*loc, "llm_received"), step.llm_received, requests, live=live)
    return True


# ----------------------------------------------------------------------- scenario


def _as_loaded(scenario: Scenario | LoadedScenario | Path | str) -> LoadedScenario:
    if isinstance(scenario, LoadedScenario):
        return scenario
    if isinstance(scenario, Scenario):
        return LoadedScenario(scenario=scenario, path=Path(f"<{scenario.name}>"), lines=LineMap(Path(f"<{scenario.name}>")))
    return load_scenario(Path(scenario))


async def run_scenario(
    scenario: Scenario | LoadedScenario | Path | str,
    *,
    live: bool = False,
    live_config: LiveConfig | None = None,
    tmp_dir: Path | None = None,
    database_url: str | None = None,
) -> ScenarioResult:
    """Run every session of a scenario in a fresh environment; never raises for a
    failed expectation (see `ScenarioResult.failures`)."""
    loaded = _as_loaded(scenario)
    sc = loaded.scenario
    result = ScenarioResult(name=sc.name, path=loaded.path, live=live)
    if live:
        live_config = live_config or LiveConfig.from_env()
        if live_config is None:
            result.skipped = "SIM_LIVE=1 needs OPENAI_API_KEY (and optionally OPENAI_BASE_URL, SIM_LIVE_MODEL)"
            return result
        if sc.offline_only:
            result.skipped = f"offline only: {sc.offline_only}"
            return result
    checks = Checks(loaded.lines)
    t0 = time.perf_counter()
    async with SimEnvironment(sc, live=live_config if live else None, tmp_dir=tmp_dir, database_url=database_url) as env:
        with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
            env.router = router
            await env.applier.apply_all(checks, ("config",), sc.config)
            for i, spec in enumerate(sc.sessions):
                result.sessions.append(await run_session(env, spec, checks=checks, loc=("sessions", i)))
    if sc.latency_budget is not None and not live:
        from sim.voice.expect import check_latency_budget

        samples = [s for o in result.sessions if o.voice is not None for s in o.voice.turn_latencies]
        check_latency_budget(checks, sc.latency_budget, samples, sc.endpoints)
    result.duration_s = time.perf_counter() - t0
    result.failures = checks.failures
    result.notes = checks.notes
    return result
