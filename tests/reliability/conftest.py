"""Shared pieces of the hardening suite (issue 8): a live `python -m app dev` process
with known secret values, and the secrets themselves.

Every live app started here gets the same recognisable secrets (admin key, LiveKit
key and secret, OpenAI key). Its whole output (stdout + stderr, every log line) goes
to a file, and `LiveApp.stop()` fails the test if any secret appears in it: so every
test that runs a live app is also a log-leak test, not only `test_secrets.py`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]

ADMIN_KEY = "rel-admin-key-9f8e7d6c5b4a39281706"
LIVEKIT_KEY = "APIrelLivekitKey4c2e"
LIVEKIT_SECRET = "rel-livekit-secret-1a2b3c4d5e6f7a8b9c0d"
OPENAI_KEY = "sk-rel-openai-key-0f1e2d3c4b5a69788796"
TOKEN_KEY = "rel-token-key-77aa66bb55cc44dd33ee"
SECRETS = {
    "ADMIN_API_KEY": ADMIN_KEY,
    "LIVEKIT_API_KEY": LIVEKIT_KEY,
    "LIVEKIT_API_SECRET": LIVEKIT_SECRET,
    "OPENAI_API_KEY": OPENAI_KEY,
    "TOKEN_API_KEY": TOKEN_KEY,
}
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def leaked_secrets(text: str, secrets: dict[str, str] | None = None) -> list[str]:
    """Names of the secrets whose value occurs in `text`."""
    return [name for name, value in (secrets or SECRETS).items() if value in text]


class LiveApp:
    """`python -m app dev` on loopback, with known secrets; output captured to a file.

    `livekit=True` sets LiveKit credentials pointing at a port where nothing listens
    (the worker retries; `/token` can mint), so the LiveKit secret is in the process.
    """

    def __init__(
        self,
        tmp_path: Path,
        name: str = "app",
        *,
        database_url: str | None = None,
        livekit: bool = True,
        token_key: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url or f"sqlite+aiosqlite:///{tmp_path}/{name}.db"
        self.log_path = tmp_path / f"{name}.log"
        self.secrets = {k: v for k, v in SECRETS.items()
                        if (livekit or not k.startswith("LIVEKIT")) and (token_key or k != "TOKEN_API_KEY")}
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LIVEKIT_", "ADMIN_", "OPENAI_", "DATABASE_", "AGENT_", "TOKEN_"))}
        env.update(
            DATABASE_URL=self.database_url, AGENT_MODE="dynamic", HOST="127.0.0.1", PORT=str(self.port),
            LOG_LEVEL="DEBUG", DRAIN_TIMEOUT="5", PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1",
            **self.secrets,
        )
        if livekit:
            env["LIVEKIT_URL"] = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
        env.update(extra_env or {})
        self.env = env
        workdir = tmp_path / f"{name}-cwd"
        workdir.mkdir(exist_ok=True)
        self._log: IO[bytes] = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "dev"], cwd=workdir, env=env,
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.returncode: int | None = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str) -> str:
        return self.base + path

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.name} exited:\n{self.output()[-4000:]}"
            try:
                if httpx.get(self.url("/healthz"), timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"{self.name} never answered /healthz:\n{self.output()[-4000:]}")

    def wait_seeded(self, timeout: float = 60.0) -> None:
        """Healthy, and the store answered (the dev seed is in)."""
        self.wait_healthy(timeout)
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                last = httpx.get(self.url("/api/v1/agents/config/support-agent-v1"), headers=AUTH, timeout=5)
                if last.status_code == 200:
                    return
            except httpx.HTTPError as e:
                last = e
            time.sleep(0.2)
        raise AssertionError(f"{self.name} never served the seeded agent ({last!r}):\n{self.output()[-4000:]}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.returncode = self.proc.wait(30)
        self._log.close()

    def stop(self, *, check_secrets: bool = True) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        self.returncode = self.proc.returncode
        if check_secrets:
            leaks = leaked_secrets(self.output(), self.secrets)
            assert not leaks, f"{self.name}: secret(s) {leaks} appear in the process output"
        return self.returncode


@pytest.fixture
def live_app(tmp_path: Path) -> Iterator[type[LiveApp]]:
    """A factory: `live_app(tmp_path, name, ...)`; every app made is stopped (and its
    output checked for secrets) at teardown, even when the test failed."""
    made: list[LiveApp] = []

    class Tracked(LiveApp):
        def __init__(self, *a, **kw) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*a, **kw)
            made.append(self)

    yield Tracked
    errors = []
    for app in made:
        try:
            app.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, errors
