"""Admin API throughput and latency, against a Litestar hello-world in the same app.

Run: `uv run python -m sim.bench.api [--store sqlite|mongo|postgres] [--get-n 2000] [--patch-n 500]`

What it does: builds the real app (`create_app` around the store `--store` names:
a temporary SQLite file by default, or a MongoDB / PostgreSQL server started for the
run, see `sim.bench.stores`; one seeded agent), adds a hello-world GET to the *same* app through
`extra_route_handlers`, and serves it with uvicorn on loopback as a task in this
process (the way the supervisor embeds it). It then measures, at concurrency 1 and
32 and for a fixed request count:

- `hello`: `GET /bench/hello` (no auth, no store) - the framework's floor;
- `get`:   `GET /api/v1/agents/config/{id}` (auth guard, DI, a store read, JSON);
- `get+cache`: the same GET on a second app given the worker's `ConfigCache`
  (`create_app(..., cache=...)`), which answers from memory while the cache is fresh;
- `patch`: `PATCH /api/v1/agents/config/{id}` without If-Match (a real write: new
  version row, head update, epoch bump, each in its own transaction).

Fairness: the load generator (httpx.AsyncClient, one single-connection client per
concurrent worker) runs in a *separate process* (multiprocessing, spawn) so it does
not steal the server's event loop; the server process does nothing but serve while a
run is in flight. On a small machine the Python client can still be the bottleneck,
which would flatter the ratio, so the server's own CPU time per request
(process_time of this process over the run: the event loop plus the driver's threads;
a MongoDB or PostgreSQL server's own CPU is in its own process and not counted)
is reported too: `get_cpu_ratio` = hello CPU per request / GET CPU per request is the
client-independent comparison.

Output: a table, the GET/hello ratios, then one JSON line; keys without a suffix are
at the highest concurrency (32), `_c1` keys at concurrency 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from sim.bench.stores import STORES, database

ADMIN_KEY = "bench-admin-key"
AGENT_ID = "bench-agent"
HELLO_PATH = "/bench/hello"


@dataclass
class LoadSpec:
    base_url: str
    method: str
    path: str
    n: int
    concurrency: int
    headers: dict[str, str]
    body: bytes | None = None


@dataclass
class LoadResult:
    elapsed: float
    latencies: list[float]
    statuses: dict[int, int]


# ------------------------------------------------------------ client (child process)


def run_load(spec: LoadSpec) -> LoadResult:
    """Entry point in the load-generator process."""
    return asyncio.run(_load(spec))


async def _load(spec: LoadSpec) -> LoadResult:
    import httpx

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    remaining = spec.n

    # One single-connection client per worker: httpx's shared pool serialises its
    # bookkeeping and degrades sharply with many connections, which would measure
    # the client rather than the server.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [
        httpx.AsyncClient(base_url=spec.base_url, headers=spec.headers, limits=limits)
        for _ in range(spec.concurrency)
    ]

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            r = await client.request(spec.method, spec.path, content=spec.body)
            latencies.append(time.perf_counter() - t0)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        elapsed = time.perf_counter() - started
    finally:
        for c in clients:
            await c.aclose()
    return LoadResult(elapsed, latencies, statuses)


# ------------------------------------------------------------------- server side


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    server: Any
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def _serve(app: Any) -> Served:
    """uvicorn on a free loopback port, as a task in this loop (as the supervisor runs it)."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return Served(f"http://127.0.0.1:{port}", server, task)


@dataclass
class Row:
    name: str
    concurrency: int
    n: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # server CPU per request
    errors: int


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(
    pool: ProcessPoolExecutor, name: str, spec: LoadSpec, expected: int = 200, warmup: int = 100
) -> Row:
    loop = asyncio.get_running_loop()
    warm = LoadSpec(**{**spec.__dict__, "n": min(warmup, spec.n), "concurrency": spec.concurrency})
    await loop.run_in_executor(pool, run_load, warm)
    cpu0 = time.process_time()
    result: LoadResult = await loop.run_in_executor(pool, run_load, spec)
    cpu = time.process_time() - cpu0
    errors = sum(c for s, c in result.statuses.items() if s != expected)
    return Row(
        name=name,
        concurrency=spec.concurrency,
        n=spec.n,
        rps=spec.n / result.elapsed,
        p50_ms=statistics.median(result.latencies) * 1000,
        p99_ms=_percentile(result.latencies, 0.99) * 1000,
        cpu_us=cpu / spec.n * 1e6,
        errors=errors,
    )


