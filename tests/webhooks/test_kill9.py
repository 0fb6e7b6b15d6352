"""`kill -9` of our process mid-delivery: after a restart every event arrives, none is
lost, and the only duplicates repeat a `webhook-id` with the identical body.

A real `python -m app dev` process on a SQLite file delivers to a receiver in this
test. The receiver holds every first request open (deliveries are in flight), events
keep being committed through the API, and the process is SIGKILLed at that point: some
events are mid-attempt (leased), some claimed, some not yet fanned out. A second
process on the same file must deliver all of them, once its predecessor's leases
expire (2 x WEBHOOK_TIMEOUT + 5 s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import IO

import httpx

from sim.db_servers import free_port
from sim.webhook_receiver import Behaviour, Received, WebhookReceiver
from tests.webhooks.conftest import verify

REPO = Path(__file__).resolve().parents[2]
KEY = "kill9-admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
EVENTS = 30


class DevProcess:
    def __init__(self, tmp_path: Path, name: str, db_url: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LIVEKIT_", "ADMIN_", "OPENAI_", "DATABASE_", "AGENT_", "WEBHOOK_"))}
        env.update(DATABASE_URL=db_url, HOST="127.0.0.1", PORT=str(self.port), ADMIN_API_KEY=KEY,
                   PYTHONPATH=str(REPO), DRAIN_TIMEOUT="2", WEBHOOK_TIMEOUT="2", WEBHOOK_CONNECT_TIMEOUT="1",
                   WEBHOOK_RETRY_BASE_DELAY="0.2", WEBHOOK_RETRY_MAX_DELAY="1", WEBHOOK_POLL_INTERVAL="0.1")
        self.log_path = tmp_path / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")
        (tmp_path / name).mkdir()
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "dev"], cwd=tmp_path / name, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as c:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.output()
                try:
                    if (await c.get(f"{self.base}/readyz", timeout=2)).status_code in (200, 503):
                        r = await c.get(f"{self.base}/api/v1/agents/config", headers=AUTH, timeout=5)
                        if r.status_code == 200 and r.json()["total"] > 0:  # seeded
                            return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"not ready:\n{self.output()}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


async def test_kill_minus_9_mid_delivery_loses_nothing(tmp_path: Path) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    first_phase = True

    def hold_first_phase(req: Received) -> Behaviour | None:
        return Behaviour(hang=True) if first_phase else None  # 200 after the restart

    async with WebhookReceiver(decide=hold_first_phase) as rx:
        a = DevProcess(tmp_path, "a", db_url)
        b: DevProcess | None = None
        got: set[str] = set()
        try:
            await a.ready()
            async with httpx.AsyncClient(base_url=f"{a.base}/api/v1", headers=AUTH, timeout=10) as api:
                r = await api.post("/webhooks", json={"url": rx.url, "events": ["agent.version_created"]})
                assert r.status_code == 201, r.text
                secret = r.json()["secret"]
                agent = (await api.get("/agents/config", params={"limit": 1})).json()["items"][0]["agent_id"]
                for i in range(EVENTS):
                    r = await api.patch(f"/agents/config/{agent}", json={"description": f"change {i}"})
                    assert r.status_code == 200, r.text
                    if i == EVENTS // 2:  # mid-stream: the first attempts are hanging by now
                        await rx.wait_for(4, timeout=10)
                audit = (await api.get("/audit", params={"type": "agent.version_created", "agent_id": agent,
                                                          "limit": 200})).json()
            expected = {e["id"] for e in audit["items"] if e["data"]["version"] > 1}
            assert len(expected) == EVENTS
            in_flight = {r.webhook_id for r in rx.received}
            assert 0 < len(in_flight) <= 4  # at most WEBHOOK_CONCURRENCY (4) attempts in flight
            a.kill9()
            first_phase = False
            killed_at = time.monotonic()

            def acknowledged() -> set[str]:  # phase 1 answered nothing: only later requests got a 200
                return {r.webhook_id for r in rx.received if r.at > killed_at}

            b = DevProcess(tmp_path, "b", db_url)
            await b.ready()
            deadline = time.monotonic() + 60
            while not acknowledged() >= expected and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            got = acknowledged()
        finally:
            a.stop()
            if b is not None:
                b.stop()
    missing = expected - got
    assert not missing, f"{len(missing)} event(s) never arrived\n{b.output() if b else ''}"
    assert {r.webhook_id for r in rx.received} <= expected  # nothing but these events
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for r in rx.received:
        verify(secret, r)
        bodies[r.webhook_id].add(r.body)
    assert all(len(v) == 1 for v in bodies.values())  # a duplicate is the same event, byte for byte
    dupes = sorted(i for i in in_flight if sum(r.webhook_id == i for r in rx.received) > 1)
    assert set(dupes) == in_flight, "every attempt cut by kill -9 is sent again, under its own webhook-id"
    print(f"\nkill -9: {len(expected)} events, {len(rx.received)} requests, {len(in_flight)} in flight at the kill,"
          f" re-sent after restart: {len(dupes)}")
