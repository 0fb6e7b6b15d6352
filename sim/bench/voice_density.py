"""Voice density: N concurrent real-time voice sessions in one process.

Run: `uv run python -m sim.bench.voice_density [--sizes 1,10,25,50] [--seconds 25]`
(`--processes N`: the sessions spread over N worker processes as `WORKER_PROCESSES`
runs them, dispatched by reported load; see sim/bench/voice_processes.py)
(`--quick`: sizes 1,10 and 12 s of audio per session; `--frame-ms 20 --input-rate 16000`:
the shape this bench used before it matched LiveKit's RoomIO).

What runs, per session, as a THREAD-executor job does: its own thread and event loop
(`--executor loop` puts every session on one loop instead), the production session
start (`prepare_session`: routing, cached config, `AgentFactory` with `audio=True`,
`SessionManager` writing to a SQLite store through the worker loop), a LiveKit
`AgentSession` with the process's shared silero VAD, VAD turn detection, the
config's `livekit-plugins-openai` LLM, STT and TTS talking to scripted endpoints
(`FakeOpenAI` in process) that hold each answer back by a known delay (`--stt-ms`,
`--llm-ms`, `--tts-ms`), and the sim's audio I/O: a microphone streaming frames at real
time without pause, shaped as LiveKit's `RoomIO` delivers a caller's track by default
(24 kHz mono, 50 ms frames: `--input-rate`, `--frame-ms`; espeak-ng speech from
sim/voice/fixtures resampled to that rate, silence in between) and a speaker playing the
agent's audio at real time. The agent's one VAD stream (`app.agents.audio`) resamples to
silero's 16 kHz, as in a room. The caller waits for the greeting, then speaks a line,
waits for the answer to finish, pauses, speaks the next, until `--seconds` of audio have
streamed. Sessions start spread over 2 s.

`--gc-freeze` (default; `--no-gc-freeze` to turn off): `gc.freeze()` after the
warm-up, as the supervisor does for a THREAD-executor worker
(`app.worker.process.freeze_startup_heap`) and LiveKit's forkserver before forking
PROCESS-executor jobs. Without it a full collection scans every imported object,
100-250 ms during which no session runs, which breaks real time for every session at
once now and then (the usual reason N=25 missed).

Figures, per N and overall:
- latency: end of the caller's speech (the release of the fixture's last frame; the
  fixtures are trimmed to the speech) -> the agent's first audio frame reaching the
  speaker. `overhead` = latency - the scripted delays (STT + LLM + TTS) - the VAD's
  `min_silence_duration` (0.55 s: the VAD waits that long to call the end of speech;
  a setting, not work). LiveKit's own `e2e_latency` is shown alongside;
- real time: a session is real-time if no microphone frame was released more than
  100 ms late and the speaker never ran dry mid-utterance for more than 100 ms;
  `max_realtime_sessions_per_core` = the largest N where every session was real-time,
  divided by the cores the process used at that N (CPU seconds / wall seconds);
- CPU seconds per session-minute of audio, and RSS per session (the RSS increase with
  N sessions open over the process before any, divided by N, at the largest N).

`--alternate W` (with tracing configured by `OTEL_*`) measures what tracing costs a voice
session inside one process instead: one run of the largest size, and while its sessions
talk, LiveKit's tracer is switched between the provider and none every W seconds (off-on,
then on-off, ...), the process's CPU time taken per window; each pair of windows gives an
overhead, `alternating_voice_overhead_pct` is their median. The sessions, their turns and
the machine's neighbours are shared by both sides of every pair, which two processes side
by side (`sim.bench.observability`) cannot match for noise. A span started in one window
may end in the next: the windows are long next to a turn.

The machine is shared: the load average is printed with the figures. Ends with one
JSON line: `cpu_s_per_session_min`, `rss_mb_per_session`, `overhead_p50_ms`,
`overhead_p99_ms`, `max_realtime_sessions_per_core`, and details.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import copy
import gc
import json
import logging
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from app.domain.routing import MetadataSource
from app.observability import tracing
from app.seed import seed
from app.settings import Settings
from app.store import open_store
from app.worker.services import WorkerServices
from app.worker.session_start import prepare_session
from app.worker.silence import attach_silence_reprompt
from app.worker.tracing import start_tracing
from sim.bench.stats import emit, median_interval, percentile
from sim.fake_openai import FakeOpenAI, ScriptedText
from sim.voice.audio import FIXTURES, INPUT_RATE, load_fixture, resample
from sim.voice.clock import SimClock
from sim.voice.io import LATE_S, Mic, PacingStats, Segment, SimAudioInput, SimAudioOutput
from sim.voice.runner import voice_session_kwargs
from sim.voice.spec import VoiceOptions

MB = 1024 * 1024
VAD_SILENCE_S = 0.55
"""silero's default `min_silence_duration` (the process's shared VAD)."""
REPLY = "Thanks, I've noted that. Is there anything else I should know?"
PURPOSES = ["support", "sales", "onboarding", "interview"]


class _SlowVAD(logging.Filter):
    """Counts (and hides) silero's "VAD inference is slower than realtime" warnings: one
    window's inference took over 200 ms, i.e. the process was starved of CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "slower than realtime" in record.getMessage():
            self.count += 1
            return False
        return True


