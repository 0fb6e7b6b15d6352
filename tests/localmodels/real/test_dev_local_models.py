"""The issue's "done when": `python -m app dev --local-models` then `chat --local-models`
holds a conversation with the seeded support agent through the real local models (the
chat attaches to the model server dev started; nothing leaves the machine: the model
server only listens on loopback and loads files from the installed packages)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sim.db_servers import free_port

REPO = Path(__file__).resolve().parents[3]
KEY = "local-admin-key-0123456789"


def test_dev_local_models_then_chat_talks_to_the_support_agent(tmp_path: Path) -> None:
    port, models = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "ADMIN_", "OPENAI_", "DATABASE_", "LOCAL_"))}
    env.update(PYTHONPATH=str(REPO), DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/app.db", HOST="127.0.0.1",
               ADMIN_API_KEY=KEY, DRAIN_TIMEOUT="5", PORT=str(port), LOCAL_MODELS_PORT=str(models),
               HF_HUB_OFFLINE="1")
    dev = subprocess.Popen([sys.executable, "-m", "app", "dev", "--local-models"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                r = httpx.get(f"{base}/readyz", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and dev.poll() is None, "dev --local-models never became ready"
            time.sleep(0.5)
        assert r.json()["models"] == "ok"
        health = httpx.get(f"http://127.0.0.1:{models}/health", timeout=2).json()
        assert health["backend"] == "local"
        lines = "Hi, my parcel arrived damaged.\nMy name is Ada Lovelace.\n"
        chat = subprocess.run([sys.executable, "-m", "app", "chat", "--local-models", "--purpose", "support",
                               "--user-id", "ada"], cwd=tmp_path, env={k: v for k, v in env.items() if k != "PORT"},
                              input=lines, capture_output=True, text=True, timeout=300, check=False)
        assert chat.returncode == 0, chat.stderr[-3000:]
        said = [line.split("support-agent-v1> ", 1)[1] for line in chat.stdout.splitlines()
                if "support-agent-v1> " in line]
        assert said[0].startswith("Thanks for calling Acme support")  # the seeded greeting
        replies = [s for s in said[1:] if s.strip()]
        assert len(replies) >= 2, chat.stdout  # the model answered each line
        sessions = httpx.get(f"{base}/api/v1/sessions", headers={"Authorization": f"Bearer {KEY}"},
                             timeout=5).json()["items"]
        (rec,) = [s for s in sessions if s["user_id"] == "ada"]
        full = httpx.get(f"{base}/api/v1/sessions/{rec['session_id']}", headers={"Authorization": f"Bearer {KEY}"},
                         timeout=5).json()
        assert full["status"] == "completed" and full["agent_id"] == "support-agent-v1"
        said_by_user = [t["text"] for t in full["turns"] if t["role"] == "user"]
        assert said_by_user[:2] == ["Hi, my parcel arrived damaged.", "My name is Ada Lovelace."]
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGTERM)
            try:
                dev.wait(30)
            except subprocess.TimeoutExpired:
                dev.kill()
