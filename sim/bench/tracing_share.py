"""What share of a traced session's CPU tracing itself takes: CPU time inside the tracing
entry points over the process's CPU time, for text turns and for voice sessions; for text
turns also what tracing adds, on against off.

Run: `OTEL_EXPORTER_OTLP_ENDPOINT=<receiver> uv run python -m sim.bench.tracing_share [--turns 1200] [--blocks 6] [--voice-seconds 40]`
(a receiver: `uv run python -m sim.otlp_receiver`, which prints its endpoint)

The entry points, timed by each thread's own CPU clock, the outermost call only:
LiveKit's tracer around a lean tracer (`app.adapters.livekit_agents`: starting a span,
making one current, using one), a lean span's writes and its end
(`app.adapters.opentelemetry_sdk`), a function LiveKit decorated with its tracer, and
the exporter encoding and sending each batch on the export thread
(`app.adapters.otlp_exporter`, the OTLP/HTTP exporter), and an LLM request's first
attempt recorded on its request's span (`livekit_agents._FirstAttempt`).
LiveKit's own telemetry helpers are timed too (`gen_ai`'s attribute setters,
`input_delta`, exception recording): they compute what they record only while a span
records. Text: `sim.bench.throughput`'s text turns at concurrency 16, after a warm-up. Voice:
`sim.bench.voice_density`'s run of `--voice-sessions` sessions (its warm-up and the
callers-alone run not counted).

Tracing off is not free: LiveKit calls its tracer on every turn either way, and with no
provider its tracer still binds each call's arguments, looks up the conversation id and
runs the API's no-op context managers, and its decorated functions still enter theirs. So
text turns run in blocks with LiveKit's tracer switched off and on in this process
(`--blocks` pairs, as `sim.bench.throughput --alternate` does), and the same entry points
are timed in both; what tracing adds to a turn is the time inside them with it on less
the time inside LiveKit's tracer calls with it off (`overhead_pct`, of the traced turns'
CPU). The platform's own spans (one `call` span per session, slow store writes) stay on
in both blocks, as in `throughput --alternate`, and count only on the traced side.

Unlike the on/off comparisons of whole runs (`sim.bench.observability`,
`throughput --alternate`), this times only the calls that differ, so neighbours and the
turns' own variance hardly move it. What it leaves out:
the cyclic garbage collector's extra work for the spans' objects (`throughput --alternate`
compares the collector's time per turn off and on), and what LiveKit computes inline,
outside its helpers, while a span records. Taken off the total, whose uncorrected share is printed
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

from livekit.agents.llm.llm import LLMStream
from livekit.agents.telemetry import gen_ai, input_delta, traces, utils as telemetry_utils
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.trace import NonRecordingSpan, NoOpTracerProvider
from opentelemetry.util._decorator import _AgnosticContextManager

from app.adapters import install_adapters, livekit_agents, opentelemetry_sdk, otlp_exporter
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


def _timed_generator(step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`_timed` for the API's generator context managers, labelled by the generator's function."""
    labelled: dict[Any, Callable[..., Any]] = {}

    @functools.wraps(fn)
    def timed(self: _AgnosticContextManager[Any], *args: Any) -> Any:
        code = self.gen.gi_code
        inner = labelled.get(code)
        if inner is None:
            inner = labelled[code] = _timed(f"decorated.{step} {code.co_qualname}", fn)
        return inner(self, *args)

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
    for name in ("__enter__", "__exit__"):
        setattr(_AgnosticContextManager, name, _timed_generator(name.strip("_"), getattr(_AgnosticContextManager, name)))
    otlp_exporter._encode = _timed("export.encode", otlp_exporter._encode)  # type: ignore[assignment]
    HttpExporter.export = _timed("export", HttpExporter.export)  # type: ignore[method-assign]  # encode and send
    attempt = livekit_agents._FirstAttempt
    for name in ("__init__", "__enter__", "__exit__", "set_attribute", "set_attributes"):
        setattr(attempt, name, _timed(f"first attempt.{name.strip('_')}", getattr(attempt, name)))
    LLMStream._attempt_span = _timed("livekit.attempt_span", LLMStream._attempt_span)  # type: ignore[method-assign]
    # what LiveKit calls whether or not tracing is on (OFF_PATH)
    dynamic = traces._DynamicTracer
    for name in ("start_as_current_span", "start_span", "use_span", "detached_span"):
        setattr(dynamic, name, _timed(f"livekit.tracer.{name}", getattr(dynamic, name)))
    for name in ("set_attribute", "set_attributes", "add_event", "add_link", "end", "set_status",
                 "record_exception", "update_name"):
        setattr(NonRecordingSpan, name, _timed(f"no-op span.{name}", getattr(NonRecordingSpan, name)))
    for name in dir(gen_ai):
        if (name.startswith("set_") and name != "set_capture_content") or name in (
                "track_inference_span", "mark_inference_span_recorded"):
            setattr(gen_ai, name, _timed(f"livekit.gen_ai.{name}", getattr(gen_ai, name)))
    for name in ("compute", "set_attributes"):
        setattr(input_delta, name, _timed(f"livekit.input_delta.{name}", getattr(input_delta, name)))
    telemetry_utils.record_exception = _timed("livekit.record_exception", telemetry_utils.record_exception)


OFF_PATH = ("decorated.", "livekit.", "no-op span.")
"""The labels of what LiveKit spends on its tracer calls with tracing off: what a traced
turn costs is measured less these (the platform's own spans and the exporter stay on)."""


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


