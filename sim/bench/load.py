"""Sessions and admin traffic at once: 50 concurrent text sessions while 20 clients
hammer the admin API for 30 s (hardening, issue 8 item 5).

Run: `uv run python -m sim.bench.load [--sessions 50] [--clients 20] [--duration 30]`

Server side, in this process, as `python -m app dev` runs it on one event loop: the sim
harness's worker services (SQLite store, config cache) with `--sessions` session slots,
each running real sessions back to back through `sim.harness.run_session` (routing,
AgentFactory, text-mode LiveKit AgentSession, the OpenAI plugin on the scripted
endpoint, SessionManager writing every turn) with a think time between user turns;
and the admin API (`create_app` on the same store and cache) served by uvicorn on
loopback.

Client side, in a separate process (spawn) so it does not share the server's event
loop: `--clients` HTTP clients, each its own connection, loop for `--duration` seconds
over a mix of admin reads and writes — list agents, get one, list sessions, get a
session, the routing table, `/readyz`, and a PATCH with If-Match on a bench-only agent
(a 412 from a concurrent writer is expected and counted, not an error).

Figures: API requests, p50/p99 latency and errors (5xx, transport errors or any status
not expected for the request); sessions, turns, turn latency p50/p99 (one user input to
the reply; the scripted model answers at once, so this is the platform's own time under
load, not a model's), session errors (a failed expectation or exception) and lost turns
(a turn the session answered that is missing from the stored record once the run is
over and buffered writes have landed; a session not `completed` then is an error).
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sim.bench.stats import emit, percentile

ADMIN_KEY = "sim-admin-key"  # sim.harness.ADMIN_KEY
BENCH_AGENT = "load-bench-agent"

# ------------------------------------------------------------------ client side


@dataclass
class ApiLoad:
    base: str
    clients: int
    duration: float
    session_ids: list[str]


@dataclass
class ApiResult:
    requests: int = 0
    latencies: list[float] = field(default_factory=list)
    conflicts: int = 0
    errors: list[str] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)
    kind_latencies: dict[str, list[float]] = field(default_factory=dict)


def hammer_api(spec: ApiLoad) -> ApiResult:
    """Run in a separate process: `spec.clients` clients for `spec.duration` seconds."""
    return asyncio.run(_hammer(spec))


async def _hammer(spec: ApiLoad) -> ApiResult:
    import httpx

    result = ApiResult()
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    deadline = time.monotonic() + spec.duration

    async def one(client: httpx.AsyncClient, kind: str, method: str, url: str, ok: tuple[int, ...],
                  **kw: Any) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            r = await client.request(method, url, **kw)
        except httpx.HTTPError as e:
            result.errors.append(f"{kind}: {type(e).__name__}: {e}")
            return None
        result.latencies.append(time.perf_counter() - t0)
        label = f"{kind} {r.status_code}" if kind == "patch" else kind
        result.kind_latencies.setdefault(label, []).append(result.latencies[-1])
        result.requests += 1
        result.by_kind[kind] = result.by_kind.get(kind, 0) + 1
        if r.status_code == 412 and kind == "patch":
            result.conflicts += 1
        elif r.status_code not in ok:
            result.errors.append(f"{kind} {method} {url}: {r.status_code} {r.text[:200]}")
        return r

    async def client_loop(i: int) -> None:
        rng = random.Random(i)
        async with httpx.AsyncClient(base_url=spec.base, headers=auth, timeout=30) as c:
            version = None
            while time.monotonic() < deadline:
                roll = rng.random()
                if roll < 0.25:
                    await one(c, "list_agents", "GET", "/api/v1/agents/config", (200,), params={"limit": 50})
                elif roll < 0.45:
                    aid = rng.choice(["support-agent-v1", "sales-agent-v1", BENCH_AGENT])
                    await one(c, "get_agent", "GET", f"/api/v1/agents/config/{aid}", (200,))
                elif roll < 0.60:
                    await one(c, "list_sessions", "GET", "/api/v1/sessions", (200,), params={"limit": 20})
                elif roll < 0.70 and spec.session_ids:
                    sid = rng.choice(spec.session_ids)
                    await one(c, "get_session", "GET", f"/api/v1/sessions/{sid}", (200,))
                elif roll < 0.78:
                    await one(c, "routes", "GET", "/api/v1/routes", (200,))
                elif roll < 0.85:
                    await one(c, "readyz", "GET", "/readyz", (200,))
                else:
                    if version is None:
                        r = await one(c, "get_agent", "GET", f"/api/v1/agents/config/{BENCH_AGENT}", (200,))
                        version = r.json()["version"] if r is not None and r.status_code == 200 else None
                        continue
                    r = await one(
                        c, "patch", "PATCH", f"/api/v1/agents/config/{BENCH_AGENT}", (200,),
                        json={"description": f"client {i} at {time.time():.3f}"},
                        headers={"If-Match": f'"{version}"', "Content-Type": "application/merge-patch+json"},
                    )
                    if r is not None and r.status_code in (200, 412):
                        version = int(r.headers["etag"].strip('"'))
                    else:
                        version = None

    await asyncio.gather(*(client_loop(i) for i in range(spec.clients)))
    return result


# ------------------------------------------------------------------ server side


@dataclass
class SessionStats:
    sessions: int = 0
    turns: int = 0
    turn_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lost_turns: int = 0
    lost_fields: int = 0
    session_ids: list[str] = field(default_factory=list)
    expected: dict[str, tuple[list[tuple[str, str]], dict[str, str]]] = field(default_factory=dict)
    deferred_writes: int = 0


FIELDS = [("caller_name", "Ada Lovelace"), ("issue_category", "billing"), ("urgency", "high"),
          ("description", "I was charged twice for the same order.")]


def session_spec(slot: int, n: int, turns: int) -> Any:
    from sim.scenario import SessionSpec

    steps: list[dict[str, Any]] = []
    for t in range(turns):
        reply = f"Noted ({slot}.{n}.{t})."
        if t < len(FIELDS):
            name, value = FIELDS[t]
            steps.append({"user": f"{name} is {value}", "llm": [{"tool": f"record_{name}", "args": {"value": value}},
                                                              {"text": reply}]})
        else:
            steps.append({"user": f"turn {t} of {slot}.{n}", "llm": [{"text": reply}]})
    # The stored record is checked after the run (`verify_records`), once writes a busy
    # store deferred to the process buffer have landed, not by the harness at close.
    return SessionSpec.model_validate({"job_metadata": {"purpose": "support", "user_id": f"load-{slot}-{n}"},
                                       "turns": steps})


async def run_sessions(env: Any, slots: int, duration: float, turns: int, think: tuple[float, float],
                       stats: SessionStats, max_per_slot: int | None = None) -> None:
    from sim.harness import SessionHooks, run_session
    from sim.report import Checks

    deadline = time.monotonic() + duration

    async def slot_loop(slot: int) -> None:
        rng = random.Random(1000 + slot)
        await asyncio.sleep(rng.uniform(0, think[1]))  # stagger the starts

        async def pause(_handle: Any, _j: int) -> None:
            await asyncio.sleep(rng.uniform(*think))

        n = 0
        while time.monotonic() < deadline and (max_per_slot is None or n < max_per_slot):
            spec = session_spec(slot, n, turns)
            checks = Checks()
            try:
                outcome = await run_session(env, spec, checks=checks, loc=("sessions", slot),
                                            hooks=SessionHooks(after_turn=pause))
            except Exception as e:
                stats.errors.append(f"slot {slot} session {n}: {type(e).__name__}: {e}")
                n += 1
                continue
            n += 1
            stats.sessions += 1
            stats.errors += [f.render()[:500] for f in checks.failures]
            steps = [s for s in outcome.steps if s.user is not None and s.result is not None]
            stats.turns += len(steps)
            stats.turn_ms += [s.duration_ms for s in steps]
            if outcome.session_id is None:
                stats.errors.append(f"slot {slot} session {n}: never started")
                continue
            stats.session_ids.append(outcome.session_id)
            said = []
            for turn in spec.turns[: len(steps)]:
                said += [("user", turn.user)] + [("assistant", r.text) for r in turn.llm if r.text]
            stats.expected[outcome.session_id] = (said, dict(FIELDS[: len(steps)]))

    await asyncio.gather(*(slot_loop(i) for i in range(slots)))


async def verify_records(env: Any, stats: SessionStats) -> None:
    """After the run: every acknowledged turn and field stored, every session completed."""
    pending = env.services.pending
    stats.deferred_writes = pending.written + len(pending)
    if not await pending.flush(60):
        stats.errors.append(f"{len(pending)} buffered write(s) still not stored 60 s after the run")
    for sid, (said, fields) in stats.expected.items():
        rec = await env.raw_store.get_session(sid)
        stored = {(t.role, t.text) for t in rec.turns}
        stats.lost_turns += sum(1 for e in said if e not in stored)
        stats.lost_fields += sum(1 for k, v in fields.items() if rec.collected.get(k) != v)
        if rec.status.value != "completed":
            stats.errors.append(f"session {sid}: status {rec.status.value} after the run")


async def main(sessions: int, clients: int, duration: float, turns: int = 6,
               think: tuple[float, float] = (1.0, 4.0)) -> dict[str, Any]:
    from app.api.app import create_app
    from app.domain import AgentConfigInput
    from sim.bench.api import _serve
    from sim.bench.throughput import PRODUCTION
    from sim.harness import SimEnvironment
    from sim.scenario import Scenario

    scenario = Scenario.model_validate({"name": "load", "sessions": [{}]})
    async with SimEnvironment(scenario, settings_overrides=PRODUCTION) as env:
        await env.raw_store.create_agent_config(AgentConfigInput.model_validate({
            "agent_id": BENCH_AGENT, "name": "Load bench target", "prompt_config": {"instructions": "Bench."},
        }))
        served = await _serve(create_app(env.settings, env.store, cache=env.services.cache))
        stats = SessionStats()
        # a few finished sessions first, so the clients have ids to fetch
        await run_sessions(env, 2, 60, 2, (0.0, 0.0), stats, max_per_slot=1)
        seed_ids = list(stats.session_ids)
        stats = SessionStats()
        ctx = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                api_future = loop.run_in_executor(pool, hammer_api, ApiLoad(served.url, clients, duration, seed_ids))
                await run_sessions(env, sessions, duration, turns, think, stats)
                api: ApiResult = await api_future
        finally:
            await served.stop()
        elapsed = time.monotonic() - t0
        await verify_records(env, stats)

    figures: dict[str, Any] = {
        "duration_s": elapsed,
        "think_s": list(think),
        "concurrent_sessions": sessions,
        "api_clients": clients,
        "api_requests": api.requests,
        "api_rps": api.requests / duration,
        "api_p50_ms": percentile(api.latencies, 50) * 1000 if api.latencies else None,
        "api_p99_ms": percentile(api.latencies, 99) * 1000 if api.latencies else None,
        "api_errors": len(api.errors),
        "api_patch_conflicts_412": api.conflicts,
        "sessions": stats.sessions,
        "turns": stats.turns,
        "turn_p50_ms": percentile(stats.turn_ms, 50) if stats.turn_ms else None,
        "turn_p99_ms": percentile(stats.turn_ms, 99) if stats.turn_ms else None,
        "session_errors": len(stats.errors),
        "lost_turns": stats.lost_turns,
        "lost_fields": stats.lost_fields,
        "writes_deferred_to_process_buffer": stats.deferred_writes,
    }
    figures["_api_error_samples"] = api.errors[:5]
    figures["_session_error_samples"] = stats.errors[:5]
    figures["_api_by_kind"] = {
        k: f"{len(v)} req, p50 {percentile(v, 50) * 1000:.0f} ms, p99 {percentile(v, 99) * 1000:.0f} ms"
        for k, v in sorted(api.kind_latencies.items())
    }
    return figures


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50, help="concurrent session slots")
    parser.add_argument("--clients", type=int, default=20, help="concurrent admin API clients")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--turns", type=int, default=6, help="user turns per session")
    parser.add_argument("--think", default="1,4", help="min,max seconds a user takes between turns "
                        "(a voice turn is several seconds of speech; 0.2,1 is a stress test)")
    args = parser.parse_args()
    think = tuple(float(x) for x in args.think.split(","))
    print(f"load: {args.sessions} concurrent sessions ({args.turns} turns each, {think[0]:g}-{think[1]:g}s "
          f"between turns) + {args.clients} admin API clients for {args.duration:g}s; uptime load: {_loadavg()}")
    figures = asyncio.run(main(args.sessions, args.clients, args.duration, args.turns, think))  # type: ignore[arg-type]
    figures["loadavg_1m_after"] = float(_loadavg().split()[0])
    for key in ("_api_error_samples", "_session_error_samples"):
        for line in figures.pop(key):
            print(f"  {key[1:-8]}: {line}")
    for kind, line in figures.pop("_api_by_kind").items():
        print(f"  API {kind:>13}: {line}")
    print(f"  API: {figures['api_requests']} requests, p50 {figures['api_p50_ms']:.1f} ms, "
          f"p99 {figures['api_p99_ms']:.1f} ms, {figures['api_errors']} errors, "
          f"{figures['api_patch_conflicts_412']} expected 412s")
    print(f"  sessions: {figures['sessions']} ({figures['turns']} turns), turn p50 {figures['turn_p50_ms']:.1f} ms, "
          f"p99 {figures['turn_p99_ms']:.1f} ms, {figures['session_errors']} errors, "
          f"{figures['lost_turns']} lost turns, {figures['lost_fields']} lost fields")
    emit(figures)


if __name__ == "__main__":
    _cli()
