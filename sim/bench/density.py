"""Memory per concurrent session: one process (THREAD executor) vs a process per job.

Run: `uv run python -m sim.bench.density [--sizes 1,10,50] [--process-sizes 1,10,50]`

THREAD executor (the default deployment): one process holds every session. This
process builds one worker's services (store, config cache, the shared silero VAD, as
the supervisor does), runs one warm-up session, then for each N opens N concurrent
text sessions through the full harness (routing, factory, SessionManager, LiveKit
AgentSession, plugin LLM), has each talk for two turns and keeps all N open at once,
and reads this process's RSS (after a gc). `per_session_mb` is the slope between the
smallest and the largest N. Sessions here share one event loop, where LiveKit's THREAD
executor gives each job its own thread and loop: thread stacks (mostly untouched
virtual memory) are not counted.

PROCESS executor: like LiveKit's (forkserver on Linux), a fork server preloaded with
the imports forks one process per session; each opens its own store connection, cache
and VAD (as a PROCESS-mode job does), runs the same session and holds it open. The
figure is the sum of the job processes' USS (memory no other process shares: what each
job really adds), over N; the fork server and this parent are not counted.

Ends with one JSON line: `rss_mb_<N>` per size, `per_session_mb`, `baseline_rss_mb`
(before any session), `process_uss_mb_<N>` and `process_per_session_mb`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from sim.bench.stats import emit
from sim.bench.throughput import PRODUCTION
from sim.harness import SessionHandle, SessionHooks, SimEnvironment, run_session
from sim.report import Checks
from sim.scenario import Scenario, SessionSpec

MB = 1024 * 1024
WAVE = 10
"""Job processes started at a time in PROCESS mode."""


def session_spec(i: int) -> SessionSpec:
    return SessionSpec.model_validate({
        "job_metadata": {"purpose": ["support", "sales", "onboarding", "interview"][i % 4], "user_id": f"d-{i}"},
        "turns": [
            {"user": "Hello, I need some help with my account.", "llm": [{"text": "Of course. What's your name?"}]},
            {"user": f"I'm caller number {i}.", "llm": [{"text": "Thanks. How can I help you today?"}]},
        ],
    })


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / MB


async def hold_sessions(env: SimEnvironment, n: int) -> float:
    """Open n sessions, wait until all are open and have talked, measure, close them."""
    opened = 0
    all_open = asyncio.Event()
    release = asyncio.Event()

    async def before_close(_: SessionHandle) -> None:
        nonlocal opened
        opened += 1
        if opened == n:
            all_open.set()
        await release.wait()

    checks = Checks()
    hooks = SessionHooks(before_close=before_close)
    tasks = [asyncio.create_task(run_session(env, session_spec(i), checks=checks, hooks=hooks)) for i in range(n)]
    await asyncio.wait_for(all_open.wait(), 300)
    await asyncio.sleep(0.2)  # let record writes of the last turns settle
    measured = rss_mb()
    release.set()
    await asyncio.gather(*tasks)
    if checks.failures:
        raise SystemExit("sessions failed:\n" + "\n".join(f.render() for f in checks.failures[:5]))
    return measured


async def thread_mode(sizes: list[int]) -> dict[str, Any]:
    scenario = Scenario.model_validate({"name": "density", "sessions": [{}]})
    out: dict[str, Any] = {}
    async with SimEnvironment(scenario, settings_overrides=PRODUCTION) as env:
        env.services.load_vad()
        await hold_sessions(env, 1)  # warm-up: first-use imports and caches
        out["baseline_rss_mb"] = rss_mb()
        print(f"  THREAD: baseline after warm-up: {out['baseline_rss_mb']:.1f} MB RSS", flush=True)
        for n in sizes:
            out[f"rss_mb_{n}"] = await hold_sessions(env, n)
            print(f"  THREAD: {n:3d} concurrent sessions: {out[f'rss_mb_{n}']:.1f} MB RSS", flush=True)
    lo, hi = min(sizes), max(sizes)
    out["per_session_mb"] = (out[f"rss_mb_{hi}"] - out[f"rss_mb_{lo}"]) / (hi - lo) if hi > lo else 0.0
    return out


# ------------------------------------------------------------------ PROCESS mode

LIVEKIT_PRELOAD = ["livekit.plugins.openai", "livekit.plugins.silero"]
"""What LiveKit's worker preloads in its fork server for our app as the supervisor
configures it (the registered plugin packages; no `preload_modules`)..."""
FRAMEWORK_PRELOAD = ["livekit.agents.ipc._preload", "livekit.agents.ipc._preload_freeze"]
"""...followed by LiveKit's own warm-up (av, local inference weights, the rtc library,
the openai SDK resources) and a gc.freeze(), in that order (livekit.agents.worker)."""
APP_PRELOAD = ["sim.bench.density"]
"""Variant: our code (app.worker, the store, the harness) preloaded too, as
`AgentServer(preload_modules=["app.worker.entrypoint"])` would."""


def _job(url: str, index: int, conn: Connection) -> None:
    """One job process: its own services and store connection, one session held open."""

    async def run() -> None:
        scenario = Scenario.model_validate({"name": "job", "store": {"seed": False}, "sessions": [{}]})
        async with SimEnvironment(scenario, database_url=url, settings_overrides=PRODUCTION) as env:

            async def before_close(_: SessionHandle) -> None:
                # No gc.collect() here: a full collection writes to every object the job
                # inherited from the fork server that is not frozen, copying its pages.
                await asyncio.sleep(0.2)
                conn.send("open")
                await asyncio.get_running_loop().run_in_executor(None, conn.recv)

            checks = Checks()
            await run_session(env, session_spec(index), checks=checks, hooks=SessionHooks(before_close=before_close))
            if checks.failures:
                conn.send("failed: " + checks.failures[0].render())

    try:
        asyncio.run(run())
    except Exception as e:  # report instead of leaving the parent waiting
        conn.send(f"failed: {type(e).__name__}: {e}")


def _wait_open(conn: Connection, proc: Any, deadline: float) -> str:
    while time.monotonic() < deadline:
        if conn.poll(0.5):
            return str(conn.recv())
        if not proc.is_alive():
            return f"failed: job process exited with {proc.exitcode}"
    return "failed: timed out waiting for the session to open"


def process_mode(sizes: list[int], preload: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-density-"))
    url = f"sqlite+aiosqlite:///{tmp}/density.db"
    try:

        async def create() -> None:
            async with SimEnvironment(Scenario.model_validate({"name": "seed", "sessions": [{}]}), database_url=url):
                pass  # creates and seeds the shared database file

        asyncio.run(create())
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(preload)
        for n in sizes:
            t0 = time.perf_counter()
            pipes = [ctx.Pipe() for _ in range(n)]
            procs = [ctx.Process(target=_job, args=(url, i, child), daemon=True) for i, (_, child) in enumerate(pipes)]
            deadline = time.monotonic() + 900
            # Jobs arrive in waves, as dispatches do, not 50 in the same millisecond: 50
            # processes opening one SQLite file at once on a small machine exceed its
            # busy timeout (a real limit of PROCESS mode on SQLite; see the report).
            for first in range(0, n, WAVE):
                batch = range(first, min(n, first + WAVE))
                for i in batch:
                    procs[i].start()
                for i in batch:
                    msg = _wait_open(pipes[i][0], procs[i], deadline)
                    if msg != "open":
                        raise SystemExit(f"job process failed: {msg}")
            uss = [psutil.Process(p.pid).memory_full_info().uss / MB for p in procs]
            rss = [psutil.Process(p.pid).memory_info().rss / MB for p in procs]
            for parent, _ in pipes:
                parent.send("close")
            for p in procs:
                p.join(60)
            out[f"process_uss_mb_{n}"] = sum(uss)
            print(f"  PROCESS: {n:3d} job processes: USS sum {sum(uss):8.1f} MB "
                  f"({sum(uss) / n:.1f} MB each; RSS each ~{sum(rss) / n:.0f} MB, mostly shared) "
                  f"[{time.perf_counter() - t0:.1f}s]", flush=True)
        out["process_per_session_mb"] = out[f"process_uss_mb_{max(sizes)}"] / max(sizes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def process_variant(sizes: list[int], variant: str) -> dict[str, Any]:
    """Each variant in a fresh interpreter: a process has one fork server, whose preload
    list is fixed once it has started."""
    cmd = [sys.executable, "-m", "sim.bench.density", "--sizes", "", "--process-sizes",
           ",".join(map(str, sizes)), "--preload", variant]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    for ln in lines[:-1]:
        if ln.startswith("  PROCESS"):
            print(ln.replace("PROCESS:", f"PROCESS ({variant} preload):"), flush=True)
    if proc.returncode != 0 or not lines or not lines[-1].startswith("{"):
        raise SystemExit(f"process variant {variant} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(sizes: list[int], process_sizes: list[int], preload: str | None) -> dict[str, Any]:
    if preload is not None:  # a child run: one PROCESS variant only
        extra = APP_PRELOAD if preload == "app" else []
        return process_mode(process_sizes, LIVEKIT_PRELOAD + extra + FRAMEWORK_PRELOAD)
    figures = asyncio.run(thread_mode(sizes)) if sizes else {}
    if process_sizes:
        figures.update(process_variant(process_sizes, "livekit"))
        app = process_variant(process_sizes, "app")
        figures.update({f"{k}_app_preloaded": v for k, v in app.items()})
    return figures


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_sizes, default=[1, 10, 50])
    parser.add_argument("--process-sizes", type=_sizes, default=[1, 10, 50])
    parser.add_argument("--preload", choices=["livekit", "app"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.preload is None:
        print("memory per concurrent text session", flush=True)
    emit(main(args.sizes, args.process_sizes, args.preload))


if __name__ == "__main__":
    _cli()
