"""Voice mode of the sim harness (`io: voice`): a session driven by speech audio.

`sim.harness.run_session` does everything else as in text mode (routing, store, config
ops, HTTP mocks, the stored record) and hands the conversation to a `VoiceDriver`:

- the agent is built with `audio=True`, so the factory gives it the config's real
  `livekit-plugins-openai` STT and TTS (their `openai.AsyncClient` pointed at a
  `FakeOpenAI` answering `/audio/transcriptions` with the turn's transcript and
  `/audio/speech` with a tone as long as the text) and the process's silero VAD;
- the `AgentSession` gets a `SimAudioInput` / `SimAudioOutput` (no room) and turn
  detection by VAD; the production re-prompt on silence (`attach_silence_reprompt`) is
  attached as the entrypoint attaches it;
- each user turn streams its `before` audio, the turn's WAV fixture and a real-time
  silence tail through the `Mic`; the step ends when the user's turn was committed and
  every reply it caused has played (or, when the next turn barges in, when the reply
  has played `barge_in_s` seconds: the step is then finished once the barge-in cut it).

The events of a step are collected by a LiveKit `RunResult` (set as the session's run
state, watching every speech handle created during the step), so `expect` is checked
by the same `RunResult.expect` code as in text mode. The voice checks (VAD saw the
speech, the transcript reached the model, every assistant message played audio,
interruptions) are in `sim.voice.expect`.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livekit.agents import AgentSession
from livekit.agents.voice.run_result import ChatMessageEvent, RunResult

from app.agents.providers import session_connect_options
from app.worker.budget import attach_budget_guard
from app.worker.model_unavailable import ModelUnavailable
from app.worker.silence import attach_silence_reprompt
from sim.expect import check_closes, check_events, check_llm_received, describe_event, skip_activation
from sim.fake_openai import FakeOpenAI, script_asks
from sim.report import Checks, Loc
from sim.scenario import SessionSpec, StartSpec, Step, TurnSpec
from sim.voice.audio import fixture_path, load_fixture
from sim.voice.clock import SimClock
from sim.voice.expect import StepWindow, check_voice_session, check_voice_step
from sim.voice.io import Mic, PlayedSegment, Segment, SimAudioInput, SimAudioOutput
from sim.voice.local_audio import LocalAudio
from sim.voice.log import VoiceLog
from sim.voice.spec import AudioPart, VoiceExpect, VoiceOptions, VoiceTurn, fixture_name
from sim.voice.wer import wer

if TYPE_CHECKING:
    from app.domain import SessionRecord
    from app.worker.session_start import PreparedSession
    from sim.harness import SessionHooks, SessionOutcome, SimEnvironment
    from sim.llm import SessionLLM

COMMIT_TIMEOUT_S = 10.0
"""Wall seconds after the user's audio for the turn to be committed (VAD + STT + EOU)."""
RUN_TIMEOUT_S = 20.0
"""Wall seconds for a step's replies to finish playing."""
EXTEND_STEP_S = 0.5
EXTEND_MAX_S = 60.0
"""`until_agent_spoke`: a silence or noise part is extended in these steps, up to this much."""
MIN_SPEECH_WALL_S = 0.3
"""With `realtime_tail`, an utterance streams over at least this much wall time: LiveKit
drops a turn's end-of-turn metrics when its end of speech (back-dated by the VAD's
silence) predates its start, which a loaded machine's late VAD events can cause for a
short utterance streamed in a few milliseconds."""


def fixture_for(turn: TurnSpec) -> str:
    vt = turn.voice or VoiceTurn()
    return vt.audio_fixture or fixture_name(vt.say or turn.user, vt.speaker)


