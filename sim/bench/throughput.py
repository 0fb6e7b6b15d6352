"""Scripted conversation turns per second through the full sim harness, in one process.

Run: `uv run python -m sim.bench.throughput [--turns 400] [--per-session 25] [--no-gc-freeze] [--alternate 6]`

Each session is a real one as `pytest sim/` runs it (`sim.harness.run_session`):
routing, cached config, AgentFactory, SessionManager writing the record to SQLite,
a text-mode LiveKit AgentSession, the OpenAI plugin streaming SSE from the in-process
scripted endpoint, and every turn's expectations checked. Sessions are started,
greeted, talked through and closed inside the measured time, so session setup and
record flushing are part of the figure. A turn is one user input answered by the model.

Two workloads at concurrency 1 (sessions one after another) and 16 (16 sessions at a
time, the same total number of turns):
- `text`: each turn is one LLM request answered with text;
- `tool`: each turn is a record-tool call (validated, recorded) and then a text reply,
  two LLM requests.
Ends with one JSON line: `turns_per_s_c1`, `turns_per_s_c16` (text), and the tool
workload as `tool_turns_per_s_c1`, `tool_turns_per_s_c16`. Each also as turns per
CPU-second of this process (`..._per_cpu_s_...`): the process is one event loop, so on
an otherwise idle core the wall figure approaches this one; on a shared machine the
wall figure mostly measures the neighbours.

`--alternate N` (with tracing configured by `OTEL_*`) measures what tracing costs a text
turn inside one process instead: N pairs of blocks of `--turns` text turns at
concurrency 16, LiveKit's tracer switched between the provider and none from block to
block (off-on, then on-off, ...), each "on" block's spans exported within its CPU time.
Both sides share the process, its heap and the hour's neighbours, which two processes
side by side do not; the platform's own spans (one `call` span per session) stay on in
both. Ends with `alternating_text_overhead_pct`, the median of the pairs' overheads (and a
bootstrap interval for it, `alternating_median_interval_pct`), and
the same without the cyclic garbage collector's time on either side
(`alternating_overhead_outside_collections_pct`), with the collector's own time per turn
off and on (medians): a full collection over the sessions' heap is one lump of a large
fraction of a second, two or three per block; set apart, the rest shows how much of the
pairs' scatter was the collector's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from typing import Any

from livekit.agents.telemetry import traces
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider

from app.observability import tracing
from app.settings import Settings
from app.worker.tracing import start_tracing
from sim.bench.stats import CollectionTime, emit, median_interval
from sim.harness import SimEnvironment, run_session
from sim.report import Checks
from sim.scenario import Scenario, SessionSpec

PRODUCTION = {"cache_poll_interval": Settings.model_fields["cache_poll_interval"].default}
"""The worker's cache poll, not the sim's 50 ms (which exists for outage scenarios)."""


def session_spec(index: int, turns: int, tool: bool) -> SessionSpec:
    steps: list[dict[str, Any]] = []
    for t in range(turns):
        reply = f"Noted, thanks ({index}.{t})."
        if tool:
            steps.append({
                "user": f"My name is Caller {index}-{t}.",
                "llm": [{"tool": "record_caller_name", "args": {"value": f"Caller {index}-{t}"}}, {"text": reply}],
                "expect": [
                    {"function_call": {"name": "record_caller_name"}},
                    {"function_output": {"contains": "Recorded caller_name"}},
                    {"message": {"text": reply}},
                ],
            })
        else:
            steps.append({
                "user": f"Turn {t} of session {index}.",
                "llm": [{"text": reply}],
                "expect": [{"message": {"text": reply}}],
            })
    return SessionSpec.model_validate(
        {"job_metadata": {"purpose": "support", "user_id": f"bench-{index}"}, "turns": steps,
         "record": {"status": "completed"}}
    )


async def measure(
    env: SimEnvironment, total_turns: int, per_session: int, concurrency: int, tool: bool
) -> tuple[float, float]:
    """(turns per wall second, turns per CPU second of this process)."""
    sessions = max(1, total_turns // per_session)
    specs = [session_spec(i, per_session, tool) for i in range(sessions)]
    checks = Checks()
    queue: asyncio.Queue[SessionSpec] = asyncio.Queue()
    for spec in specs:
        queue.put_nowait(spec)
    done = 0

    async def worker() -> None:
        nonlocal done
        while not queue.empty():
            spec = queue.get_nowait()
            outcome = await run_session(env, spec, checks=checks)
            done += outcome.turns

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    if checks.failures:
        raise SystemExit("benchmark sessions failed:\n" + "\n".join(f.render() for f in checks.failures[:5]))
    if done != sessions * per_session:
        raise SystemExit(f"only {done} of {sessions * per_session} turns completed")
    return done / elapsed, done / cpu


async def main(total_turns: int, per_session: int, gc_freeze: bool = True) -> dict[str, Any]:
    scenario = Scenario.model_validate({"name": "throughput", "sessions": [{}]})
    figures: dict[str, Any] = {}
    # Production settings: the sim's 50 ms cache poll (for outage scenarios) would add
    # twenty store queries a second that a worker does not make.
    async with SimEnvironment(scenario, settings_overrides=PRODUCTION) as env:
        await measure(env, per_session * 2, per_session, 2, False)  # warm-up
        if gc_freeze:
            # as a worker process does after its warm-up (app/worker/process.py): the
            # start-up heap leaves the cyclic GC, whose full collections would otherwise
            # scan every imported object and weigh on every turn measured
            gc.collect()
            gc.freeze()
        for tool in (False, True):
            for c in (1, 16):
                rate, per_cpu = await measure(env, total_turns, per_session, c, tool)
                prefix = "tool_" if tool else ""
                figures[f"{prefix}turns_per_s_c{c}"] = rate
                figures[f"{prefix}turns_per_cpu_s_c{c}"] = per_cpu
                label = "tool call + text" if tool else "text"
                print(f"  {label:>16} turns, concurrency {c:2d}: {rate:7.1f} turns/s"
                      f"   ({per_cpu:7.1f} turns per CPU-second of this process)", flush=True)
    figures.update(turns=total_turns, per_session=per_session, gc_freeze=gc_freeze)
    return figures


async def alternate(total_turns: int, per_session: int, pairs: int, provider: TracerProvider) -> dict[str, Any]:
    """Text turns with LiveKit's tracer on and off in this process, block by block (module doc)."""
    scenario = Scenario.model_validate({"name": "throughput", "sessions": [{}]})
    overheads: list[float] = []
    without_gc: list[float] = []
    gc_us: dict[bool, list[float]] = {False: [], True: []}
    async with SimEnvironment(scenario, settings_overrides=PRODUCTION) as env:
        await measure(env, per_session * 2, per_session, 2, False)  # warm-up, traced
        gc.collect()
        gc.freeze()  # as worker processes do
        for pair in range(pairs):
            cpu: dict[bool, float] = {}
            collecting: dict[bool, float] = {}
            for traced in ((False, True) if pair % 2 == 0 else (True, False)):
                traces.tracer.set_provider(provider if traced else NoOpTracerProvider())
                gc.collect()  # each block starts from empty generations, whatever the last one left
                with CollectionTime() as collections:
                    c0 = time.process_time()
                    await measure(env, total_turns, per_session, 16, False)
                    if traced:
                        await asyncio.to_thread(provider.force_flush)
                    cpu[traced] = time.process_time() - c0
                collecting[traced] = collections.ns / 1e9
            overheads.append((cpu[True] / cpu[False] - 1) * 100)
            without_gc.append(((cpu[True] - collecting[True]) / (cpu[False] - collecting[False]) - 1) * 100)
            for traced in (False, True):
                gc_us[traced].append(collecting[traced] / total_turns * 1e6)
            print(f"  pair {pair + 1}: {cpu[False] / total_turns * 1e3:.2f} ms CPU per turn off, "
                  f"{cpu[True] / total_turns * 1e3:.2f} on: {overheads[-1]:+.1f} %; collections "
                  f"{gc_us[False][-1]:.0f} and {gc_us[True][-1]:.0f} µs per turn, the rest {without_gc[-1]:+.1f} %",
                  flush=True)
        traces.tracer.set_provider(provider)
    low, high = median_interval(overheads)
    print(f"median {statistics.median(overheads):+.1f} % (95 % bootstrap interval {low:+.1f} to {high:+.1f} %); "
          f"outside collections {statistics.median(without_gc):+.1f} %", flush=True)
    return {"alternating_text_overhead_pct": statistics.median(overheads),
            "alternating_median_interval_pct": [round(low, 1), round(high, 1)],
            "alternating_pairs_pct": [round(x, 1) for x in overheads],
            "alternating_overhead_outside_collections_pct": statistics.median(without_gc),
            "outside_collections_pairs_pct": [round(x, 1) for x in without_gc],
            "collections_us_per_turn_off": statistics.median(gc_us[False]),
            "collections_us_per_turn_on": statistics.median(gc_us[True]),
            "turns": total_turns, "per_session": per_session}


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=400, help="turns per measurement")
    parser.add_argument("--per-session", type=int, default=25, help="turns per session")
    parser.add_argument("--gc-freeze", action=argparse.BooleanOptionalAction, default=True,
                        help="gc.freeze() after the warm-up, as worker processes do")
    parser.add_argument("--alternate", type=int, default=0, metavar="N",
                        help="N pairs of text blocks with tracing off and on in this process (needs OTEL_*)")
    args = parser.parse_args()
    provider = start_tracing(Settings(_env_file=None))
    traced = provider is not None
    print(f"tracing: {'on (OTEL_EXPORTER_OTLP_*)' if traced else 'off'}")
    if args.alternate:
        if provider is None:
            raise SystemExit("--alternate needs tracing configured: set OTEL_EXPORTER_OTLP_ENDPOINT")
        print(f"tracing off and on, alternating in one process ({args.turns} text turns per block)")
        emit(asyncio.run(alternate(args.turns, args.per_session, args.alternate, provider)) | {"tracing": True})
        tracing.shutdown()
        return
    print(f"throughput through the full harness ({args.turns} turns per figure, {args.per_session} per session)")
    emit(asyncio.run(main(args.turns, args.per_session, args.gc_freeze)) | {"tracing": traced})
    tracing.shutdown()


if __name__ == "__main__":
    _cli()
