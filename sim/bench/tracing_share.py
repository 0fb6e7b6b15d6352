"""What share of a traced session's CPU tracing itself takes: CPU time inside the tracing
entry points over the process's CPU time, for text turns and for voice sessions.

Run: `OTEL_EXPORTER_OTLP_ENDPOINT=<receiver> uv run python -m sim.bench.tracing_share [--turns 1200] [--voice-seconds 40]`
(a receiver: `uv run python -m sim.otlp_receiver`, which prints its endpoint)

The entry points, timed by each thread's own CPU clock, the outermost call only:
LiveKit's tracer around a lean tracer (`app.adapters.livekit_agents`: starting a span,
making one current, using one), a lean span's writes and its end
(`app.adapters.opentelemetry_sdk`), a function LiveKit decorated with its tracer, and
the exporter encoding each batch on the export thread (`app.adapters.otlp_exporter`).
Text: `sim.bench.throughput`'s text turns at concurrency 16, after a warm-up. Voice:
`sim.bench.voice_density`'s run of `--voice-sessions` sessions (its warm-up and the
callers-alone run not counted).

Unlike the on/off comparisons (`sim.bench.observability`), this needs no second run to
compare with, so neighbours and the turns' own variance hardly move it. What it leaves out:
the cyclic garbage collector's extra work for the spans' objects, LiveKit's own work to
compute the values it records. Taken off the total, whose uncorrected share is printed
too: the timing's own cost inside each timed call (the thread CPU clock is a system call),
measured on an empty call, and any garbage collection that ran inside a timed call (a full
collection is a lump of a large fraction of a second, over the whole heap, landing in
whichever call allocates at the time; the collector's time with tracing on and off is
`sim.bench.throughput --alternate`'s to compare). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import gc
import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.util._decorator import _AgnosticContextManager

from app.adapters import livekit_agents, opentelemetry_sdk, otlp_exporter
from app.observability import tracing
from app.settings import Settings
from app.worker.tracing import start_tracing
from sim.bench import voice_density
from sim.bench.stats import CollectionTime, emit
from sim.bench.throughput import PRODUCTION, measure
from sim.harness import SimEnvironment
from sim.scenario import Scenario

spent: collections.Counter[str] = collections.Counter()
calls: collections.Counter[str] = collections.Counter()
_inside = threading.local()


def _timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if getattr(_inside, "depth", 0):
            return fn(*args, **kwargs)
        _inside.depth = 1
        t0 = time.thread_time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] += time.thread_time_ns() - t0
            calls[label] += 1
            _inside.depth = 0

    return timed


def instrument() -> None:
    span = opentelemetry_sdk.LeanSpan
    for name in ("set_attribute", "set_attributes", "add_event", "add_link", "end", "set_status",
                 "record_exception", "update_name"):
        setattr(span, name, _timed(f"span.{name}", getattr(span, name)))
    current = opentelemetry_sdk.CurrentSpan
    current.__enter__ = _timed("current_span.enter", current.__enter__)  # type: ignore[method-assign]
    current.__exit__ = _timed("current_span.exit", current.__exit__)  # type: ignore[method-assign]
    for name in ("_lean_start_span", "_lean_current_span", "_lean_used_span"):
        setattr(livekit_agents, name, _timed(f"livekit.{name.removeprefix('_lean_')}", getattr(livekit_agents, name)))
    _AgnosticContextManager.__enter__ = _timed("decorated.enter", _AgnosticContextManager.__enter__)  # type: ignore[method-assign]
    _AgnosticContextManager.__exit__ = _timed("decorated.exit", _AgnosticContextManager.__exit__)  # type: ignore[method-assign]
    otlp_exporter._encode = _timed("export.encode", otlp_exporter._encode)  # type: ignore[assignment]


def clock_cost_ns(rounds: int = 20000) -> float:
    """What one timed call counts that is the timing's own: the thread CPU clock is a
    system call, and the end of one read and the start of the next fall inside the window."""
    empty = _timed("calibration", lambda: None)
    for _ in range(rounds):
        empty()
    cost = spent.pop("calibration") / calls.pop("calibration")
    return cost


def _collected(thread_ns: int) -> None:
    """A collection run inside a timed call: the collector's, counted apart."""
    if getattr(_inside, "depth", 0):
        spent["collections inside"] += thread_ns
        calls["collections inside"] += 1


collections_time = CollectionTime(_collected)


