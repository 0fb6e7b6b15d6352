"""Voice density across worker processes: `python -m sim.bench.voice_density --processes N`.

What one machine serves when it runs N worker processes (`WORKER_PROCESSES`), each set
up as `app.worker.process.WorkerRuntime` sets one up: its own store connection to one
shared SQLite file, config cache, VAD model and session writers, `gc.freeze()` after
the warm-up, and `ThreadWorkerLoad` (the load a worker reports to LiveKit). Its
sessions are the single-process bench's (`voice_density.one_session`: production
session start, LiveKit `AgentSession`, the plugins on scripted endpoints, a caller's
microphone and a speaker at real time), each on its own thread and loop as the THREAD
executor runs a job.

Dispatch is LiveKit's: every process reports its load every 0.5 s, and each new session
goes to the process reporting the lowest load (ties: the one given fewest sessions in
this round, as a burst arrives faster than loads are reported). Sessions start spread
over 2 s, as in the single-process bench.

Each process is pinned to a core as `WORKER_CPU_PINNING` pins a worker process
(`--pinning`, default auto: one core each when there are several processes and no CPU
quota below the cores).

Per N (sessions on the whole machine): every process's figures (sessions, cores used,
real-time sessions, late frames, RSS), and the machine's: real-time sessions, frame
lateness (late frames, p99 bound, max), RSS per session (the RSS increase over each
process's own start-up memory, summed, divided by N), session-write latency on the
shared store (each `apply_session_writes` batch, lock waits included: p50/p99/max).
Start-up memory per process (RSS after the warm-up, before any session of a round) is
reported separately. Every garbage-collector pause is timed (a full collection stalls
all of a process's sessions): full collections and the longest pause per N.
`max_realtime_sessions_per_machine` is the largest N where every
session was real-time.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from app.cores import pin_this_process, worker_cpus
from app.seed import seed
from app.settings import Settings
from app.store import open_store
from app.worker.load import ThreadWorkerLoad
from app.worker.services import WorkerServices
from sim.bench.stats import percentile
from sim.bench.voice_density import (
    MB,
    SLOW_VAD,
    VAD_SILENCE_S,
    Delays,
    SessionResult,
    in_thread,
    one_session,
    rss_mb,
    run_size,
    utterances,
)
from sim.voice.audio import INPUT_RATE, resample
from sim.voice.io import PacingStats

LOAD_REPORT_S = 0.5
"""LiveKit's worker status interval."""
START_SPREAD_S = 2.0


# ---------------------------------------------------------------------- the process


