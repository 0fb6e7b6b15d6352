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
import time
from collections import defaultdict
from pathlib import Path

import httpx

from sim.webhook_receiver import Behaviour, Received, WebhookReceiver
from tests.dev_process import AUTH, DevProcess
from tests.webhooks.conftest import verify

EVENTS = 30


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