SLOW_VAD = _SlowVAD()
logging.getLogger("livekit.plugins.silero").addFilter(SLOW_VAD)


@dataclass
class Delays:
    stt_s: float
    llm_s: float
    tts_s: float

    @property
    def total_s(self) -> float:
        return self.stt_s + self.llm_s + self.tts_s


@dataclass
class SessionResult:
    index: int
    latencies_s: list[float] = field(default_factory=list)
    livekit_e2e_s: list[float] = field(default_factory=list)
    frames: int = 0
    late_frames: int = 0
    max_late_s: float = 0.0
    gaps_over: int = 0
    max_gap_s: float = 0.0
    turns: int = 0
    missed_turns: int = 0
    error: str | None = None
    pacing: PacingStats | None = None
    gaps: list[float] = field(default_factory=list)

    @property
    def realtime(self) -> bool:
        return self.error is None and self.late_frames == 0 and self.gaps_over == 0


def utterances() -> list[tuple[str, Any]]:
    """(label, pcm) of every committed fixture, in a fixed order."""
    names = sorted(p.stem for p in FIXTURES.glob("*.wav"))
    if not names:
        raise SystemExit("no voice fixtures in sim/voice/fixtures (run python -m sim.voice.make_fixtures)")
    return [(n, load_fixture(n)) for n in names]