class BenchWorker:
    """One worker process of the bench: set up like a `WorkerRuntime`, sessions on command."""

    def __init__(self, opts: dict[str, Any], index: int, conn: Connection) -> None:
        self.opts, self.index, self.conn = opts, index, conn
        self.delays = Delays(opts["stt_ms"] / 1000, opts["llm_ms"] / 1000, opts["tts_ms"] / 1000)
        self.load = ThreadWorkerLoad()
        self.write_latencies: list[float] = []
        self.gc_pauses: list[tuple[int, float]] = []
        self._send_lock = threading.Lock()
        self._gc_t0 = 0.0
        self.fixed_rss = 0.0
        gc.callbacks.append(self._gc_timer)

    def _gc_timer(self, phase: str, info: dict[str, Any]) -> None:
        """Every cyclic-GC pause: while it runs no session of this process runs."""
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            self.gc_pauses.append((info["generation"], time.perf_counter() - self._gc_t0))

    def send(self, msg: dict[str, Any]) -> None:
        with self._send_lock:
            self.conn.send(msg)

    async def run(self) -> None:
        o = self.opts
        self.lines = [(label, resample(pcm, INPUT_RATE, o["input_rate"])) for label, pcm in utterances()]
        settings = Settings(_env_file=None, database_url=o["url"], cache_poll_interval=1.0)  # type: ignore[call-arg]
        store = open_store(o["url"])
        await store.start()
        self._time_writes(store)
        services = self.services = WorkerServices(settings, store)
        await services.start()
        services.load_vad()
        loop = asyncio.get_running_loop()
        # warm-up (the first session pays one-time imports and caches), then the start-up heap leaves the GC
        await run_size(services, 1, min(6.0, o["seconds"]), self.delays, self.lines, "thread", o["frame_ms"],
                       rate=o["input_rate"])
        self.write_latencies.clear()
        if o["gc_freeze"]:
            gc.collect()
            gc.freeze()
        self.fixed_rss = rss_mb()
        self.send({"ready": True, "fixed_rss_mb": self.fixed_rss, "pid": os.getpid(), "cpus": o["cpus"]})
        reporter = asyncio.create_task(self._report_load())
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        loop.add_reader(self.conn.fileno(), lambda: self._read(inbox))
        try:
            while True:
                msg = await inbox.get()
                if msg.get("stop"):
                    break
                if "round" in msg:
                    await self._round(msg, inbox)
        finally:
            reporter.cancel()
            await services.aclose()
            await store.aclose()

    def _read(self, inbox: asyncio.Queue[dict[str, Any]]) -> None:
        try:
            while self.conn.poll():
                inbox.put_nowait(self.conn.recv())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            inbox.put_nowait({"stop": True})

    def _time_writes(self, store: Any) -> None:
        """Time every session-write batch (`apply_session_writes`, the session writers' one
        store call), SQLite's lock waits included; measured on the store's own loop."""
        apply = store.apply_session_writes
        latencies = self.write_latencies

        async def timed(session_id: str, ops: list[Any]) -> None:
            t0 = time.perf_counter()
            try:
                await apply(session_id, ops)
            finally:
                latencies.append(time.perf_counter() - t0)

        store.apply_session_writes = timed

    async def _report_load(self) -> None:
        while True:
            self.send({"load": self.load()})
            await asyncio.sleep(LOAD_REPORT_S)

    async def _round(self, msg: dict[str, Any], inbox: asyncio.Queue[dict[str, Any]]) -> None:
        """One measurement: start sessions as told until told how many there are, report
        when all of them streamed their audio, release them when told, send the figures."""
        o = self.opts
        proc = psutil.Process()
        loop = asyncio.get_running_loop()
        release_fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        lock = threading.Lock()
        opened_n, streamed = 0, 0.0
        expected: int | None = None
        all_open = asyncio.Event()
        futs: list[asyncio.Future[Any]] = []
        cpu0 = wall0 = None
        slow0 = SLOW_VAD.count
        writes0 = len(self.write_latencies)
        gcs0 = len(self.gc_pauses)

        def opened(seconds_streamed: float) -> None:
            nonlocal opened_n, streamed
            with lock:
                opened_n += 1
                streamed += seconds_streamed
            loop.call_soon_threadsafe(check)

        def check() -> None:
            if expected is not None and opened_n >= expected:
                all_open.set()

        def factory(i: int) -> Callable[[], Awaitable[Any]]:
            async def make() -> Any:
                release = asyncio.wrap_future(release_fut)
                return await one_session(self.services, i, o["seconds"], self.delays, self.lines, opened, release,
                                         start_delay=0.0, frame_ms=o["frame_ms"], rate=o["input_rate"])
            return make

        while expected is None:
            m = await inbox.get()
            if "start" in m:
                if cpu0 is None:
                    cpu0, wall0 = proc.cpu_times(), time.perf_counter()
                futs.append(asyncio.wrap_future(in_thread(factory(m["start"]))))
            elif "expected" in m:
                expected = m["expected"]
                check()
        if expected == 0:
            self.send({"opened": True})
            await inbox.get()  # release
            self.send({"result": {"index": self.index, "n": 0, "fixed_rss_mb": self.fixed_rss}})
            return
        await asyncio.wait_for(all_open.wait(), o["seconds"] + 120)
        cpu1, wall1 = proc.cpu_times(), time.perf_counter()
        rss = proc.memory_info().rss / MB  # no gc.collect(): a full collection would stall live sessions
        self.send({"opened": True})
        while "release" not in (await inbox.get()):
            pass
        release_fut.set_result(None)
        results: list[SessionResult] = list(await asyncio.gather(*futs))
        assert cpu0 is not None and wall0 is not None
        cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        wall_s = wall1 - wall0
        pacing = PacingStats()
        for r in results:
            if r.pacing is not None:
                pacing.merge(r.pacing)
        self.send({"result": {
            "index": self.index, "n": len(results), "cpu_s": cpu_s, "wall_s": wall_s, "cores_used": cpu_s / wall_s,
            "session_min": streamed / 60, "rss_mb": rss, "fixed_rss_mb": self.fixed_rss,
            "rss_increase_mb": rss - self.fixed_rss,
            "realtime_sessions": sum(1 for r in results if r.realtime),
            "late_frames": sum(r.late_frames for r in results), "pacing": pacing,
            "speaker_gaps_over_100ms": sum(r.gaps_over for r in results),
            "turns": sum(r.turns for r in results), "missed_turns": sum(r.missed_turns for r in results),
            "latencies_s": [x for r in results for x in r.latencies_s],
            "write_latencies_s": self.write_latencies[writes0:],
            "vad_windows_over_200ms": SLOW_VAD.count - slow0,
            "gc_pauses": self.gc_pauses[gcs0:],  # (generation, seconds)
            "errors": [r.error for r in results if r.error][:3],
        }})