def voice_session_kwargs(vad: Any, options: VoiceOptions) -> dict[str, Any]:
    """The `AgentSession` options of a simulated voice session (and the benchmark's).

    As production (`entrypoint`: `AgentSession(vad=..., conn_options=...)`), except: turns end on the VAD
    (production's default is LiveKit's turn-detector model; the sim asserts what VAD and
    endpointing do), no AEC warm-up (simulated audio has no echo: LiveKit skips it for
    its own simulations too), `away_timeout_s` when the scenario sets one, and a 0.2 s
    `session_close_transcript_timeout`: LiveKit's 2 s default makes every voice session
    that ends by `end_session` linger 2 s after the goodbye, waiting for a transcript of
    the silence it pushes into the STT on close (true in production; only time here).
    """
    kw: dict[str, Any] = {
        "vad": vad,
        "conn_options": session_connect_options(),
        "turn_handling": {"turn_detection": "vad"},
        "aec_warmup_duration": None,
        "session_close_transcript_timeout": 0.2,
    }
    if options.away_timeout_s is not None:
        kw["user_away_timeout"] = options.away_timeout_s / options.speed
    return kw


class TurnRun:
    """A `RunResult` for a step driven by audio (LiveKit only makes one for `run()`)."""

    def __init__(self, session: AgentSession) -> None:
        self.rr: RunResult[Any] = RunResult(output_type=None, session=session)
        self.guard: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.rr._watch_handle(self.guard)  # not done before the user's turn is committed

    def watch(self, handle: Any) -> None:
        if handle not in self.rr._handles and not self.rr.done():
            self.rr._watch_handle(handle)

    def release(self) -> None:
        if not self.guard.done():
            self.guard.set_result(None)

    @property
    def handles(self) -> int:
        return len(self.rr._handles) - (0 if self.guard.done() else 1)

    async def wait(self, timeout: float) -> BaseException | None:
        """Wait for the run; the error it ended with (a closed session), or None."""
        try:
            await asyncio.wait_for(asyncio.shield(self.rr._done_fut), timeout)
        except TimeoutError as e:
            return e
        except Exception as e:  # the session closed mid-run: LiveKit fails the run state
            return e
        return None


@dataclass
class StepState:
    label: str
    loc: Loc
    step: Step
    voice: VoiceExpect
    user: str | None
    window: StepWindow
    t0: float = field(default_factory=time.perf_counter)
    run: TurnRun | None = None
    result: RunResult[Any] | None = None
    speech_end_wall: float | None = None
    llm_settled: bool = False
    turn_index: int | None = None


