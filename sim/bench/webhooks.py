"""Webhook delivery: events per second delivered, session end -> receipt latency, with 1
and 10 endpoints, and turn latency with and without deliveries running.

Run: `uv run python -m sim.bench.webhooks [--events 400] [--rate 20] [--paced-s 10]`

Everything is real but the network distance: a SQLite store in a temp dir, the
dispatcher in a child process as `dev`/`start` run it (`app.webhooks.process`) with
production settings, and a real HTTP
receiver on loopback (`sim.webhook_receiver`) that verifies nothing and answers 200 at
once (verification is the receiver's cost, not ours). Sessions are committed through
the store as the worker commits them (start, two turns, data, finish), so every
`session.ended` is rendered (transcript, collected data validated against the agent's
schema) and signed.

- burst: `--events` sessions end as fast as the store takes them; events/s = events /
  time until the last delivery arrived (deliveries/s = that x endpoints);
- paced: `--rate` session ends per second for `--paced-s` seconds; latency = the
  finish committed -> the request received, p50/p99 over every (event, endpoint);
- turns: scripted sessions through the full sim harness (`pytest sim/`'s path) at
  concurrency 4, per-turn latency p50/p99, while other sessions end at `--rate` per
  second: once with no webhooks, once with each end delivered to 10 endpoints by this
  process's dispatcher (receivers in another process). Deliveries are off the session
  path: the two should match within noise.

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from app.domain import AgentConfigInput, SessionRecord, SessionStatus, Turn
from app.domain.webhooks import DeliveryStatus, WebhookInput
from app.settings import Settings
from app.store import ConfigStore, open_store
from app.webhooks.process import DispatcherProcess
from sim.bench.stats import emit, percentile
from sim.webhook_receiver import WebhookReceiver

AGENT = {
    "agent_id": "bench-agent", "name": "Bench",
    "prompt_config": {"instructions": "You take orders."},
    "schema_config": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
}


async def end_session(store: ConfigStore, sid: str) -> float:
    """One session as the worker records it; returns when its finish committed."""
    await store.start_session(SessionRecord(session_id=sid, room=f"room-{sid}", agent_id="bench-agent",
                                            config_version=1, user_id="bench"))
    await store.append_turn(sid, Turn(seq=0, role="user", text="I'd like to check order A-17."))
    await store.append_turn(sid, Turn(seq=1, role="assistant", text="Order A-17 ships tomorrow."))
    await store.record_data(sid, {"order_id": "A-17"})
    await store.finish_session(sid, SessionStatus.completed, "done")
    return time.monotonic()


SESSIONS_PER_WORKER = 15
"""Per worker (4 at once) in the turn-latency runs, 10 turns each: long enough to sit
inside the delivery flood for several seconds."""


def bench_settings(database_url: str) -> Settings:
    return Settings(_env_file=None, webhook_url_policy="any", database_url=database_url)  # type: ignore[call-arg]


async def delivery_run(endpoints: int, events: int, rate: float, paced_s: float, tmp: Path) -> dict[str, float]:
    url = f"sqlite+aiosqlite:///{tmp}/hooks-{endpoints}.db"
    store = open_store(url)
    await store.start()
    receivers = [WebhookReceiver() for _ in range(endpoints)]
    for rx in receivers:
        await rx.start()
        await store.create_webhook(WebhookInput(url=rx.url, events=["session.ended"]))
    await store.create_agent_config(AgentConfigInput.model_validate(AGENT))
    dispatcher = DispatcherProcess(bench_settings(url), wake_from=store)  # as `dev`/`start` run it
    dispatcher.start()
    try:
        # burst
        t0 = time.monotonic()
        await asyncio.gather(*(end_session(store, f"burst-{i}") for i in range(events)))
        committed = time.monotonic() - t0
        for rx in receivers:
            await rx.wait_for(events, timeout=600)
        burst_s = max(r.at for rx in receivers for r in rx.received) - t0
        for rx in receivers:
            rx.received.clear()

        # paced
        ended: dict[str, float] = {}
        n = int(rate * paced_s)
        start = time.monotonic()
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            ended[f"paced-{i}"] = await end_session(store, f"paced-{i}")
        for rx in receivers:
            await rx.wait_for(n, timeout=600)
        lat = [(r.at - ended[r.json["data"]["session_id"]]) * 1000 for rx in receivers for r in rx.received]
    finally:
        await dispatcher.aclose()
        for rx in receivers:
            await rx.stop()
        await store.aclose()
    return {
        "events_per_s": events / burst_s, "deliveries_per_s": events * endpoints / burst_s,
        "commit_s": committed, "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
        "max_ms": max(lat),
    }


async def turn_latency(with_flood: bool, tmp: Path, rate: float) -> tuple[float, float, int]:
    """Per-turn latency (ms) of scripted sessions through the full harness while other
    sessions end at `rate` per second; with `with_flood`, each of those is also delivered
    to 10 endpoints (receivers in a separate process, so only our side's work is here).
    Returns p50, p99 and how many deliveries arrived meanwhile."""
    import subprocess
    import sys

    from sim.bench.throughput import PRODUCTION, session_spec
    from sim.db_servers import free_port
    from sim.harness import SimEnvironment, run_session
    from sim.report import Checks
    from sim.scenario import Scenario

    scenario = Scenario.model_validate({"name": "webhook-bench", "sessions": [{}]})
    dispatcher: DispatcherProcess | None = None
    receivers: subprocess.Popen[str] | None = None
    async with SimEnvironment(scenario, settings_overrides=PRODUCTION) as env:
        store = env.raw_store
        await store.create_agent_config(AgentConfigInput.model_validate(AGENT))
        if with_flood:
            ports = [free_port() for _ in range(10)]
            receivers = subprocess.Popen([sys.executable, "-m", "sim.webhook_receiver", *map(str, ports)],
                                         stdout=subprocess.PIPE, text=True)
            assert receivers.stdout is not None and receivers.stdout.readline().strip() == "ready"
            for port in ports:
                await store.create_webhook(WebhookInput(url=f"http://127.0.0.1:{port}/hook", events=["session.ended"]))
            dispatcher = DispatcherProcess(bench_settings(env.settings.database_url), wake_from=store)
            dispatcher.start()

        async def pump() -> None:  # other calls ending, in both runs
            i = 0
            while True:
                await end_session(store, f"other-{i}")
                i += 1
                await asyncio.sleep(1 / rate)

        other = asyncio.create_task(pump())
        if with_flood:  # measure once deliveries flow (the dispatcher's process takes seconds to start)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                _, done = await store.list_deliveries(status=DeliveryStatus.succeeded, limit=1)
                if done >= 10:
                    break
                await asyncio.sleep(0.2)
        checks = Checks()
        await run_session(env, session_spec(0, 5, False), checks=checks)  # warm-up
        durations: list[float] = []

        async def worker(k: int) -> None:
            for j in range(SESSIONS_PER_WORKER):
                out = await run_session(env, session_spec(k * 100 + j, 10, False), checks=checks)
                durations.extend(s.duration_ms for s in out.steps if s.user is not None)

        await asyncio.gather(*(worker(k) for k in range(4)))
        other.cancel()
        if dispatcher is not None:
            await dispatcher.aclose()
        delivered = 0
        if receivers is not None:
            receivers.terminate()
            out, _ = receivers.communicate(timeout=10)
            delivered = int(out.split()[-1])
        if checks.failures:
            raise SystemExit("benchmark sessions failed:\n" + "\n".join(f.render() for f in checks.failures[:3]))
    return percentile(durations, 50), percentile(durations, 99), delivered


async def main(events: int, rate: float, paced_s: float) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for endpoints in (1, 10):
            f = await delivery_run(endpoints, events, rate, paced_s, tmp)
            print(f"  {endpoints:2d} endpoint(s): burst of {events} session ends -> {f['events_per_s']:6.1f} events/s "
                  f"({f['deliveries_per_s']:6.1f} deliveries/s; commits took {f['commit_s']:.2f}s); "
                  f"paced {rate:g}/s: session end -> receipt p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, "
                  f"max {f['max_ms']:.1f} ms", flush=True)
            for k in ("events_per_s", "deliveries_per_s", "p50_ms", "p99_ms"):
                figures[f"{k}_{endpoints}ep"] = f[k]
        for flood in (False, True):
            p50, p99, delivered = await turn_latency(flood, tmp, rate)
            label = f"{delivered} deliveries meanwhile" if flood else "no webhooks"
            print(f"  turn latency ({rate:g} other calls end per second), {label}: p50 {p50:.1f} ms, "
                  f"p99 {p99:.1f} ms", flush=True)
            key = "flood" if flood else "idle"
            figures[f"turn_p50_ms_{key}"], figures[f"turn_p99_ms_{key}"] = p50, p99
    figures.update(events=events, rate_per_s=rate, paced_s=paced_s)
    return figures


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400, help="session ends in the burst")
    parser.add_argument("--rate", type=float, default=20.0, help="session ends per second, paced phase")
    parser.add_argument("--paced-s", type=float, default=10.0, help="seconds of the paced phase")
    args = parser.parse_args()
    print("webhook delivery (SQLite store, loopback receiver answering 200)")
    emit(asyncio.run(main(args.events, args.rate, args.paced_s)))


if __name__ == "__main__":
    _cli()
