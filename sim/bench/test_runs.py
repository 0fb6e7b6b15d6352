"""Stored test runs: how long a scripted test takes in the server, and what running them
costs the admin API that shares their event loop.

Run: `uv run python -m sim.bench.test_runs [--tests 10] [--requests 300]`

Everything is real: a seeded SQLite store in a temp dir, the admin API app served
in-process (`httpx.ASGITransport`, on the loop the test pool runs on, as uvicorn serves
it beside the pool in `dev`/`start`), the pool (`app.agents.test_pool`, one run at a
time), and each test a LiveKit text session with the real OpenAI plugin against the
scripted model. The test is the README's example (greeting, a recorded order number,
three expected events, the collected data), stored `--tests` times under other names.

- run: wall time of one run of all the tests, and per test (the run's own `duration_ms`);
- api: `GET /api/v1/agents/config/{id}` latency, p50/p99 over `--requests` sequential
  requests, idle and while a run executes (what a run costs other requests on the loop).

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from app.agents.test_pool import TestRunPool
from app.api.app import create_app
from app.domain.agent_tests import AgentTestCreate, TestRunStatus
from app.seed import seed
from app.settings import Settings
from app.store import open_store
from sim.bench.stats import emit, percentile

KEY = "bench-key"
AGENT = "support-agent-v1"
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Tests stored with the agent"):]
    start = section.index("```yaml\n") + len("```yaml\n")
    return section[start:section.index("```", start)]


async def latencies(c: httpx.AsyncClient, n: int, until: asyncio.Event | None = None) -> list[float]:
    out: list[float] = []
    while len(out) < n and not (until is not None and until.is_set()):
        t0 = time.perf_counter()
        r = await c.get(f"/api/v1/agents/config/{AGENT}")
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text
    return out


async def main(tests: int, requests: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-test-runs-"))
    store = open_store(f"sqlite+aiosqlite:///{tmp}/bench.db")
    await store.start()
    settings = Settings(_env_file=None, admin_api_key=KEY, database_url=f"sqlite+aiosqlite:///{tmp}/bench.db")  # type: ignore[call-arg]
    pool = TestRunPool(settings, store)
    try:
        await seed(store)
        example = readme_example()
        for i in range(tests):
            await store.create_agent_test(AGENT, AgentTestCreate(name=f"example-{i:02d}", content=example))
        app = create_app(settings, store, test_runs=pool)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                     headers={"Authorization": f"Bearer {KEY}"}) as c:
            # warm-up: imports, the first session's one-time costs
            r = await c.post(f"/api/v1/agents/config/{AGENT}/versions/1/test-runs")
            await pool.wait(r.json()["id"])
            await latencies(c, 50)
            idle = await latencies(c, requests)

            t0 = time.perf_counter()
            r = await c.post(f"/api/v1/agents/config/{AGENT}/versions/1/test-runs")
            run_id = r.json()["id"]
            done = asyncio.Event()
            waiter = asyncio.create_task(pool.wait(run_id))
            waiter.add_done_callback(lambda _t: done.set())
            busy = await latencies(c, 10**9, until=done)
            await waiter
            wall_s = time.perf_counter() - t0
            run = await store.get_test_run(AGENT, run_id)
        assert run.status is TestRunStatus.passed, run.model_dump_json()[:2000]
        per_test = [r.duration_ms for r in run.results]
        print(f"run: {tests} tests in {wall_s:.2f} s; per test p50 {percentile(per_test, 50):.0f} ms, "
              f"max {max(per_test):.0f} ms")
        print(f"api GET p50/p99: idle {percentile(idle, 50):.2f}/{percentile(idle, 99):.2f} ms, "
              f"during the run {percentile(busy, 50):.2f}/{percentile(busy, 99):.2f} ms ({len(busy)} requests)")
        emit({
            "tests": tests, "run_wall_s": wall_s, "test_p50_ms": percentile(per_test, 50), "test_max_ms": max(per_test),
            "api_idle_p50_ms": percentile(idle, 50), "api_idle_p99_ms": percentile(idle, 99),
            "api_busy_p50_ms": percentile(busy, 50), "api_busy_p99_ms": percentile(busy, 99),
            "api_busy_requests": len(busy),
        })
    finally:
        await pool.aclose()
        await store.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=10)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.tests, args.requests))
