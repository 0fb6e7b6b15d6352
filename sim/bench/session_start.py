"""Session start latency: our path (warm in-memory cache) vs the seed design's path.

Run: `uv run python -m sim.bench.session_start [--n 1000] [--store sqlite|mongo|postgres] [--text]`

What is timed, per session start, from untrusted metadata to a built agent:

- ours: `app.worker.entrypoint.prepare_session` exactly as the LiveKit entrypoint calls
  it: parse + route the metadata (`determine_agent_type` on the cached routing table),
  take the config from the `ConfigCache` snapshot (fresh: no store round trip), build the
  agent with `AgentFactory` (rendered prompt, schema/built-in tools, LLM, and in voice
  mode, the default, STT and TTS objects; the VAD is the process's shared one), create
  the `SessionRecord` and start the `SessionManager`. Starting the manager only
  *enqueues* the record's first write and creates its writer task: the write itself
  runs after the timed region (nothing in the region yields to the event loop), as it
  runs concurrently with the greeting in production. Each session is closed (record
  finished and flushed, models closed) outside the timed region.
- baseline, the seed design: a NEW store client opened and initialised per session
  (`open_store(url)` + `start()`: engine/client, connection, schema check), then a route
  query and a config query, then the same `AgentFactory` build. Closing that store is
  not timed, and no session record is written, both in the baseline's favour.

`--canary P`: every seeded agent gets a draft version run as a P % canary first, and each
start a distinct `user_id`, so every start picks its arm (a hash of agent and caller, from
the cached snapshot); the JSON adds `canary_percent` and `canary_starts` (how many got
the canary).

Both run in this process on the same store, alternating in blocks of 50 so drift hits
both alike; between blocks (untimed) a gc.collect(), so neither side's garbage is
collected during the other's block. Each side gets a warm-up first. The garbage a side makes itself is collected whenever Python decides,
inside the timing, as in production. Output: p50/p99 of both, the p99 ratio
(baseline / ours) and one JSON line with `p50_ms`, `p99_ms`, `baseline_p50_ms`,
`baseline_p99_ms`, `ratio` and the context (`store`, `n`, `audio`, `fresh_hits`), plus
`p50_cpu_ms`/`p99_cpu_ms`: our path's CPU time on its thread, which unlike the wall
time does not grow when other processes compete for the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Any

from app.agents.context import NullRecorder, SessionContext
from app.agents.factory import AgentFactory
from app.domain.routing import MetadataSource
from app.seed import seed
from app.settings import Settings
from app.store import open_store
from app.worker.services import WorkerServices
from app.worker.session_start import prepare_session
from sim.bench.stats import emit, percentile
from sim.bench.stores import STORES, database
from sim.fake_openai import FakeOpenAI

METADATA = [
    json.dumps({"purpose": "support", "user_id": "u-1"}),
    json.dumps({"purpose": "sales", "variables": {"company_name": "Globex"}}),
    json.dumps({"agent_id": "onboarding-agent-v1"}),
    json.dumps({"purpose": "interview", "variables": {"role": "Data Engineer"}}),
]
BLOCK = 50


CANARY_STARTS = [0]


def _with_caller(meta: str, i: int) -> str:
    doc = json.loads(meta)
    doc["user_id"] = f"caller-{i}"
    return json.dumps(doc)


async def start_canaries(store: Any, percent: int) -> None:
    """A draft of every seeded agent, run as a `percent` % canary."""
    agents, _ = await store.list_agent_configs(limit=100)
    for cfg in agents:
        draft = await store.update_agent_config(cfg.agent_id, {"auto_publish": False, "description": "canary"})
        await store.publish(cfg.agent_id, draft.version, canary_percent=percent)


async def ours(
    services: WorkerServices, meta: str, i: int, audio: bool, client: Any, canary: bool = False
) -> tuple[float, float, bool]:
    """Wall time, this thread's CPU time, and whether the cache was fresh."""
    fresh = services.cache is not None and services.cache.is_fresh()
    if canary:
        meta = _with_caller(meta, i)  # outside the timing: the metadata arrives this way
    sources = [MetadataSource("job", meta), MetadataSource("room", "")]
    c0, t0 = time.thread_time(), time.perf_counter()
    prepared = await prepare_session(services, sources, room=f"bench-{i}", audio=audio, llm_client=client)
    elapsed, cpu = time.perf_counter() - t0, time.thread_time() - c0
    CANARY_STARTS[0] += prepared.record.arm == "canary"
    await prepared.aclose()
    return elapsed, cpu, fresh