async def one_session(
    services: WorkerServices, index: int, seconds: float, delays: Delays, lines: list[tuple[str, Any]],
    opened: Callable[[float], None], release: Awaitable[None] | None, start_delay: float, frame_ms: int = 50,
    rate: int = INPUT_RATE,
) -> SessionResult:
    res = SessionResult(index)
    await asyncio.sleep(start_delay)
    llm = FakeOpenAI([ScriptedText(REPLY)] * 200, model="bench", delays={"chat": delays.llm_s})
    audio = FakeOpenAI(model="bench-audio", delays={"transcriptions": delays.stt_s, "speech": delays.tts_s})
    llm_client, audio_client = llm.client(), audio.client()
    clock = SimClock(1.0)
    mic_in, speaker = SimAudioInput(), SimAudioOutput(clock, keep_audio=False)
    mic = Mic(clock, mic_in, frame_ms=frame_ms, continuous=True, rate=rate)
    meta = json.dumps({"purpose": PURPOSES[index % len(PURPOSES)], "user_id": f"bench-{index}"})
    prepared = await prepare_session(
        services, [MetadataSource("job", meta)], room=f"bench-{index}", audio=True,
        llm_client=llm_client, stt_client=audio_client, tts_client=audio_client,
    )
    from livekit.agents import AgentSession

    session = AgentSession(**voice_session_kwargs(services.load_vad(), VoiceOptions(speed=1.0)))
    try:
        async with session:
            session.input.audio, session.output.audio = mic_in, speaker
            prepared.manager.attach(session)
            attach_silence_reprompt(session)
            session.on("conversation_item_added", lambda ev: _collect_e2e(ev, res))
            mic.start()
            await session.start(prepared.agent)
            t0 = time.perf_counter()
            await _wait_quiet(speaker, first=0, timeout=30)  # the greeting
            k = index
            while time.perf_counter() - t0 < seconds:
                await asyncio.sleep(0.6)
                label, pcm = lines[k % len(lines)]
                k += 1
                audio.transcript(f"utterance {label}")
                seen = len(speaker.segments)
                played = (await mic.play([Segment.speech(pcm, label, rate=rate)]))[0]
                res.turns += 1
                seg = await _first_audio_after(speaker, seen, timeout=15)
                if seg is None:
                    res.missed_turns += 1
                    continue
                res.latencies_s.append(seg.started_wall - played.end_wall)
                await _wait_quiet(speaker, first=seg.index, timeout=30)
            # the measurement window ends here: what follows (other sessions finishing,
            # the RSS reading, teardown) is not the session's real-time behaviour
            res.pacing = copy.deepcopy(mic.pacing)
            res.gaps = [g for s in speaker.segments for g in s.gaps]
            opened(mic.pacing.frames * frame_ms / 1000)
            if release is not None:
                await release
    except Exception as e:  # a broken session is reported, not fatal to the run
        res.error = f"{type(e).__name__}: {e}"
    finally:
        await mic.aclose()
        await speaker.aclose()
        await prepared.aclose()
        await llm_client.close()
        await audio_client.close()
    pacing = res.pacing or mic.pacing
    res.frames, res.late_frames, res.max_late_s = pacing.frames, pacing.late_frames, pacing.max_late_s
    res.pacing = pacing
    res.gaps_over = sum(1 for g in res.gaps if g > LATE_S)
    res.max_gap_s = max(res.gaps, default=0.0)
    return res


def _collect_e2e(ev: Any, res: SessionResult) -> None:
    m = getattr(getattr(ev, "item", None), "metrics", None) or {}
    if "e2e_latency" in m:
        res.livekit_e2e_s.append(float(m["e2e_latency"]))


async def _first_audio_after(speaker: SimAudioOutput, seen: int, timeout: float) -> Any:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if len(speaker.segments) > seen:
            return speaker.segments[seen]
        await asyncio.sleep(0.005)
    return None


async def _wait_quiet(speaker: SimAudioOutput, first: int, timeout: float) -> None:
    """Until the segment `first` (once it exists) and everything after it finished."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        segs = speaker.segments[first:]
        if segs and all(s.finished is not None for s in segs) and not speaker.playing:
            return
        await asyncio.sleep(0.02)


async def caller_only(seconds: float, frame_ms: int, opened: Callable[[float], None], release: Awaitable[None],
                      rate: int = INPUT_RATE) -> PacingStats:
    """The simulated caller alone (microphone streaming at real time into an input
    nobody reads but a drain): its CPU is the harness's, not the agent's."""
    clock = SimClock(1.0)
    mic_in = SimAudioInput()
    mic = Mic(clock, mic_in, frame_ms=frame_ms, continuous=True, rate=rate)

    async def drain() -> None:
        async for _ in mic_in:
            pass

    task = asyncio.create_task(drain())
    mic.start()
    await asyncio.sleep(seconds)
    opened(mic.pacing.frames * frame_ms / 1000)
    await release
    await mic.aclose()
    await task
    return mic.pacing


def in_thread(factory: Callable[[], Awaitable[Any]]) -> concurrent.futures.Future[Any]:
    """Run a coroutine on its own thread and event loop, as LiveKit's THREAD executor runs a job."""
    fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def target() -> None:
        try:
            fut.set_result(asyncio.run(factory()))  # type: ignore[arg-type]
        except BaseException as e:
            fut.set_exception(e)

    threading.Thread(target=target, name="bench-job", daemon=True).start()
    return fut


