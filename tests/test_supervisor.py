"""The one-process service, run as users run it: `python -m app dev|start` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "ADMIN_", "OPENAI_", "DATABASE_"))}
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/app.db",
        HOST="127.0.0.1",
        LOG_LEVEL="INFO",
        DRAIN_TIMEOUT="10",
    )
    env.update(extra)
    return env


def wait_http(url: str, deadline: float) -> httpx.Response:
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, timeout=1.0)
        except httpx.HTTPError as e:
            last = e
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in time: {last}")


def test_dev_serves_api_while_livekit_is_unreachable_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    dead = free_port()  # nothing listens here
    env = app_env(
        tmp_path,
        PORT=str(port),
        LIVEKIT_URL=f"ws://127.0.0.1:{dead}",
        LIVEKIT_API_KEY="APIdevkey",
        LIVEKIT_API_SECRET="a-livekit-secret-that-must-not-leak-0123456789",
        ADMIN_API_KEY="admin-key-that-must-not-leak-0123456789",
    )
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "dev"], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        r = wait_http(f"http://127.0.0.1:{port}/healthz", t0 + 30)  # start-up time is not what this test checks; a loaded machine takes long
        assert r.status_code == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3)
        assert ready.status_code == 503
        assert ready.json()["worker"] == "connecting"
        assert ready.json()["store"] == "ok"
        # the API works while the worker retries: seeded agents are there
        agents = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/agents/config",
            headers={"Authorization": "Bearer admin-key-that-must-not-leak-0123456789"}, timeout=3,
        )
        assert agents.status_code == 200
        assert {"support-agent-v1", "sales-agent-v1"} <= {a["agent_id"] for a in agents.json()["items"]}
        time.sleep(1.5)  # let the worker fail at least one connection attempt
        proc.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert time.monotonic() - t_term < 10  # within DRAIN_TIMEOUT
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "must-not-leak" not in out
    assert (tmp_path / "app.db").exists()
    # no OPENAI_API_KEY / OPENAI_BASE_URL: said once, at start, before any call fails
    assert out.count("no model endpoint: neither OPENAI_API_KEY nor OPENAI_BASE_URL is set") == 1


def test_start_refuses_without_required_settings(tmp_path: Path) -> None:
    env = app_env(tmp_path)
    del env["DATABASE_URL"]
    proc = subprocess.run(
        [sys.executable, "-m", "app", "start"], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    for name in ("ADMIN_API_KEY", "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "DATABASE_URL"):
        assert name in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]) == 5


def test_bad_setting_is_named(tmp_path: Path) -> None:
    env = app_env(tmp_path, AGENT_MODE="nonsense")
    proc = subprocess.run(
        [sys.executable, "-m", "app", "dev"], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "AGENT_MODE" in proc.stderr


@pytest.mark.parametrize("mode", ["pte", "dynamic"])
def test_dev_without_livekit_reports_worker_disabled(tmp_path: Path, mode: str) -> None:
    port = free_port()
    env = app_env(tmp_path, PORT=str(port), AGENT_MODE=mode)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "dev"], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 20)  # loaded CI box
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3)
        assert ready.status_code == 200
        assert ready.json()["worker"] == "disabled"
        # the token endpoint says why it cannot mint (as the README says)
        token = httpx.post(f"http://127.0.0.1:{port}/api/v1/token", json={}, timeout=3)
        assert token.status_code == 503
        assert token.json()["detail"] == "LiveKit is not configured on this server"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert "admin API key for this run" in out  # dev generates one and prints it once
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # one complete sentence naming the three settings and what still works
    (warning,) = [line for line in out.splitlines() if "LiveKit is not configured" in line]
    sentence = warning.split(": ", 1)[1]  # after "HH:MM:SS WARNING app.supervisor"
    assert sentence == (
        "LiveKit is not configured (missing: LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET), so "
        "the voice worker is disabled; the admin API and console serve without it, and POST "
        "/api/v1/token answers 503 until LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET are all set."
    )


def test_resolve_shows_the_version_the_next_session_gets(tmp_path: Path) -> None:
    port = free_port()
    key = "admin-key-0123456789abcdef"
    env = app_env(tmp_path, PORT=str(port), ADMIN_API_KEY=key)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "dev"], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    h = {"Authorization": f"Bearer {key}"}
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 15)
        deadline = time.monotonic() + 15
        while (r := httpx.get(f"{base}/resolve", params={"purpose": "sales"}, headers=h)).status_code == 503:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert (r.json()["agent_id"], r.json()["config_version"], r.json()["reason"]) == ("sales-agent-v1", 1, "purpose")
        assert httpx.get(f"{base}/resolve", params={"purpose": "sales"}).status_code == 401
        p = httpx.patch(f"{base}/agents/config/sales-agent-v1", json={"description": "v2"}, headers=h)
        assert p.status_code == 200, p.text
        r = httpx.get(f"{base}/resolve", params={"purpose": "sales"}, headers=h)
        assert r.json()["config_version"] == 2  # the very next session start sees the write
        r = httpx.get(f"{base}/resolve", params={"purpose": "no-such-purpose"}, headers=h)
        assert (r.json()["agent_id"], r.json()["reason"]) == ("support-agent-v1", "default:unknown_purpose")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out


def test_resolve_answers_as_soon_as_the_api_does(tmp_path: Path) -> None:
    """/resolve reads the process's config source (ready before the API serves), not the
    worker: no "worker still starting" 503 while /readyz already says ready."""
    port = free_port()
    key = "admin-key-0123456789abcdef"
    env = app_env(tmp_path, PORT=str(port), ADMIN_API_KEY=key)  # no LiveKit: worker disabled
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "dev"], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", time.monotonic() + 15)
        first = httpx.get(f"{base}/api/v1/resolve", headers={"Authorization": f"Bearer {key}"}, timeout=3)
        ready = httpx.get(f"{base}/readyz", timeout=3)
        assert first.status_code == 200, first.text
        assert (first.json()["agent_id"], first.json()["reason"]) == ("support-agent-v1", "default")
        assert ready.status_code == 200 and ready.json()["worker"] == "disabled", ready.text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out


def test_start_refuses_a_livekit_secret_shorter_than_32_bytes(tmp_path: Path) -> None:
    env = app_env(
        tmp_path, ADMIN_API_KEY="admin-key-0123456789abcdef", LIVEKIT_URL="wss://example.livekit.cloud",
        LIVEKIT_API_KEY="APIkey", LIVEKIT_API_SECRET="short-secret-31-bytes-xxxxxxxxx",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "app", "start"], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: LIVEKIT_API_SECRET is 31 bytes long; tokens signed with it (HMAC-SHA256) need at "
        "least 32: `start` refuses it (`dev` accepts it with a warning)"
    ]
    assert "short-secret" not in proc.stderr + proc.stdout


def test_dev_with_a_short_livekit_secret_warns_once_and_logs_stay_json(tmp_path: Path) -> None:
    """PyJWT warns (InsecureKeyLengthWarning) when it signs with a short key, as plain text
    on stderr; `dev` says it once, as a log line like any other (here: JSON)."""
    port, dead = free_port(), free_port()
    secret = "devsecret"  # what `livekit-server --dev` setups often use: 9 bytes
    env = app_env(
        tmp_path, PORT=str(port), LOG_FORMAT="json", ADMIN_API_KEY="admin-key-0123456789abcdef",
        LIVEKIT_URL=f"ws://127.0.0.1:{dead}", LIVEKIT_API_KEY="APIdevkey", LIVEKIT_API_SECRET=secret,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "dev"], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 20)
        for _ in range(2):  # each token is an HS256 JWT signed with the short secret
            r = httpx.post(f"http://127.0.0.1:{port}/api/v1/token", json={"purpose": "support"}, timeout=5)
            assert r.status_code == 201, r.text
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    records = [json.loads(line) for line in out.splitlines() if line.strip()]  # every line is JSON
    weak = [r for r in records if "LIVEKIT_API_SECRET is 9 bytes long" in r["msg"]]
    assert len(weak) == 1 and weak[0]["level"] == "WARNING", weak
    assert not [r for r in records if "InsecureKeyLength" in r["msg"] or r["logger"] == "py.warnings"]
    assert secret not in out


def test_dev_runs_worker_processes_replaces_a_killed_one_and_stops_them_on_sigterm(tmp_path: Path) -> None:
    """WORKER_PROCESSES=2: two LiveKit worker processes beside the API, each on `/readyz`;
    one killed with SIGKILL is replaced; SIGTERM stops them all and the service exits 0."""
    import psutil

    port = free_port()
    env = app_env(
        tmp_path, PORT=str(port), LIVEKIT_URL=f"ws://127.0.0.1:{free_port()}", LIVEKIT_API_KEY="APIdevkey",
        LIVEKIT_API_SECRET="a-livekit-secret-that-must-not-leak-0123456789", WORKER_PROCESSES="2",
        DRAIN_TIMEOUT="5",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "dev"], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )

    def workers() -> list[dict]:
        # null until the supervisor has spawned them (it does so once the API listens)
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3).json()["workers"] or []

    def wait_workers(cond, what: str, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        seen: list[dict] = []
        while time.monotonic() < deadline:
            seen = workers()
            if cond(seen):
                return seen
            time.sleep(0.2)
        raise AssertionError(f"{what}: {seen}")

    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 20)
        first = wait_workers(lambda ws: len(ws) == 2 and all(w["pid"] and w["state"] != "starting" for w in ws),
                             "two worker processes running")
        children = {c.pid for c in psutil.Process(proc.pid).children()}
        pids = [w["pid"] for w in first]
        assert set(pids) <= children and len(set(pids)) == 2
        assert all(w["state"] in ("connecting", "registered") and w["restarts"] == 0 for w in first)
        # WORKER_CPU_PINNING=auto: one core each where this machine has them (CI may have one)
        from app.cores import worker_cpus

        for w in first:
            expected = worker_cpus(w["index"], 2, "auto")
            assert w["cpus"] == (sorted(expected) if expected is not None else None), first
            if expected is not None:
                assert set(psutil.Process(w["pid"]).cpu_affinity()) == expected
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3).json()
        assert ready["worker"] == "connecting" and "of 2 worker processes registered" in ready["detail"]

        os.kill(pids[0], signal.SIGKILL)
        after = wait_workers(lambda ws: ws[0]["restarts"] == 1 and ws[0]["pid"] not in (None, pids[0])
                             and ws[0]["state"] != "starting", "the killed worker process replaced and running")
        assert after[1]["pid"] == pids[1] and after[1]["restarts"] == 0
        assert after[0]["cpus"] == first[0]["cpus"]  # the replacement takes the same core
        assert psutil.pid_exists(after[0]["pid"])

        proc.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        out, _ = proc.communicate(timeout=40)
        assert proc.returncode == 0, out
        assert time.monotonic() - t_term < 30  # idle: ~1 s; a shared CI machine is slower
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    for pid in (after[0]["pid"], pids[1]):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert f"worker process 0 (pid {pids[0]}) killed by signal 9" in out
    assert out.count("worker process 0 stopped") == 1 and out.count("worker process 1 stopped") == 1
    assert "must-not-leak" not in out