def share(cpu_s: float, clock_ns: float) -> dict[str, Any]:
    inside_s = spent.pop("collections inside", 0) / 1e9
    inside_n = calls.pop("collections inside", 0)
    raw_s = sum(spent.values()) / 1e9
    traced_s = raw_s - sum(calls.values()) * clock_ns / 1e9 - inside_s
    return {"cpu_s": round(cpu_s, 3), "tracing_cpu_s": round(traced_s, 4), "tracing_pct": traced_s / cpu_s * 100,
            "uncorrected_pct": raw_s / cpu_s * 100, "clock_ns_per_call": round(clock_ns),
            "collections_inside_s": round(inside_s, 4), "collections_inside": inside_n,
            "collections_s": round(collections_time.ns / 1e9, 4), "collections": collections_time.collections,
            "by_entry_point_s": {k: round(v / 1e9, 4) for k, v in spent.most_common()},
            "calls": dict(calls)}


async def text(turns: int, provider: Any) -> dict[str, Any]:
    scenario = Scenario.model_validate({"name": "tracing_share", "sessions": [{}]})
    async with SimEnvironment(scenario, settings_overrides=PRODUCTION) as env:
        await measure(env, 50, 25, 2, False)  # warm-up
        gc.collect()
        gc.freeze()  # as worker processes do
        await asyncio.to_thread(provider.force_flush)
        spent.clear()
        calls.clear()
        collections_time.ns = collections_time.collections = 0
        c0 = time.process_time()
        await measure(env, turns, 25, 16, False)
        await asyncio.to_thread(provider.force_flush)
        figures = share(time.process_time() - c0, clock_cost_ns())
    return figures | {"turns": turns, "per_turn_us": figures["tracing_cpu_s"] / turns * 1e6}


def voice(sessions: int, seconds: float, provider: Any) -> dict[str, Any]:
    measured: dict[str, Any] = {}
    run_size = voice_density.run_size

    async def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if kwargs.get("caller_only_s") or args[1] != sessions or not kwargs.get("baseline_rss"):
            return await run_size(*args, **kwargs)  # the warm-up and the callers alone
        spent.clear()
        calls.clear()
        collections_time.ns = collections_time.collections = 0
        c0 = time.process_time()
        result = await run_size(*args, **kwargs)
        await asyncio.to_thread(provider.force_flush)
        measured.update(share(time.process_time() - c0, clock_cost_ns()), session_minutes=round(sessions * seconds / 60, 2))
        return result

    voice_density.run_size = counted  # type: ignore[assignment]
    args = argparse.Namespace(sizes=str(sessions), seconds=seconds, executor="thread", frame_ms=50,
                              input_rate=24000, gc_freeze=True, stt_ms=150, llm_ms=300, tts_ms=100, alternate=0.0)
    try:
        asyncio.run(voice_density.main_async(args))
    finally:
        voice_density.run_size = run_size  # type: ignore[assignment]
    return measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=1200, help="text turns measured")
    ap.add_argument("--voice-sessions", type=int, default=10)
    ap.add_argument("--voice-seconds", type=float, default=40.0, help="audio seconds per voice session")
    args = ap.parse_args()
    provider = start_tracing(Settings(_env_file=None))
    if provider is None:
        raise SystemExit("tracing is off: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. to `uv run python -m sim.otlp_receiver`)")
    instrument()
    figures: dict[str, Any] = {}
    with collections_time:
        figures["text"] = asyncio.run(text(args.turns, provider))
        print(f"text turns: {figures['text']['tracing_pct']:.2f} % of the process's CPU in tracing "
              f"({figures['text']['per_turn_us']:.0f} µs per turn; {figures['text']['uncorrected_pct']:.2f} % "
              f"before taking off {figures['text']['clock_ns_per_call']} ns of clock reads per timed call and "
              f"{figures['text']['collections_inside_s']:.3f} s of collections inside them)", flush=True)
        figures["voice"] = voice(args.voice_sessions, args.voice_seconds, provider)
    print(f"voice sessions: {figures['voice']['tracing_pct']:.2f} % of the process's CPU in tracing "
          f"({figures['voice']['uncorrected_pct']:.2f} % uncorrected)", flush=True)
    tracing.shutdown()
    emit(figures | {"text_tracing_pct": figures["text"]["tracing_pct"],
                    "voice_tracing_pct": figures["voice"]["tracing_pct"]})


if __name__ == "__main__":
    main()
