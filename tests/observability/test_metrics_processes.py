"""`GET /metrics` covers every process of the service, not only the API's.

The webhook dispatcher (and worker processes, PROCESS-executor jobs) run in child
processes with registries of their own; `dev`/`start` share them through
`prometheus_client`'s multiprocess files (app/observability/processes.py). Two views:
the merge rules in isolation (a parent and a child that is then `kill -9`ed), and a
real `python -m app dev` whose webhook deliveries, made in its dispatcher process,
appear in its `/metrics`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sim.webhook_receiver import WebhookReceiver
from tests.dev_process import AUTH, REPO, DevProcess
from tests.observability.test_metrics import parse, value

MERGE_SCRIPT = r"""
import json, multiprocessing, os, signal, sys
from app.observability import processes
processes.share_across_processes()
from app.observability import metrics

def child(ready):
    metrics.WEBHOOK_ATTEMPTS.labels("agent.created", "delivered").inc(3)
    metrics.SESSIONS_ACTIVE.labels("support").inc()
    metrics.STORE_WRITES_BUFFERED.inc(5)
    metrics.CONFIG_CONFIRMED_AT.labels(metrics.CONFIG_CACHE).set(100)
    ready.set()
    signal.pause()

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=child, args=(ready,))
    p.start()
    assert ready.wait(60)
    metrics.SESSIONS_ACTIVE.labels("support").inc()
    metrics.CONFIG_CONFIRMED_AT.labels(metrics.CONFIG_CACHE).set(200)
    both = metrics.render().decode()
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    after = metrics.render().decode()
    path = processes.directory()
    processes.close()
    print(json.dumps({"both": both, "after": after, "removed": not os.path.exists(path)}))
"""


def test_children_merge_and_a_killed_childs_gauges_go(tmp_path: Path) -> None:
    script = tmp_path / "merge.py"  # a file: `spawn` re-imports the child's function from it
    script.write_text(MERGE_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    both, after = parse(got["both"]), parse(got["after"])
    attempts = ("webhook_delivery_attempts_total", {"event_type": "agent.created", "outcome": "delivered"})
    # While both live: sessions add up, the buffer is the child's, the cache age is the stalest.
    assert value(both, attempts[0], **attempts[1]) == 3
    assert value(both, "voice_sessions_active", agent_id="support") == 2
    assert value(both, "store_session_writes_buffered") == 5
    assert value(both, "config_cache_confirmed_timestamp_seconds", cache="configs") == 100
    # After kill -9 of the child: its totals stay, its present values are gone.
    assert value(after, attempts[0], **attempts[1]) == 3
    assert value(after, "voice_sessions_active", agent_id="support") == 1
    assert value(after, "store_session_writes_buffered") == 0
    assert value(after, "config_cache_confirmed_timestamp_seconds", cache="configs") == 200
    assert got["removed"], "the service's private metrics directory is removed at exit"


async def test_dev_serves_the_dispatcher_process_deliveries(tmp_path: Path) -> None:
    shared = tmp_path / "metrics"
    shared.mkdir()
    # A file left by an earlier run (a counter of 7 deliveries) must not be counted again.
    stale = subprocess.run(
        [sys.executable, "-c", "from app.observability import metrics\n"
         "metrics.WEBHOOK_ATTEMPTS.labels('agent.version_created', 'delivered').inc(7)"],
        cwd=REPO, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "PROMETHEUS_MULTIPROC_DIR": str(shared)},
        capture_output=True, text=True, timeout=60,
    )
    assert stale.returncode == 0 and list(shared.glob("counter_*.db")), stale.stderr
    async with WebhookReceiver() as rx:
        dev = DevProcess(tmp_path, "dev", f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
                         PROMETHEUS_MULTIPROC_DIR=str(shared))
        try:
            await dev.ready()
            async with httpx.AsyncClient(base_url=dev.base, headers=AUTH, timeout=10) as api:
                r = await api.post("/api/v1/webhooks", json={"url": rx.url, "events": ["agent.version_created"]})
                assert r.status_code == 201, r.text
                agent = (await api.get("/api/v1/agents/config", params={"limit": 1})).json()["items"][0]["agent_id"]
                for i in range(3):
                    r = await api.patch(f"/api/v1/agents/config/{agent}", json={"description": f"change {i}"})
                    assert r.status_code == 200, r.text
                await rx.wait_for(3, timeout=30)
                deadline = time.monotonic() + 10
                while True:  # the dispatcher counts an attempt once the answer is read
                    samples = parse((await api.get("/metrics")).text)
                    delivered = value(samples, "webhook_delivery_attempts_total",
                                      event_type="agent.version_created", outcome="delivered")
                    if delivered >= 3 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
            assert delivered == 3, dev.output()
            assert value(samples, "webhook_delivery_attempt_seconds_count") >= 3
            assert value(samples, "config_cache_reloads_total", outcome="ok") >= 1  # the API process's cache
        finally:
            dev.stop()
