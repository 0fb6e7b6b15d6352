"""What tracing costs: `sim.bench.throughput` and `sim.bench.voice_density` with tracing
off and on (OTLP/HTTP to a receiver in a process of its own on loopback), `--rounds` times.
Each round runs the off and the on process at the same time (`--paired`, the default), so
a neighbour's load hits both alike; `--no-paired` runs them back to back instead.

Run: `uv run python -m sim.bench.observability [--rounds 3] [--turns 400] [--density-args "--sizes 10 --seconds 20"] [--sample 0.1]`

Then, unless `--alternate 0`, the text figure again inside one process
(`sim.bench.throughput --alternate N`: blocks with tracing off and on, interleaved), which
two processes side by side, however paired, cannot match for noise on a shared machine.

Every call is traced unless `--sample R`: then the "on" process samples a fraction R of
calls (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=R`), as a
deployment that traces a share of its calls would.

Prometheus metrics are recorded in every run (they cannot be turned off; a scrape is a
request like any other): their cost is in both columns. Figures: text turns per CPU-second
at concurrency 16 (throughput) and CPU seconds per session-minute (voice density), the
medians over rounds, and the overhead of "on" in percent of "off" (of the two medians;
and, as `..._paired`, the median of each round's own overhead, which a neighbour's burst
in one round moves less). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
from typing import Any

from sim.bench.stats import emit


def _start(module: str, args: list[str], endpoint: str | None, sample: float | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if endpoint is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
        if sample is not None:
            env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
            env["OTEL_TRACES_SAMPLER_ARG"] = str(sample)
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=subprocess.PIPE, text=True)


def _figures(proc: subprocess.Popen[str], traced: bool) -> dict[str, Any]:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{proc.args!r} failed ({proc.returncode})")
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert figures["tracing"] is traced
    return figures


def _pair(
    module: str, args: list[str], endpoint: str, paired: bool, sample: float | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(off, on) figures of one round."""
    off = _start(module, args, None)
    if not paired:
        off_figures = _figures(off, False)
        return off_figures, _figures(_start(module, args, endpoint, sample), True)
    on = _start(module, args, endpoint, sample)
    return _figures(off, False), _figures(on, True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--turns", type=int, default=400, help="throughput: turns per figure")
    ap.add_argument("--density-args", default="--sizes 10 --seconds 20",
                    help="arguments for sim.bench.voice_density")
    ap.add_argument("--paired", action=argparse.BooleanOptionalAction, default=True,
                    help="run the off and on process of a round at the same time")
    ap.add_argument("--alternate", type=int, default=6, metavar="N",
                    help="pairs of in-process text blocks, tracing off and on (0: skip)")
    ap.add_argument("--sample", type=float, default=None, metavar="R",
                    help="trace a fraction R of calls in the 'on' process (default: every call)")
    args = ap.parse_args()
    rx = subprocess.Popen([sys.executable, "-m", "sim.otlp_receiver"], stdout=subprocess.PIPE, text=True)
    assert rx.stdout is not None
    endpoint = rx.stdout.readline().strip()
    rows: dict[str, dict[str, list[float]]] = {"throughput": {"off": [], "on": []}, "density": {"off": [], "on": []}}
    try:
        for r in range(args.rounds):
            tps = _pair("sim.bench.throughput", ["--turns", str(args.turns)], endpoint, args.paired, args.sample)
            vds = _pair("sim.bench.voice_density", shlex.split(args.density_args), endpoint, args.paired, args.sample)
            for mode, tp, vd in (("off", tps[0], vds[0]), ("on", tps[1], vds[1])):
                rows["throughput"][mode].append(tp["turns_per_cpu_s_c16"])
                rows["density"][mode].append(vd["cpu_s_per_session_min"])
                print(f"round {r + 1} tracing {mode:>3}: text c16 {tp['turns_per_cpu_s_c16']:7.1f} turns/CPU-s, "
                      f"voice {vd['cpu_s_per_session_min']:.3f} CPU-s per session-minute "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
        alternating = None
        if args.alternate:
            alternating = _figures(_start("sim.bench.throughput", ["--turns", str(args.turns), "--alternate",
                                                                   str(args.alternate)], endpoint, args.sample), True)
    finally:
        rx.send_signal(signal.SIGTERM)
        spans = int(rx.communicate(timeout=30)[0].strip().splitlines()[-1])
    tp_off, tp_on = (statistics.median(rows["throughput"][m]) for m in ("off", "on"))
    vd_off, vd_on = (statistics.median(rows["density"][m]) for m in ("off", "on"))
    tp_rounds = [(off / on - 1) * 100 for off, on in zip(rows["throughput"]["off"], rows["throughput"]["on"], strict=True)]
    vd_rounds = [(on / off - 1) * 100 for off, on in zip(rows["density"]["off"], rows["density"]["on"], strict=True)]
    figures = {
        "turns_per_cpu_s_c16_off": tp_off, "turns_per_cpu_s_c16_on": tp_on,
        "throughput_cpu_overhead_pct": (tp_off / tp_on - 1) * 100,  # CPU per turn, on vs off
        "cpu_s_per_session_min_off": vd_off, "cpu_s_per_session_min_on": vd_on,
        "voice_cpu_overhead_pct": (vd_on / vd_off - 1) * 100,
        "throughput_cpu_overhead_pct_paired": statistics.median(tp_rounds),
        "voice_cpu_overhead_pct_paired": statistics.median(vd_rounds),
        "spans_received": spans, "rounds": args.rounds, "paired": args.paired, "sample": args.sample,
        "load": os.getloadavg()[0],
    }
    if alternating is not None:
        figures["text_cpu_overhead_pct_alternating"] = alternating["alternating_text_overhead_pct"]
        print("text, one process, off/on blocks interleaved: "
              + ", ".join(f"{x:+.1f} %" for x in alternating["alternating_pairs_pct"])
              + f"; median {alternating['alternating_text_overhead_pct']:+.1f} %")
    print("per round, on vs off: text " + ", ".join(f"{x:+.1f} %" for x in tp_rounds)
          + "; voice " + ", ".join(f"{x:+.1f} %" for x in vd_rounds))
    print(f"CPU overhead of tracing: text turns {figures['throughput_cpu_overhead_pct']:+.1f} %, "
          f"voice sessions {figures['voice_cpu_overhead_pct']:+.1f} % ({spans} spans exported); "
          f"median of the rounds' own: text {figures['throughput_cpu_overhead_pct_paired']:+.1f} %, "
          f"voice {figures['voice_cpu_overhead_pct_paired']:+.1f} %")
    emit(figures)


if __name__ == "__main__":
    main()