async def text(turns: int, blocks: int, provider: Any) -> dict[str, Any]:
    """`blocks` pairs of blocks of text turns, LiveKit's tracer off and on (module doc)."""
    scenario = Scenario.model_validate({"name": "tracing_share", "sessions": [{}]})
    per_block = max(turns // blocks, 25)
    sides: dict[bool, dict[str, Any]] = {
        side: {"cpu_s": 0.0, "spent": collections.Counter(), "calls": collections.Counter(),
               "collections_ns": 0, "collections": 0} for side in (False, True)}
    async with SimEnvironment(scenario, settings_overrides=PRODUCTION) as env:
        await measure(env, 50, 25, 2, False)  # warm-up, traced
        traces.tracer.set_provider(NoOpTracerProvider())
        await measure(env, 50, 25, 2, False)  # and not
        gc.collect()
        gc.freeze()  # as worker processes do
        await asyncio.to_thread(provider.force_flush)
        for block in range(blocks):
            for traced in ((False, True) if block % 2 == 0 else (True, False)):
                traces.tracer.set_provider(provider if traced else NoOpTracerProvider())
                side = sides[traced]
                spent.clear()
                calls.clear()
                collections_time.ns = collections_time.collections = 0
                c0 = time.process_time()
                await measure(env, per_block, 25, 16, False)
                await asyncio.to_thread(provider.force_flush)  # this block's spans, encoded in its time
                side["cpu_s"] += time.process_time() - c0
                side["spent"].update(spent)
                side["calls"].update(calls)
                side["collections_ns"] += collections_time.ns
                side["collections"] += collections_time.collections
        traces.tracer.set_provider(provider)
    measured = per_block * blocks
    clock_ns = clock_cost_ns()
    figures: dict[str, Any] = {}
    for traced, side in sides.items():
        spent.clear()
        calls.clear()
        if traced:
            spent.update(side["spent"])
            calls.update(side["calls"])
        else:  # LiveKit's tracer calls only: the platform's spans and the exporter are on in both
            for label in side["spent"]:
                if label.startswith(OFF_PATH) or label == "collections inside":
                    spent[label], calls[label] = side["spent"][label], side["calls"][label]
        collections_time.ns, collections_time.collections = side["collections_ns"], side["collections"]
        result = share(side["cpu_s"], clock_ns)
        figures["on" if traced else "off"] = result | {
            "per_turn_us": result["tracing_cpu_s"] / measured * 1e6, "cpu_per_turn_us": side["cpu_s"] / measured * 1e6}
    on, off = figures["on"], figures["off"]
    added_us = on["per_turn_us"] - off["per_turn_us"]
    return {"tracing_pct": on["tracing_pct"], "uncorrected_pct": on["uncorrected_pct"],
            "per_turn_us": on["per_turn_us"], "off_per_turn_us": off["per_turn_us"],
            "added_per_turn_us": added_us, "overhead_pct": added_us / on["cpu_per_turn_us"] * 100,
            "clock_ns_per_call": on["clock_ns_per_call"], "collections_inside_s": on["collections_inside_s"],
            "turns": measured, "blocks": blocks, "on": on, "off": off}


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
    ap.add_argument("--turns", type=int, default=1200, help="text turns measured with tracing on (as many off)")
    ap.add_argument("--blocks", type=int, default=6, help="pairs of text blocks, tracing off and on")
    ap.add_argument("--voice-sessions", type=int, default=10)
    ap.add_argument("--voice-seconds", type=float, default=40.0, help="audio seconds per voice session")
    args = ap.parse_args()
    provider = start_tracing(Settings(_env_file=None))
    if provider is None:
        raise SystemExit("tracing is off: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. to `uv run python -m sim.otlp_receiver`)")
    install_adapters()  # before the timing wraps what they patch (as the worker's start would run them)
    instrument()
    figures: dict[str, Any] = {}
    with collections_time:
        t = figures["text"] = asyncio.run(text(args.turns, args.blocks, provider))
        print(f"text turns: {t['tracing_pct']:.2f} % of the process's CPU in tracing "
              f"({t['per_turn_us']:.0f} µs per turn; {t['uncorrected_pct']:.2f} % "
              f"before taking off {t['clock_ns_per_call']} ns of clock reads per timed call and "
              f"{t['collections_inside_s']:.3f} s of collections inside them)", flush=True)
        print(f"  with tracing off, LiveKit's tracer calls took {t['off_per_turn_us']:.0f} µs per turn: tracing adds "
              f"{t['added_per_turn_us']:.0f} µs, {t['overhead_pct']:.2f} % of a traced turn's CPU "
              f"({t['on']['cpu_per_turn_us']:.0f} µs on, {t['off']['cpu_per_turn_us']:.0f} off); the collector, not "
              f"counted in that: {t['off']['collections_s'] / t['turns'] * 1e6:.0f} µs per turn off, "
              f"{t['on']['collections_s'] / t['turns'] * 1e6:.0f} on", flush=True)
        figures["voice"] = voice(args.voice_sessions, args.voice_seconds, provider)
    print(f"voice sessions: {figures['voice']['tracing_pct']:.2f} % of the process's CPU in tracing "
          f"({figures['voice']['uncorrected_pct']:.2f} % uncorrected)", flush=True)
    tracing.shutdown()
    emit(figures | {"text_tracing_pct": figures["text"]["tracing_pct"],
                    "text_overhead_pct": figures["text"]["overhead_pct"],
                    "voice_tracing_pct": figures["voice"]["tracing_pct"]})


if __name__ == "__main__":
    main()