def runqueue_wait_s() -> float:
    """Seconds this process's threads spent runnable but waiting for a CPU (Linux
    schedstat): how much other processes on a shared machine starved this one."""
    total = 0
    try:
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return 0.0
    return total / 1e9


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / MB


async def run_size(
    services: WorkerServices, n: int, seconds: float, delays: Delays, lines: list[tuple[str, Any]], executor: str,
    frame_ms: int = 50, *, baseline_rss: float | None = None, caller_only_s: float = 0.0, rate: int = INPUT_RATE,
) -> dict[str, Any]:
    """N sessions at once (or, with `caller_only_s`, N simulated callers alone)."""
    proc = psutil.Process()
    main_loop = asyncio.get_running_loop()
    rss0 = rss_mb() if baseline_rss is None else baseline_rss
    all_open = asyncio.Event()
    count = 0
    streamed_s = 0.0
    lock = threading.Lock()
    release_fut: concurrent.futures.Future[None] = concurrent.futures.Future()

    def opened(seconds_streamed: float) -> None:
        nonlocal count, streamed_s
        with lock:
            count += 1
            streamed_s += seconds_streamed
            if count == n:
                main_loop.call_soon_threadsafe(all_open.set)

    cpu0, wall0 = proc.cpu_times(), time.perf_counter()
    slow0, rq0 = SLOW_VAD.count, runqueue_wait_s()

    def factory(i: int) -> Callable[[], Awaitable[Any]]:
        async def make() -> Any:
            release = asyncio.wrap_future(release_fut)  # on the session's own loop
            if caller_only_s:
                return await caller_only(caller_only_s, frame_ms, opened, release, rate)
            return await one_session(services, i, seconds, delays, lines, opened, release,
                                     start_delay=2.0 * i / max(1, n), frame_ms=frame_ms, rate=rate)
        return make

    if executor == "thread":
        futs = [asyncio.wrap_future(in_thread(factory(i))) for i in range(n)]
    else:
        futs = [asyncio.ensure_future(factory(i)()) for i in range(n)]
    await asyncio.wait_for(all_open.wait(), seconds + 120)
    cpu1, wall1 = proc.cpu_times(), time.perf_counter()
    rq1 = runqueue_wait_s()  # threads that ended in the window are not counted: a lower bound
    rss = proc.memory_info().rss / MB  # no gc.collect() here: a full collection would stall live sessions
    release_fut.set_result(None)
    gathered = list(await asyncio.gather(*futs))
    cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    if caller_only_s:
        return {"n": n, "cpu_s_per_session_min": cpu_s / (streamed_s / 60), "cores_used": cpu_s / (wall1 - wall0)}
    results: list[SessionResult] = gathered
    wall_s = wall1 - wall0
    session_min = streamed_s / 60  # audio the microphones streamed, greeting included
    lat = [x for r in results for x in r.latencies_s]
    lk = [x for r in results for x in r.livekit_e2e_s]
    overhead = [x - delays.total_s - VAD_SILENCE_S for x in lat]
    errors = [r.error for r in results if r.error]
    pacing = PacingStats()
    for r in results:
        if r.pacing is not None:
            pacing.merge(r.pacing)
    out = {
        "n": n,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "cores_used": cpu_s / wall_s,
        "cpu_s_per_session_min": cpu_s / session_min,
        "rss_mb": rss,
        "rss_increase_mb": rss - rss0,
        "rss_mb_per_session": (rss - rss0) / n,
        "turns": sum(r.turns for r in results),
        "missed_turns": sum(r.missed_turns for r in results),
        "latency_p50_ms": percentile(lat, 50) * 1000 if lat else None,
        "latency_p99_ms": percentile(lat, 99) * 1000 if lat else None,
        "overhead_p50_ms": percentile(overhead, 50) * 1000 if overhead else None,
        "overhead_p99_ms": percentile(overhead, 99) * 1000 if overhead else None,
        "livekit_e2e_p50_ms": percentile(lk, 50) * 1000 if lk else None,
        "realtime_sessions": sum(1 for r in results if r.realtime),
        "late_frames": sum(r.late_frames for r in results),
        "late_p99_ms_at_most": pacing.quantile_bound(0.99) * 1000,
        "max_late_ms": max(r.max_late_s for r in results) * 1000,
        "speaker_gaps_over_100ms": sum(r.gaps_over for r in results),
        "vad_windows_over_200ms": SLOW_VAD.count - slow0,
        "runqueue_wait_s_per_s": (rq1 - rq0) / wall_s,
        "errors": errors[:3],
        "loadavg_1m": os.getloadavg()[0],
    }
    return out


