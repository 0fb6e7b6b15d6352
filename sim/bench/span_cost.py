"""What recording and exporting one LiveKit span costs, apart from everything else a turn does.

Run: `uv run python -m sim.bench.span_cost [--turns 4000] [--repeat 5]`

One traced text turn is five LiveKit spans (`agent_turn` with its event, `llm_node`,
`llm_request`, `llm_request_run`, `agent_speaking`), nested and attributed as LiveKit
Agents records them, written here through LiveKit's own tracer
(`livekit.agents.telemetry.traces.tracer`) in a tight loop, with no model, session or
store around them. Three variants, in this order, in one process:
- `off`: no tracer provider, what every turn pays with tracing off (LiveKit's tracer
  wrapper still binds its arguments);
- `sdk`: the provider `OTEL_EXPORTER_OTLP_ENDPOINT` configures (`app.observability.tracing`:
  call attributes, LiveKit's PII filter, the batch processor exporting OTLP/HTTP to a
  receiver in a process of its own on loopback), the libraries' own code;
- `adapted`: the same after `install_adapters()` (`app/adapters`: LiveKit's tracer
  starting lean spans through direct calls, PII-filtered and encoded on the export thread;
  the PII key test; the OTLP encoder), as the platform runs.
Each figure is the median over `--repeat` blocks of the process's CPU microseconds per
turn: recording, the PII filter, encoding and posting (every 100 turns the loop flushes
the batch itself, so that a tight loop cannot outrun the batch queue), garbage collection
included. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

from livekit.agents.telemetry import traces
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider

from app.adapters import install_adapters
from app.observability import tracing
from sim.bench.stats import emit

SPANS_PER_TURN = 5
FLUSH_EVERY = 100
"""Turns between two exports: ~500 spans, about the batch processor's own batch (512);
a tight loop would otherwise outrun its queue and drop spans."""


def turn(index: int) -> None:
    """One text turn's spans, as LiveKit Agents 1.8 names and attributes them."""
    tracer = traces.tracer
    with tracer.start_as_current_span("agent_turn", attributes={"lk.speech_id": f"speech_{index}"}) as span:
        span.set_attributes({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "SupportAgent",
                             "lk.generation_id": f"gen_{index}", "lk.generation_count": 1})
        span.add_event("speech_scheduled", {"lk.speech.queue_wait": 0.001})
        with tracer.start_as_current_span("llm_node") as node:
            node.set_attributes({"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
                                 "lk.function_tools": ("record_caller_name",), "lk.provider_tools": (),
                                 "lk.tool_sets": ()})
            with tracer.start_as_current_span("llm_request") as request:
                request.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.request.stream": True,
                                        "gen_ai.output.type": "text"})
                with tracer.start_as_current_span("llm_request_run") as run:
                    run.set_attributes({"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
                                        "lk.retry_count": 0})
                request.set_attributes({"gen_ai.response.id": f"chatcmpl-{index}", "gen_ai.response.model": "gpt-4o-mini",
                                        "gen_ai.response.finish_reasons": ("stop",), "gen_ai.usage.input_tokens": 812,
                                        "gen_ai.usage.output_tokens": 9, "gen_ai.response.time_to_first_chunk": 0.21,
                                        "langfuse.observation.completion_start_time": "2026-12-07T12:00:00.210000+00:00",
                                        "lk.llm_metrics": '{"ttft": 0.21, "duration": 0.24, "tokens_per_second": 37.5}'})
            node.set_attribute("lk.response.ttft", 0.21)
        with tracer.start_as_current_span("agent_speaking"):
            pass
        span.set_attribute("lk.interrupted", False)


def block(turns: int, provider: TracerProvider | None, start: int) -> float:
    """CPU microseconds per turn for `turns` turns, exported."""
    gc.collect()
    c0 = time.process_time()
    for i in range(start, start + turns):
        turn(i)
        if provider is not None and i % FLUSH_EVERY == FLUSH_EVERY - 1:
            provider.force_flush()
    if provider is not None:
        provider.force_flush()
    return (time.process_time() - c0) / turns * 1e6


def measure(turns: int, repeat: int, provider: TracerProvider | None) -> float:
    traces.tracer.set_provider(provider if provider is not None else NoOpTracerProvider())
    block(turns // 4, provider, 0)  # warm-up
    return statistics.median(block(turns, provider, (r + 1) * turns) for r in range(repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=4000, help="turns per block")
    ap.add_argument("--repeat", type=int, default=5, help="blocks per variant")
    args = ap.parse_args()
    rx = subprocess.Popen([sys.executable, "-m", "sim.otlp_receiver"], stdout=subprocess.PIPE, text=True)
    assert rx.stdout is not None
    endpoint = rx.stdout.readline().strip()
    try:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint  # the exporter reads it from the environment
        provider = tracing.configure()
        assert provider is not None
        traces.set_tracer_provider(provider, allow_pii=False)  # as app.worker.tracing does: the PII filter first
        gc.collect()
        gc.freeze()  # as a worker process does after its warm-up
        rows: dict[str, float] = {"off": measure(args.turns, args.repeat, None),
                                             "sdk": measure(args.turns, args.repeat, provider)}
        install_adapters()
        rows["adapted"] = measure(args.turns, args.repeat, provider)
        tracing.shutdown()
    finally:
        rx.send_signal(signal.SIGTERM)
        spans = int(rx.communicate(timeout=30)[0].strip().splitlines()[-1])
    recorded = (args.turns // 4 + args.turns * args.repeat) * 2 * SPANS_PER_TURN
    if spans != recorded:
        raise SystemExit(f"the receiver got {spans} spans of {recorded}: figures without their export")
    figures: dict[str, Any] = {"spans_received": spans, "turns": args.turns, "repeat": args.repeat}
    off = rows["off"]
    for name, us in rows.items():
        figures[f"{name}_us_per_turn"] = us
        extra = "" if name == "off" else (
            f": tracing adds {us - off:6.1f} µs per turn, {(us - off) / SPANS_PER_TURN:5.1f} per span")
        print(f"{name:>8}: {us:7.1f} µs CPU per turn{extra}", flush=True)
        if name != "off":
            figures[f"{name}_added_us_per_span"] = (us - off) / SPANS_PER_TURN
    emit(figures)


if __name__ == "__main__":
    main()
