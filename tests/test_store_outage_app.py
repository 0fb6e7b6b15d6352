"""`python -m app dev` on MongoDB while the database comes and goes.

Store down at start: the API serves, `/readyz` is 503 with `store: down`, the log says
so, and the process connects (and seeds the empty database) once the server is up.
Down again while running: `/readyz` turns 503 and session starts are answered from the
last known-good configs (`stale`); after a restart on the same port everything works
again, with no process restart.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from sim.db_servers import MongoServer
from tests.test_scale_out import AUTH, App


def _wait_ready(app: App, want: int, deadline: float) -> dict:
    last = None
    while time.monotonic() < deadline:
        assert app.proc.poll() is None, app.output()
        try:
            last = httpx.get(f"{app.base}/readyz", timeout=5)
            if last.status_code == want:
                return last.json()
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"/readyz never answered {want} (last: {last!r}):\n{app.output()[-4000:]}")


@pytest.mark.slow
def test_app_serves_while_mongo_is_down_and_reconnects(tmp_path: Path) -> None:
    mongo = MongoServer(storage_path=tmp_path / "mongo-data")  # not started yet
    app = App("A", tmp_path, mongo.url("outage_app"))
    try:
        deadline = time.monotonic() + 60
        ready = _wait_ready(app, 503, deadline)
        assert ready["store"] == "down", ready
        assert httpx.get(f"{app.base}/healthz", timeout=5).status_code == 200
        r = httpx.get(f"{app.base}/api/v1/agents/config", headers=AUTH, timeout=10)
        assert r.status_code == 503, r.text
        assert "store unavailable at start" in app.output()

        mongo.start()
        t_up = time.monotonic()
        ready = _wait_ready(app, 200, t_up + 20)
        print(f"\nready {time.monotonic() - t_up:.1f}s after MongoDB came up")
        assert ready["store"] == "ok"
        assert "store reachable again" in app.output()
        r = app.wait_resolves(time.monotonic() + 15)  # seeded once the store answered
        assert r["stale"] is False

        mongo.stop()
        t_down = time.monotonic()
        ready = _wait_ready(app, 503, t_down + 15)
        print(f"503 {time.monotonic() - t_down:.1f}s after MongoDB went down")
        assert ready["store"] == "down"
        r = app.resolve()  # the last known-good config, marked stale
        assert r.status_code == 200, r.text
        assert (r.json()["agent_id"], r.json()["stale"]) == ("sales-agent-v1", True)

        mongo.start()  # same port, same data directory
        t_up = time.monotonic()
        _wait_ready(app, 200, t_up + 20)
        print(f"ready again {time.monotonic() - t_up:.1f}s after MongoDB came back")
        p = httpx.patch(
            f"{app.base}/api/v1/agents/config/sales-agent-v1", json={"description": "after the outage"},
            headers=AUTH, timeout=10,
        )
        assert p.status_code == 200, p.text
        got = app.resolve().json()
        assert (got["config_version"], got["stale"]) == (p.json()["version"], False)
    finally:
        code = app.stop()
        mongo.close()
    assert code == 0, app.output()[-4000:]