def show(r: dict[str, Any]) -> None:
    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:.0f}"

    print(
        f"  N={r['n']:3d}: cpu {r['cpu_s_per_session_min']:.2f} s/session-min ({r['cores_used']:.2f} cores), "
        f"rss +{r['rss_mb_per_session']:.1f} MB/session, latency p50/p99 {ms(r['latency_p50_ms'])}/{ms(r['latency_p99_ms'])} ms, "
        f"overhead p50/p99 {ms(r['overhead_p50_ms'])}/{ms(r['overhead_p99_ms'])} ms, LiveKit e2e p50 {ms(r['livekit_e2e_p50_ms'])} ms, "
        f"real-time {r['realtime_sessions']}/{r['n']} (late frames {r['late_frames']}, p99 <= {r['late_p99_ms_at_most']:.0f} ms, "
        f"max {r['max_late_ms']:.0f} ms; "
        f"speaker gaps>100ms {r['speaker_gaps_over_100ms']}; VAD windows >200 ms {r['vad_windows_over_200ms']}), "
        f"turns {r['turns']} (missed {r['missed_turns']}), "
        f"load {r['loadavg_1m']:.1f}, waiting for a CPU {r['runqueue_wait_s_per_s']:.2f} s/s"
        + (f", errors: {r['errors']}" if r["errors"] else ""),
        flush=True,
    )