class VoiceDriver:
    def __init__(self, env: SimEnvironment, spec: SessionSpec, *, keep_audio: bool = True) -> None:
        self.env = env
        self.spec = spec
        self.opts = env.scenario.voice or VoiceOptions()
        self.audio = FakeOpenAI(model="sim-audio")
        self.local: LocalAudio | None = None
        if self.opts.stt == "local" or self.opts.tts == "local":  # the real speech models (`local` extra)
            from sim.local_models import local_model_server

            self.local = LocalAudio(local_model_server().base_url)
        self._client: Any = None
        self.clock = SimClock(self.opts.speed)
        self.input = SimAudioInput()
        self.output = SimAudioOutput(self.clock, keep_audio=keep_audio)
        self.mic = Mic(self.clock, self.input, frame_ms=self.opts.frame_ms)
        self.log = VoiceLog(self.clock)
        self.steps: list[StepState] = []
        self.session: AgentSession | None = None
        self.turn_latencies: list[tuple[Loc, float]] = []
        """Per user turn: end of the user's speech -> the agent's first audio (wall ms)."""
        self.guard: ModelUnavailable | None = None
        """The session's `ModelUnavailable`: once it decided, a failed run is expected
        (the session ends as failed; `closes` and `record` check it)."""

    # ------------------------------------------------------------------ harness API

    def client(self) -> Any:
        if self._client is None:
            self._client = self.audio.client()
        return self._client

    def prepare_kwargs(self) -> dict[str, Any]:
        c = self.client()
        local = self.local.client() if self.local is not None else None
        return {"audio": True, "stt_client": local if self.opts.stt == "local" else c,
                "tts_client": local if self.opts.tts == "local" else c}

    def local_kwargs(self) -> dict[str, Any]:
        """The clients of the models a scenario sends to the real local model server."""
        if self.local is None:
            return {}
        local = self.local.client()
        return {**({"stt_client": local} if self.opts.stt == "local" else {}),
                **({"tts_client": local} if self.opts.tts == "local" else {})}

    @property
    def speech_requests(self) -> list[dict[str, Any]]:
        """What the TTS was asked to say (scripted or local, recorded alike)."""
        return self.local.speech_requests if self.local is not None and self.opts.tts == "local" else self.audio.speech_requests

    @property
    def transcriptions(self) -> list[Any]:
        return self.local.transcriptions if self.local is not None and self.opts.stt == "local" else self.audio.transcriptions

    async def aclose(self) -> None:
        await self.mic.aclose()
        await self.output.aclose()
        if self._client is not None:
            await self._client.close()
        if self.local is not None:
            await self.local.aclose()
        dump = os.environ.get("SIM_VOICE_DUMP")
        if dump and self.output.keep_audio and self.output.segments:
            # everything the agent said, to listen to: SIM_VOICE_DUMP=dir uv run pytest sim -k voice
            path = Path(dump) / f"{self.env.scenario.name[:60].replace('/', '_')}-{id(self):x}-agent.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.output.audio_wav())

    def check_session(self, checks: Checks, loc: Loc, record: SessionRecord | None, *, live: bool) -> None:
        check_voice_session(checks, (*loc, "voice"), self.spec.voice, record, live=live,
                            realtime_tail=self.opts.realtime_tail)

    # ------------------------------------------------------------------ conversation

    async def converse(
        self,
        spec: SessionSpec,
        prepared: PreparedSession,
        llm: SessionLLM,
        checks: Checks,
        loc: Loc,
        outcome: SessionOutcome,
        hooks: SessionHooks,
        live: bool,
    ) -> None:
        from sim.harness import SessionHandle

        env = self.env
        if not self._fixtures_ok(spec, checks, loc):
            return
        closed = asyncio.Event()
        current: list[TurnRun | None] = [None]
        session: AgentSession = AgentSession(**voice_session_kwargs(env.services.load_vad(), self.opts))
        self.session = session
        async with session:
            session.input.audio = self.input
            session.output.audio = self.output
            self.log.attach(session)
            prepared.manager.attach(session)
            attach_silence_reprompt(session)
            attach_budget_guard(session, prepared.manager)
            self.guard = ModelUnavailable.attach(session, prepared.manager, env.settings)  # as the entrypoint does
            session.on("close", lambda _ev: closed.set())
            session.on("speech_created", lambda ev: current[0].watch(ev.speech_handle) if current[0] else None)
            handle = SessionHandle(env, spec, session, prepared, llm)

            start = spec.start or StartSpec()
            st = self._begin(start, "start", (*loc, "start"), start.voice or VoiceExpect(), None, llm)
            try:
                st.result = await asyncio.wait_for(session.start(prepared.agent, capture_run=True), RUN_TIMEOUT_S)
            except Exception as e:
                self._fail_run(checks, st, e, llm)
                return
            await self._finish(checks, st, llm, outcome, live)
            if hooks.after_start is not None:
                await hooks.after_start(handle)

            pending: StepState | None = None
            for j, turn in enumerate(spec.turns):
                tloc = (*loc, "turns", j)
                vt = turn.voice or VoiceTurn()
                barge = vt.barge_in_s is not None
                if pending is not None and not barge:
                    await self._complete(checks, pending, llm, outcome, live, hooks, handle)
                    pending = None
                await env.applier.apply_all(checks, (*tloc, "config"), turn.config)
                if closed.is_set():
                    checks.fail(tloc, "the session was already closed before this turn (end_session or an error)",
                                expected=f"user turn {turn.user!r}", actual="session closed")
                    return
                if barge:
                    if pending is None or not await self._barge_point(checks, pending, vt, tloc):
                        if pending is not None:
                            await self._complete(checks, pending, llm, outcome, live, hooks, handle)
                        return
                    self._settle_llm(checks, pending, llm)

                st = self._begin(turn, f"turn {j}", tloc, vt, turn.user, llm)
                st.turn_index = j
                if pending is not None:
                    pending.window.close(self, llm)
                st.run = run = TurnRun(session)
                session._global_run_state = run.rr
                current[0] = run
                llm.script(turn.llm)
                llm.force_tool_choice(turn.tool_choice)
                if self.opts.stt == "scripted":
                    self.audio.transcript(turn.user)
                played = await self._play_turn(turn, vt, st)
                speech = [p for p in played if p.kind == "speech"]
                st.speech_end_wall = speech[-1].end_wall if speech else None
                committed = await self._wait_commit(run, st)
                if not committed:
                    checks.fail(tloc, "the user's turn was never committed: no user message reached the chat "
                                "(VAD did not end the speech, or the STT returned nothing)",
                                expected=f"user message {turn.user!r}", actual="none",
                                context=self.timeline(st))
                    run.release()
                if pending is not None:
                    await self._complete(checks, pending, llm, outcome, live, hooks, handle)
                    pending = None
                if not committed:
                    return
                nxt = spec.turns[j + 1] if j + 1 < len(spec.turns) else None
                if nxt is not None and nxt.voice is not None and nxt.voice.barge_in_s is not None:
                    pending = st
                    continue
                if not await self._complete(checks, st, llm, outcome, live, hooks, handle):
                    return
            if pending is not None:
                await self._complete(checks, pending, llm, outcome, live, hooks, handle)

            outcome.closed_by_agent = await check_closes(checks, spec.closes, closed, loc)
            if hooks.before_close is not None:
                await hooks.before_close(handle)
            await self.mic.aclose()

    # ------------------------------------------------------------------ steps

    def _fixtures_ok(self, spec: SessionSpec, checks: Checks, loc: Loc) -> bool:
        ok = True
        for j, turn in enumerate(spec.turns):
            name = fixture_for(turn)
            if not fixture_path(name).exists():
                ok = False
                checks.fail((*loc, "turns", j, "voice"), f"voice fixture {name}.wav is missing",
                            expected=f"sim/voice/fixtures/{name}.wav saying {(turn.voice and turn.voice.say) or turn.user!r}",
                            actual="no such file: run `uv run python -m sim.voice.make_fixtures` (needs espeak-ng and sox)")
        return ok

    async def _play_turn(self, turn: TurnSpec, vt: VoiceTurn, st: StepState) -> list[PlayedSegment]:
        """The turn's audio: its `before` parts, the fixture, the silence tail."""
        played: list[PlayedSegment] = []
        for k, part in enumerate(vt.before):
            played += await self.mic.play([self._part(part, part.seconds, k)])
            extra = 0.0
            while part.until_agent_spoke and extra < EXTEND_MAX_S and self._spoken_in(st) < part.until_agent_spoke:
                played += await self.mic.play([self._part(part, EXTEND_STEP_S, k + 100 + int(extra * 10))])
                extra += EXTEND_STEP_S
        name = fixture_for(turn)
        speech = Segment.speech(load_fixture(name), name)
        if self.opts.realtime_tail:
            speech.min_wall_s = MIN_SPEECH_WALL_S
        played += await self.mic.play([speech, Segment.silence(self.opts.tail_s, realtime=self.opts.realtime_tail)])
        return played

    @staticmethod
    def _part(part: AudioPart, seconds: float, seed: int) -> Segment:
        if part.silence_s is not None:
            return Segment.silence(seconds)
        return Segment.noise(seconds, part.level_dbfs, seed=part.seed + seed)

    def _spoken_in(self, st: StepState) -> int:
        """Agent messages finished playing since the step began."""
        return sum(1 for s in self.output.segments[st.window.out_from :] if s.finished is not None)

    def _begin(self, step: Step, label: str, loc: Loc, voice: VoiceExpect, user: str | None, llm: SessionLLM) -> StepState:
        st = StepState(label, loc, step, voice, user, StepWindow.open(self, llm))
        self.steps.append(st)
        if not isinstance(step, TurnSpec):
            llm.script(step.llm)
        return st

    async def _wait_commit(self, run: TurnRun, st: StepState) -> bool:
        deadline = time.monotonic() + COMMIT_TIMEOUT_S
        while not self.log.has("user_message", since=st.window.log_from):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await self.log.wait(left)
        # the reply's speech handle is created around the commit: let it be watched first
        until = time.monotonic() + 0.5
        while run.handles == 0 and time.monotonic() < until:
            await self.log.wait(until - time.monotonic())
        run.release()
        return True

    async def _barge_point(self, checks: Checks, prev: StepState, vt: VoiceTurn, tloc: Loc) -> bool:
        """Wait until the previous step's reply has played `barge_in_s` audio seconds."""
        assert vt.barge_in_s is not None
        deadline = time.monotonic() + RUN_TIMEOUT_S
        first = prev.window.out_from
        while True:
            segs = self.output.segments[first:]
            if segs:
                seg = segs[0]
                if seg.finished is not None and seg.finished - seg.started < vt.barge_in_s:
                    checks.fail((*tloc, "voice", "barge_in_s"),
                                "the agent's reply finished playing before the barge-in point",
                                expected=f"a reply still playing {vt.barge_in_s:g}s after it started",
                                actual=f"it played {seg.pushed_s:.2f}s", context=self.timeline(prev))
                    return False
                await self.clock.sleep_until(seg.started + vt.barge_in_s)
                return True
            if time.monotonic() > deadline or (prev.run is not None and prev.run.rr.done()):
                checks.fail((*tloc, "voice", "barge_in_s"), "the agent never started speaking, nothing to barge into",
                            context=self.timeline(prev))
                return False
            await asyncio.sleep(0.005)

    def _settle_llm(self, checks: Checks, st: StepState, llm: SessionLLM) -> None:
        if st.llm_settled or self.env.live is not None:
            st.llm_settled = True
            return
        st.llm_settled = True
        dropped = llm.drop_pending()
        if dropped:
            requests = st.window.requests(llm)
            checks.fail((*st.loc, "llm"), f"{dropped} scripted LLM repl(ies) were never requested in this step",
                        expected=f"{len(st.step.llm)} request(s)", actual=f"{len(requests)} request(s)",
                        context=self.timeline(st))

    async def _complete(self, checks: Checks, st: StepState, llm: SessionLLM, outcome: SessionOutcome,
                        live: bool, hooks: SessionHooks, handle: Any) -> bool:
        assert st.run is not None
        err = await st.run.wait(RUN_TIMEOUT_S)
        st.result = st.run.rr
        if isinstance(err, TimeoutError):
            checks.fail(st.loc, f"{st.label}: the agent's replies did not finish within {RUN_TIMEOUT_S:g}s",
                        expected="every reply played", actual="still running", context=self.timeline(st))
        elif err is not None and "session closed" not in str(err) and not self._model_failed():
            checks.fail(st.loc, f"{st.label} raised {type(err).__name__}", expected="the step to complete",
                        actual=str(err)[:500], context=self.timeline(st))
        await self._finish(checks, st, llm, outcome, live)
        if hooks.after_turn is not None and st.turn_index is not None:
            await hooks.after_turn(handle, st.turn_index)
        return not isinstance(err, TimeoutError)

    def _model_failed(self) -> bool:
        return self.guard is not None and self.guard.outcome is not None

    def _fail_run(self, checks: Checks, st: StepState, e: BaseException, llm: SessionLLM) -> None:
        if self._model_failed():
            return
        checks.fail(st.loc, f"{st.label} raised {type(e).__name__}", expected="the step to complete",
                    actual=str(e)[:500], context=self.timeline(st))

    async def _finish(self, checks: Checks, st: StepState, llm: SessionLLM, outcome: SessionOutcome, live: bool) -> None:
        from sim.harness import StepOutcome

        st.window.close(self, llm)
        self._settle_llm(checks, st, llm)
        requests = st.window.requests(llm)
        if self._model_failed() and not live and script_asks(requests) > len(st.step.llm):
            checks.fail(st.loc, f"{st.label}: the model was asked {script_asks(requests)} time(s) but only "
                        f"{len(st.step.llm)} repl(ies) were scripted (the unanswered request failed, "
                        "which ends the session)", context=self.timeline(st))
        result = st.result
        events = [describe_event(ev) for ev in result.events] if result is not None else []
        outcome.steps.append(StepOutcome(st.label, st.user, (time.perf_counter() - st.t0) * 1000, list(requests), events, result))
        first = self.output.segments[st.window.out_from : st.window.out_to]
        e2e_ms = (first[0].started_wall - st.speech_end_wall) * 1000 if st.speech_end_wall is not None and first else None
        if e2e_ms is not None and st.user is not None:
            self.turn_latencies.append((st.loc, e2e_ms))
        if st.step.within_ms is not None and not live:
            if e2e_ms is not None:
                ms, what = e2e_ms, "end of user speech -> first agent audio"
            else:
                ms = (time.perf_counter() - st.t0) * 1000
                what = f"{st.label} took too long"
            checks.check(ms <= st.step.within_ms, (*st.loc, "within_ms"), what,
                         expected=f"<= {st.step.within_ms:g} ms", actual=f"{ms:.1f} ms")
        if result is not None:
            first_ev = skip_activation(result) if isinstance(st.step, StartSpec) else 0
            await check_events(checks, st.loc, st.step, result, first=first_ev, live=live, judge_llm=self.env.judge_llm)
        elif st.step.expect:
            checks.fail((*st.loc, "expect"), "no run result to check (the step produced nothing)")
        if st.step.llm_received is not None:
            check_llm_received(checks, (*st.loc, "llm_received"), st.step.llm_received, requests, live=live)
        check_voice_step(checks, (*st.loc, "voice"), st.voice, self, st, requests, live=live)
        if self.local is not None and self.opts.tts == "local" and st.voice.audio and result is not None:
            await self._hear_back(checks, st, result)

    async def _hear_back(self, checks: Checks, st: StepState, result: RunResult[Any]) -> None:
        """`tts: local`: each reply the speaker played in full, recognised back by the local
        Whisper, must say the reply's words (within `tts_max_wer`)."""
        assert self.local is not None
        said = [ev.item.text_content or "" for ev in result.events
                if isinstance(ev, ChatMessageEvent) and ev.item.role == "assistant" and ev.item.text_content]
        for k, (text, seg) in enumerate(zip(said, st.window.segments(), strict=False)):
            if seg.interrupted or not seg.pcm:
                continue
            heard = await self.local.recognise(seg.audio, seg.sample_rate)
            rate = wer(text, heard)
            checks.check(rate <= self.opts.tts_max_wer, (*st.loc, "voice", "tts", k),
                         f"the agent's speech, recognised back, does not say its reply (word error rate {rate:.2f})",
                         expected=f"{text!r} (WER <= {self.opts.tts_max_wer:g})", actual=repr(heard))

    # ------------------------------------------------------------------ diagnostics

    def timeline(self, st: StepState) -> str:
        return self.log.render(st.window, self.output)