async def main(get_n: int, patch_n: int, concurrencies: list[int], kind: str = "sqlite") -> dict[str, Any]:
    from litestar import get
    from pydantic import SecretStr

    from app.api import create_app
    from app.domain import AgentConfigInput
    from app.settings import Settings
    from app.store import open_store
    from app.store.cache import ConfigCache

    @get(HELLO_PATH, sync_to_thread=False)
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    async with database(kind) as url:
        store = open_store(url)
        await store.start()
        await store.create_agent_config(
            AgentConfigInput.model_validate(
                {
                    "agent_id": AGENT_ID,
                    "name": "Bench agent",
                    "prompt_config": {
                        "instructions": "You help {customer} with their order.",
                        "variables": {"customer": {"default": "there"}},
                    },
                    "schema_config": {
                        "type": "object",
                        "properties": {"email": {"type": "string"}, "order_id": {"type": "string"}},
                        "required": ["email"],
                    },
                }
            )
        )
        settings = Settings(_env_file=None, admin_api_key=SecretStr(ADMIN_KEY))  # type: ignore[call-arg]
        cache = ConfigCache(store, poll_interval=settings.cache_poll_interval)
        await cache.start()
        # Two apps on one store: the default (every read hits the store) and one given
        # the worker's config cache, as the supervisor can wire it.
        plain = await _serve(create_app(settings, store, extra_route_handlers=[hello]))
        cached = await _serve(create_app(settings, store, cache=cache, extra_route_handlers=[hello]))

        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        item = f"/api/v1/agents/config/{AGENT_ID}"
        patch_headers = {**auth, "Content-Type": "application/merge-patch+json"}
        patch_body = json.dumps({"description": "benchmarked"}).encode()
        rows: list[Row] = []
        ctx = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                for c in concurrencies:
                    runs = [
                        ("hello", LoadSpec(plain.url, "GET", HELLO_PATH, get_n, c, {})),
                        ("get", LoadSpec(plain.url, "GET", item, get_n, c, auth)),
                        ("get+cache", LoadSpec(cached.url, "GET", item, get_n, c, auth)),
                    ]
                    for name, spec in runs:
                        rows.append(await _measure(pool, name, spec))
                    patch = LoadSpec(plain.url, "PATCH", item, patch_n, c, patch_headers, patch_body)
                    rows.append(await _measure(pool, "patch", patch, warmup=20))
                    # PATCHes dirtied the cache; let the poll reload it before the next round.
                    while not cache.is_fresh():
                        await asyncio.sleep(0.05)
        finally:
            for served in (plain, cached):
                await served.stop()
            await cache.aclose()
            await store.aclose()

    return _report(rows, max(concurrencies), kind)


def _report(rows: list[Row], top_c: int, kind: str) -> dict[str, Any]:
    print(f"store: {kind}")
    print(f"{'endpoint':<10} {'conc':>4} {'n':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'srv CPU µs/req':>15} {'errors':>6}")
    for r in rows:
        print(f"{r.name:<10} {r.concurrency:>4} {r.n:>6} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
              f"{r.cpu_us:>15.0f} {r.errors:>6}")
    by = {(r.name, r.concurrency): r for r in rows}
    out: dict[str, Any] = {"store": kind}
    print()
    for c in sorted({r.concurrency for r in rows}):
        hello, get_, cached, patch = (by[(n, c)] for n in ("hello", "get", "get+cache", "patch"))
        suffix = "" if c == top_c else f"_c{c}"
        print(
            f"concurrency {c:>2}: GET/hello throughput {get_.rps / hello.rps:.2f} "
            f"(with cache {cached.rps / hello.rps:.2f}); server CPU per request hello/GET "
            f"{hello.cpu_us / get_.cpu_us:.2f} (with cache {hello.cpu_us / cached.cpu_us:.2f})"
        )
        out |= {
            f"get_rps{suffix}": round(get_.rps, 1),
            f"hello_rps{suffix}": round(hello.rps, 1),
            f"get_ratio{suffix}": round(get_.rps / hello.rps, 3),
            f"get_cpu_ratio{suffix}": round(hello.cpu_us / get_.cpu_us, 3),
            f"get_p50_ms{suffix}": round(get_.p50_ms, 2),
            f"get_p99_ms{suffix}": round(get_.p99_ms, 2),
            f"get_cached_rps{suffix}": round(cached.rps, 1),
            f"get_cached_ratio{suffix}": round(cached.rps / hello.rps, 3),
            f"get_cached_p99_ms{suffix}": round(cached.p99_ms, 2),
            f"hello_p99_ms{suffix}": round(hello.p99_ms, 2),
            f"patch_rps{suffix}": round(patch.rps, 1),
            f"patch_p50_ms{suffix}": round(patch.p50_ms, 2),
            f"patch_p99_ms{suffix}": round(patch.p99_ms, 2),
            f"errors{suffix}": sum(r.errors for r in (hello, get_, cached, patch)),
        }
    print(json.dumps(out))
    return out


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--get-n", type=int, default=2000, help="requests per GET/hello run")
    parser.add_argument("--patch-n", type=int, default=500, help="requests per PATCH run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--store", choices=STORES, default="sqlite")
    args = parser.parse_args()
    asyncio.run(main(args.get_n, args.patch_n, args.concurrency, args.store))


if __name__ == "__main__":
    _cli()