async def alternate_windows(provider: Any, window_s: float, start_after_s: float, pairs: int) -> list[float]:
    """LiveKit's tracer off and on, window by window, while the sessions run (module doc):
    each pair's CPU overhead of "on" in percent."""
    from livekit.agents.telemetry import traces
    from opentelemetry.trace import NoOpTracerProvider

    await asyncio.sleep(start_after_s)
    overheads: list[float] = []
    try:
        for pair in range(pairs):
            cpu: dict[bool, float] = {}
            for traced in ((False, True) if pair % 2 == 0 else (True, False)):
                traces.tracer.set_provider(provider if traced else NoOpTracerProvider())
                c0 = time.process_time()
                await asyncio.sleep(window_s)
                cpu[traced] = time.process_time() - c0
            overheads.append((cpu[True] / cpu[False] - 1) * 100)
            print(f"  windows {pair + 1}: {cpu[False]:.2f} CPU-s off, {cpu[True]:.2f} on: {overheads[-1]:+.1f} %",
                  flush=True)
    finally:
        traces.tracer.set_provider(provider)
    return overheads


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")]
    delays = Delays(args.stt_ms / 1000, args.llm_ms / 1000, args.tts_ms / 1000)
    lines = [(label, resample(pcm, INPUT_RATE, args.input_rate)) for label, pcm in utterances()]
    tmp = Path(tempfile.mkdtemp(prefix="bench-voice-"))
    url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    store = open_store(url)
    await store.start()
    await seed(store)
    settings = Settings(_env_file=None, database_url=url, cache_poll_interval=1.0)  # type: ignore[call-arg]
    services = WorkerServices(settings, store)
    await services.start()
    services.load_vad()
    print(f"voice density: sizes {sizes}, {args.seconds:g} s of audio per session, executor {args.executor}, "
          f"{args.frame_ms} ms frames at {args.input_rate} Hz, "
          f"scripted delays STT {args.stt_ms} + LLM {args.llm_ms} + TTS {args.tts_ms} ms, "
          f"{psutil.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    results: list[dict[str, Any]] = []
    try:
        rate = args.input_rate
        await run_size(services, 1, min(6.0, args.seconds), delays, lines, args.executor, args.frame_ms, rate=rate)  # warm-up
        baseline = rss_mb()
        if args.gc_freeze:
            # what LiveKit does for PROCESS-executor jobs (livekit.agents.ipc._preload_freeze):
            # the preloaded heap leaves the cyclic GC, whose full collections otherwise scan
            # every imported object (100-250 ms pauses here, stalling every session at once)
            gc.collect()
            gc.freeze()
        if args.alternate:
            n = max(sizes)
            # from the greetings (starts spread over 2 s) to before the first caller hangs up
            start_after, pairs = 4.0, int((args.seconds - 2.0) // (2 * args.alternate))
            if pairs < 1:
                raise SystemExit(f"--seconds {args.seconds:g} leaves no pair of {args.alternate:g} s windows")
            print(f"tracing off and on, alternating every {args.alternate:g} s while {n} sessions talk "
                  f"({pairs} pairs)", flush=True)
            toggler = asyncio.create_task(alternate_windows(tracing.provider(), args.alternate, start_after, pairs))
            r = await run_size(services, n, args.seconds + start_after, delays, lines, args.executor, args.frame_ms,
                               baseline_rss=baseline, rate=rate)
            overheads = await toggler
            show(r)
            low, high = median_interval(overheads)
            print(f"median {statistics.median(overheads):+.1f} % over {len(overheads)} pairs "
                  f"(95 % bootstrap interval {low:+.1f} to {high:+.1f} %)", flush=True)
            return {"alternating_voice_overhead_pct": statistics.median(overheads),
                    "alternating_median_interval_pct": [round(low, 1), round(high, 1)],
                    "alternating_pairs_pct": [round(x, 1) for x in overheads], "n": n,
                    "window_s": args.alternate, "realtime": f"{r['realtime_sessions']}/{n}", "turns": r["turns"],
                    "loadavg_1m": os.getloadavg()[0]}
        callers = await run_size(services, max(sizes), 0, delays, lines, args.executor, args.frame_ms,
                                 caller_only_s=min(8.0, args.seconds), rate=rate)
        print(f"  simulated callers alone (N={max(sizes)}): {callers['cpu_s_per_session_min']:.2f} s/session-min "
              f"({callers['cores_used']:.2f} cores): the harness's share of the figures below", flush=True)
        for n in sizes:
            r = await run_size(services, n, args.seconds, delays, lines, args.executor, args.frame_ms,
                               baseline_rss=baseline, rate=rate)
            show(r)
            results.append(r)
    finally:
        await services.aclose()
        await store.aclose()
        shutil.rmtree(tmp, ignore_errors=True)
    passing = [r for r in results if r["realtime_sessions"] == r["n"] and not r["errors"]]
    best = max(passing, key=lambda r: r["n"]) if passing else None
    biggest = max(results, key=lambda r: r["n"])
    # "keeping up": every turn answered and latency within 1 s of the single session's.
    # Past that the process is saturated and its CPU per session-minute only falls
    # because the work is not being done.
    ref = results[0]["latency_p50_ms"] or 0.0
    keeping_up = [r for r in results if not r["missed_turns"] and r["latency_p50_ms"] is not None
                  and r["latency_p50_ms"] <= ref + 1000]
    steady = max(keeping_up, key=lambda r: r["n"]) if keeping_up else results[0]
    figures: dict[str, Any] = {
        "cpu_s_per_session_min": steady["cpu_s_per_session_min"],
        "rss_mb_per_session": biggest["rss_mb_per_session"],
        "overhead_p50_ms": (best or steady)["overhead_p50_ms"],
        "overhead_p99_ms": (best or steady)["overhead_p99_ms"],
        "max_realtime_sessions_per_core": (best["n"] / max(best["cores_used"], 1e-9)) if best else 0.0,
        "max_realtime_n": best["n"] if best else 0,
        "max_realtime_n_is_largest_tried": bool(best and best["n"] == biggest["n"]),
        "cores_at_max_realtime_n": best["cores_used"] if best else None,
        "largest_n_keeping_up": steady["n"] if keeping_up else 0,
        "projected_sessions_per_core": 60 / steady["cpu_s_per_session_min"],
        "caller_cpu_s_per_session_min": callers["cpu_s_per_session_min"],
        "latency_p50_ms": (best or steady)["latency_p50_ms"],
        "scripted_delay_ms": delays.total_s * 1000,
        "vad_silence_ms": VAD_SILENCE_S * 1000,
        "seconds_per_session": args.seconds,
        "executor": args.executor,
        "frame_ms": args.frame_ms,
        "input_rate": args.input_rate,
        "gc_freeze": args.gc_freeze,
        "loadavg_1m": os.getloadavg()[0],
    }
    for r in results:
        figures[f"n{r['n']}_overhead_p99_ms"] = r["overhead_p99_ms"]
        figures[f"n{r['n']}_realtime"] = f"{r['realtime_sessions']}/{r['n']}"
        figures[f"n{r['n']}_cpu_s_per_session_min"] = r["cpu_s_per_session_min"]
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,10,25,50", help="concurrent sessions per measurement")
    ap.add_argument("--seconds", type=float, default=25.0, help="audio seconds per session (after the greeting)")
    ap.add_argument("--quick", action="store_true", help="sizes 1,10 and 12 s per session")
    ap.add_argument("--executor", choices=["thread", "loop"], default="thread",
                    help="thread: a thread and event loop per session (LiveKit THREAD executor); loop: one shared loop")
    ap.add_argument("--frame-ms", type=int, choices=[10, 20, 50], default=50,
                    help="microphone frame size (default: LiveKit RoomIO's 50 ms)")
    ap.add_argument("--input-rate", type=int, choices=[16000, 24000, 48000], default=24000,
                    help="the caller's track sample rate (default: LiveKit RoomIO's 24 kHz)")
    ap.add_argument("--gc-freeze", action=argparse.BooleanOptionalAction, default=True,
                    help="gc.freeze() after the warm-up, as the supervisor does for THREAD-executor "
                         "workers (app.worker.process.freeze_startup_heap); --no-gc-freeze to see without")
    ap.add_argument("--processes", type=int, default=None, metavar="N",
                    help="run the sessions in N worker processes, set up as WORKER_PROCESSES runs them, "
                         "each new session going to the process reporting the lowest load "
                         "(sim/bench/voice_processes.py); sizes are then sessions per machine")
    ap.add_argument("--pinning", choices=["auto", "on", "off"], default="auto",
                    help="with --processes: pin each process to a core as WORKER_CPU_PINNING does")
    ap.add_argument("--alternate", type=float, default=0.0, metavar="W",
                    help="W-second windows with tracing off and on in one run of the largest size (needs OTEL_*)")
    ap.add_argument("--stt-ms", type=int, default=150)
    ap.add_argument("--llm-ms", type=int, default=300)
    ap.add_argument("--tts-ms", type=int, default=100)
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.seconds = "1,10", 12.0
    if args.processes is not None:
        if args.processes < 1:
            ap.error("--processes must be at least 1")
        from sim.bench.voice_processes import main_processes

        emit(asyncio.run(main_processes(args)))
        return
    traced = start_tracing(Settings(_env_file=None)) is not None  # type: ignore[call-arg]
    print(f"tracing: {'on (OTEL_EXPORTER_OTLP_*)' if traced else 'off'}", flush=True)
    if args.alternate and not traced:
        ap.error("--alternate needs tracing configured: set OTEL_EXPORTER_OTLP_ENDPOINT")
    figures = asyncio.run(main_async(args))
    tracing.shutdown()
    emit(figures | {"tracing": traced})


if __name__ == "__main__":
    main()