async def baseline(url: str, factory: AgentFactory, meta: str, i: int, audio: bool) -> float:
    t0 = time.perf_counter()
    store = open_store(url)
    await store.start()
    doc = json.loads(meta)
    agent_id = doc.get("agent_id") or (await store.get_route(doc["purpose"])).agent_id
    config = await store.get_agent_config(agent_id)
    ctx = SessionContext(session_id=f"b-{i}", room=f"bench-{i}", recorder=NullRecorder(),
                         variables=dict(doc.get("variables") or {}), audio=audio)
    factory.create_agent(config, ctx)
    elapsed = time.perf_counter() - t0
    await store.aclose()
    await ctx.aclose()
    return elapsed


async def main(n: int, kind: str, audio: bool, canary: int | None = None) -> dict[str, Any]:
    async with database(kind) as url:
        store = open_store(url)
        await store.start()
        await seed(store)
        if canary is not None:
            await start_canaries(store, canary)
        settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
        services = WorkerServices(settings, store)
        await services.start()
        services.load_vad()
        client = FakeOpenAI().client()  # never called: building an agent makes no request
        factory = AgentFactory(settings, services.config_source, vad=services.vad, llm_client=client)
        try:
            for i in range(20):  # warm-up: imports, first-use caches, connection pools
                await ours(services, METADATA[i % 4], -1 - i, audio, client, canary is not None)
                await baseline(url, factory, METADATA[i % 4], i, audio)
            ours_s: list[float] = []
            ours_cpu: list[float] = []
            base_s: list[float] = []
            fresh_hits = 0
            CANARY_STARTS[0] = 0
            gc.collect()
            for start in range(0, n, BLOCK):
                # Between blocks, outside the timing: collect the other side's garbage (a
                # baseline session leaves an engine's worth of cycles, which would otherwise
                # be collected in the middle of our block). No idle pause: on this VM the
                # first ~ms of work after even 50 ms of idling runs 10-100x slower.
                gc.collect()
                for i in range(start, min(n, start + BLOCK)):
                    t, cpu, fresh = await ours(services, METADATA[i % 4], i, audio, client, canary is not None)
                    ours_s.append(t)
                    ours_cpu.append(cpu)
                    fresh_hits += fresh
                gc.collect()
                for i in range(start, min(n, start + BLOCK)):
                    base_s.append(await baseline(url, factory, METADATA[i % 4], i, audio))
        finally:
            await client.close()
            await services.aclose()
            await store.aclose()
    ms = [t * 1000 for t in ours_s]
    base_ms = [t * 1000 for t in base_s]
    cpu_ms = [t * 1000 for t in ours_cpu]
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    c50, c99 = percentile(cpu_ms, 50), percentile(cpu_ms, 99)
    b50, b99 = percentile(base_ms, 50), percentile(base_ms, 99)
    print(f"session start, {n} starts, store={kind}, {'voice (LLM+STT+TTS built)' if audio else 'text'} agents"
          + (f", every agent with a {canary}% canary ({CANARY_STARTS[0]} starts on a canary)" if canary else ""))
    print(f"  ours     (cached config, prepare_session): p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   max {max(ms):7.3f} ms")
    print(f"  ours, CPU time of this thread only:         p50 {c50:7.3f} ms   p99 {c99:7.3f} ms"
          f"   (wall minus waiting for a core: other processes on this machine)")
    print(f"  baseline (new store per session + query):  p50 {b50:7.3f} ms   p99 {b99:7.3f} ms   max {max(base_ms):7.3f} ms")
    print(f"  ratio (baseline p99 / ours p99): {b99 / p99:.1f}x   fresh-cache starts: {fresh_hits}/{n}")
    return {
        "p50_ms": p50, "p99_ms": p99, "baseline_p50_ms": b50, "baseline_p99_ms": b99,
        "ratio": b99 / p99, "p50_cpu_ms": c50, "p99_cpu_ms": c99,
        "n": n, "store": kind, "audio": audio, "fresh_hits": fresh_hits,
        "canary_percent": canary, "canary_starts": CANARY_STARTS[0] if canary is not None else None,
    }


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--store", choices=STORES, default="sqlite")
    parser.add_argument("--text", action="store_true", help="text agents (no STT/TTS objects)")
    parser.add_argument("--canary", type=int, metavar="PERCENT", choices=range(1, 100),
                        help="every agent runs a draft as a canary for this share of callers")
    args = parser.parse_args()
    emit(asyncio.run(main(args.n, args.store, not args.text, args.canary)))


if __name__ == "__main__":
    _cli()
