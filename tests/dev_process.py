"""A real `python -m app dev` process for tests that need the whole service: its own
port, a SQLite file given by the test, short webhook timings, its output in a file."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

from sim.db_servers import free_port

REPO = Path(__file__).resolve().parents[1]
KEY = "dev-process-admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


class DevProcess:
    def __init__(self, tmp_path: Path, name: str, db_url: str, **extra_env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LIVEKIT_", "ADMIN_", "OPENAI_", "DATABASE_", "AGENT_", "WEBHOOK_"))}
        env.update(DATABASE_URL=db_url, HOST="127.0.0.1", PORT=str(self.port), ADMIN_API_KEY=KEY,
                   PYTHONPATH=str(REPO), DRAIN_TIMEOUT="2", WEBHOOK_TIMEOUT="2", WEBHOOK_CONNECT_TIMEOUT="1",
                   WEBHOOK_RETRY_BASE_DELAY="0.2", WEBHOOK_RETRY_MAX_DELAY="1", WEBHOOK_POLL_INTERVAL="0.1")
        env.update(extra_env)
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