def bench_worker_main(opts: dict[str, Any], index: int, conn: Connection) -> None:
    # as app.worker.process.worker_process_main does, before any thread starts
    opts["cpus"] = pin_this_process(worker_cpus(index, opts["processes"], opts["pinning"]))
    asyncio.run(BenchWorker(opts, index, conn).run())


# ---------------------------------------------------------------------- the machine


class Proc:
    def __init__(self, index: int, proc: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.index, self.proc, self.conn = index, proc, conn
        self.load = 0.0
        self.fixed_rss_mb = 0.0
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def read(self) -> None:
        try:
            while self.conn.poll():
                msg = self.conn.recv()
                if "load" in msg:
                    self.load = msg["load"]
                else:
                    self.inbox.put_nowait(msg)
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self.inbox.put_nowait({"dead": True})

    async def expect(self, key: str, timeout: float) -> dict[str, Any]:
        msg = await asyncio.wait_for(self.inbox.get(), timeout)
        if key not in msg:
            raise RuntimeError(f"bench worker {self.index}: expected {key!r}, got {msg}")
        return msg


async def machine_round(procs: list[Proc], n: int, seconds: float) -> dict[str, Any]:
    assigned = [0] * len(procs)
    for p in procs:
        p.conn.send({"round": n})
    for i in range(n):
        # LiveKit's choice: the lowest reported load; a burst outruns the reports, so ties
        # (and loads within 0.05) go to the process given fewer sessions so far
        target = min(range(len(procs)), key=lambda k: (round(procs[k].load / 0.05), assigned[k], k))
        procs[target].conn.send({"start": i})
        assigned[target] += 1
        await asyncio.sleep(START_SPREAD_S / max(1, n))
    for p, k in zip(procs, assigned, strict=True):
        p.conn.send({"expected": k})
    for p in procs:
        await p.expect("opened", seconds + 180)
    for p in procs:
        p.conn.send({"release": True})
    per = [(await p.expect("result", 120))["result"] for p in procs]
    return summarize(n, per, assigned)


def summarize(n: int, per: list[dict[str, Any]], assigned: list[int]) -> dict[str, Any]:
    active = [r for r in per if r["n"]]
    pacing = PacingStats()
    for r in active:
        pacing.merge(r["pacing"])
    lat = [x for r in active for x in r["latencies_s"]]
    writes = [x for r in active for x in r["write_latencies_s"]]
    cores = sum(r["cores_used"] for r in active)
    session_min = sum(r["session_min"] for r in active)
    out = {
        "n": n,
        "assigned": assigned,
        "cores_used": cores,
        "cpu_s_per_session_min": sum(r["cpu_s"] for r in active) / session_min if session_min else None,
        "realtime_sessions": sum(r["realtime_sessions"] for r in active),
        "late_frames": pacing.late_frames,
        "frames": pacing.frames,
        "late_p99_ms_at_most": pacing.quantile_bound(0.99) * 1000,
        "max_late_ms": pacing.max_late_s * 1000,
        "speaker_gaps_over_100ms": sum(r["speaker_gaps_over_100ms"] for r in active),
        "rss_mb_per_session": sum(r["rss_increase_mb"] for r in active) / n,
        "latency_p50_ms": percentile(lat, 50) * 1000 if lat else None,
        "latency_p99_ms": percentile(lat, 99) * 1000 if lat else None,
        "session_writes": len(writes),
        "session_write_p50_ms": percentile(writes, 50) * 1000 if writes else None,
        "session_write_p99_ms": percentile(writes, 99) * 1000 if writes else None,
        "session_write_max_ms": max(writes) * 1000 if writes else None,
        "turns": sum(r["turns"] for r in active),
        "missed_turns": sum(r["missed_turns"] for r in active),
        "vad_windows_over_200ms": sum(r["vad_windows_over_200ms"] for r in active),
        "gc_full_collections": sum(1 for r in active for g, _ in r["gc_pauses"] if g == 2),
        "gc_max_pause_ms": max((d for r in active for _, d in r["gc_pauses"]), default=0.0) * 1000,
        "errors": [e for r in active for e in r["errors"]][:3],
        "loadavg_1m": os.getloadavg()[0],
        "per_process": [
            {"index": r["index"], "sessions": r["n"], "cores_used": round(r.get("cores_used", 0.0), 3),
             "realtime": r.get("realtime_sessions", 0), "late_frames": r.get("late_frames", 0),
             "rss_mb": round(r.get("rss_mb", r["fixed_rss_mb"]), 1),
             "rss_increase_mb": round(r.get("rss_increase_mb", 0.0), 1)}
            for r in per
        ],
    }
    return out


def show(r: dict[str, Any]) -> None:
    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:.0f}"

    procs = "; ".join(
        f"p{p['index']}: {p['sessions']} sessions, {p['cores_used']:.2f} cores, real-time {p['realtime']}, "
        f"late frames {p['late_frames']}, rss {p['rss_mb']:.0f} MB (+{p['rss_increase_mb']:.0f})"
        for p in r["per_process"]
    )
    print(
        f"  N={r['n']:3d}: real-time {r['realtime_sessions']}/{r['n']} (late frames {r['late_frames']}/{r['frames']}, "
        f"p99 <= {r['late_p99_ms_at_most']:.0f} ms, max {r['max_late_ms']:.0f} ms; speaker gaps>100ms "
        f"{r['speaker_gaps_over_100ms']}), {r['cores_used']:.2f} cores, rss +{r['rss_mb_per_session']:.1f} MB/session, "
        f"latency p50/p99 {ms(r['latency_p50_ms'])}/{ms(r['latency_p99_ms'])} ms, session writes {r['session_writes']} "
        f"p50/p99/max {ms(r['session_write_p50_ms'])}/{ms(r['session_write_p99_ms'])}/{ms(r['session_write_max_ms'])} ms, "
        f"turns {r['turns']} (missed {r['missed_turns']}), full GCs {r['gc_full_collections']} "
        f"(longest GC pause {r['gc_max_pause_ms']:.0f} ms), load {r['loadavg_1m']:.1f}"
        + (f", errors: {r['errors']}" if r["errors"] else "")
        + f"\n         {procs}",
        flush=True,
    )


async def main_processes(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-voice-procs-"))
    url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    store = open_store(url)
    await store.start()
    await seed(store)
    await store.aclose()
    opts = {"url": url, "processes": args.processes, "pinning": args.pinning, "seconds": args.seconds,
            "frame_ms": args.frame_ms, "input_rate": args.input_rate,
            "gc_freeze": args.gc_freeze, "stt_ms": args.stt_ms, "llm_ms": args.llm_ms, "tts_ms": args.tts_ms}
    print(f"voice density across {args.processes} worker process(es): sizes {sizes} sessions per machine, "
          f"{args.seconds:g} s of audio per session, {args.frame_ms} ms frames at {args.input_rate} Hz, scripted "
          f"delays STT {args.stt_ms} + LLM {args.llm_ms} + TTS {args.tts_ms} ms, {psutil.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    ctx = multiprocessing.get_context("spawn")
    loop = asyncio.get_running_loop()
    procs: list[Proc] = []
    results: list[dict[str, Any]] = []
    try:
        for i in range(args.processes):
            parent, child = ctx.Pipe(duplex=True)
            spawned = ctx.Process(target=bench_worker_main, args=(opts, i, child), name=f"bench-worker-{i}")
            spawned.start()
            child.close()
            procs.append(Proc(i, spawned, parent))
            loop.add_reader(parent.fileno(), procs[-1].read)
        pinned: list[list[int] | None] = []
        for p in procs:
            ready = await p.expect("ready", 300)
            p.fixed_rss_mb = ready["fixed_rss_mb"]
            pinned.append(ready["cpus"])
        fixed = [p.fixed_rss_mb for p in procs]
        print(f"  start-up memory per process (after the warm-up, before any session): "
              f"{', '.join(f'{x:.0f}' for x in fixed)} MB; pinned to CPUs: {pinned} "
              f"(WORKER_CPU_PINNING={args.pinning})", flush=True)
        for n in sizes:
            r = await machine_round(procs, n, args.seconds)
            show(r)
            results.append(r)
    finally:
        for p in procs:
            with_suppress_send(p.conn, {"stop": True})
        for p in procs:
            await asyncio.to_thread(p.proc.join, 30)
            if p.proc.is_alive():
                p.proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    passing = [r for r in results if r["realtime_sessions"] == r["n"] and not r["errors"]]
    best = max(passing, key=lambda r: r["n"]) if passing else None
    biggest = max(results, key=lambda r: r["n"])
    at50 = next((r for r in results if r["n"] == 50), None)
    figures: dict[str, Any] = {
        "processes": args.processes,
        "max_realtime_sessions_per_machine": best["n"] if best else 0,
        "max_realtime_is_largest_tried": bool(best and best["n"] == biggest["n"]),
        "cores_at_max_realtime": best["cores_used"] if best else None,
        "rss_mb_per_session": biggest["rss_mb_per_session"],
        "fixed_rss_mb_per_process": sum(fixed) / len(fixed),
        "fixed_rss_mb_total": sum(fixed),
        "late_p99_ms_at_most": (best or biggest)["late_p99_ms_at_most"],
        "max_late_ms": (best or biggest)["max_late_ms"],
        "session_write_p99_ms_at_50": at50["session_write_p99_ms"] if at50 else None,
        "session_write_max_ms_at_50": at50["session_write_max_ms"] if at50 else None,
        "session_write_p99_ms_at_largest": biggest["session_write_p99_ms"],
        "scripted_delay_ms": (args.stt_ms + args.llm_ms + args.tts_ms),
        "vad_silence_ms": VAD_SILENCE_S * 1000,
        "seconds_per_session": args.seconds,
        "gc_freeze": args.gc_freeze,
        "cpu_pinning": args.pinning,
        "pinned_cpus": pinned,
        "loadavg_1m": os.getloadavg()[0],
    }
    for r in results:
        figures[f"n{r['n']}_realtime"] = f"{r['realtime_sessions']}/{r['n']}"
        figures[f"n{r['n']}_assigned"] = "/".join(str(a) for a in r["assigned"])
        figures[f"n{r['n']}_cores_used"] = r["cores_used"]
        figures[f"n{r['n']}_late_frames"] = r["late_frames"]
        figures[f"n{r['n']}_gc_max_pause_ms"] = r["gc_max_pause_ms"]
    return figures


def with_suppress_send(conn: Connection, msg: dict[str, Any]) -> None:
    try:
        conn.send(msg)
    except (OSError, ValueError):
        pass
