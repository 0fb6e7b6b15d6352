"""`python -m app dev` on a machine with only Python and uv: the console's LiveKit client
and the `/schema` viewer come from the npm registry at first start (no Node), are cached,
work offline afterwards, and a start with neither network nor cache says why.

`dev` runs in a subprocess from a copy of `app/` and `prompts/` without `node_modules`
(what a fresh clone has), against the real npm registry for the first start and a closed
port (`NPM_REGISTRY`) for the offline ones.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
LIVEKIT_ESM = "/console/vendor/livekit-client/livekit-client.esm.mjs"
SWAGGER_JS = "/schema/assets/swagger-ui-bundle.js"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_clone(tmp_path: Path) -> Path:
    src = tmp_path / "clone"
    ignore = shutil.ignore_patterns("node_modules", "__pycache__")
    shutil.copytree(REPO / "app", src / "app", ignore=ignore)
    shutil.copytree(REPO / "prompts", src / "prompts")
    return src


@contextlib.contextmanager
def dev(src: Path, tmp_path: Path, **env: str) -> Iterator[tuple[str, list[str]]]:
    """`python -m app dev` in `src`; yields its base URL and (after exit) its output lines."""
    port = free_port()
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("LIVEKIT_", "ADMIN_", "OPENAI_", "DATABASE_", "NPM_", "ASSET_"))}
    full.update(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/app.db", HOST="127.0.0.1", PORT=str(port),
                LOG_LEVEL="INFO", PYTHONPATH=str(src), **env)
    proc = subprocess.Popen([sys.executable, "-m", "app", "dev"], cwd=src, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "dev did not start"
            time.sleep(0.1)
        yield base, lines
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        lines.extend(out.splitlines())
        assert proc.returncode == 0, out


def talk_state(base: str) -> tuple[str, str]:
    page = httpx.get(base + "/talk", timeout=5).text
    state = re.search(r'data-livekit-client="([^"]*)"', page)
    detail = re.search(r'data-livekit-client-detail="([^"]*)"', page)
    assert state and detail, page
    return state.group(1), html.unescape(detail.group(1))


def wait_talk(base: str, want: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while (state := talk_state(base))[0] != want:
        assert time.monotonic() < deadline, f"/talk stayed {state}"
        time.sleep(0.2)
    return state[1]


def test_dev_fetches_the_browser_packages_once_then_runs_offline(tmp_path: Path) -> None:
    src = fresh_clone(tmp_path)
    cache = tmp_path / "cache"
    offline = f"http://127.0.0.1:{free_port()}"  # nothing listens: as good as no network

    # First start, online: fetched in the background while the API already serves.
    with dev(src, tmp_path, ASSET_CACHE_DIR=str(cache)) as (base, first):
        wait_talk(base, "ready")
        lk = httpx.get(base + LIVEKIT_ESM, timeout=5)
        assert lk.status_code == 200 and "javascript" in lk.headers["content-type"] and len(lk.content) > 100_000
        schema = httpx.get(base + "/schema", timeout=5).text
        assert f'<script src="{SWAGGER_JS}">' in schema
        assert httpx.get(base + SWAGGER_JS, timeout=5).status_code == 200
    assert sorted(p.name for p in (cache / "npm").iterdir()) == ["livekit-client@2.23.0", "swagger-ui-dist@5.36.0", "uplot@1.6.32"]
    assert [line for line in first if "cached livekit-client@2.23.0" in line]
    assert not (src / "app" / "console" / "node_modules").exists()  # the code tree is not written to

    # No network, warm cache: everything is there from the first request.
    with dev(src, tmp_path, ASSET_CACHE_DIR=str(cache), NPM_REGISTRY=offline) as (base, second):
        assert talk_state(base) == ("ready", "")
        assert httpx.get(base + LIVEKIT_ESM, timeout=5).status_code == 200
        assert httpx.get(base + SWAGGER_JS, timeout=5).status_code == 200
    assert not [line for line in second if "fetching" in line or "unavailable" in line]

    # No network, no cache: the API serves, and the pages and the log say why.
    empty = tmp_path / "empty-cache"
    with dev(src, tmp_path, ASSET_CACHE_DIR=str(empty), NPM_REGISTRY=offline) as (base, third):
        detail = wait_talk(base, "missing", timeout=30)
        assert detail.startswith(f"GET {offline}/livekit-client/-/livekit-client-2.23.0.tgz: ConnectError")
        assert detail.endswith(f"no cached copy in {empty / 'npm' / 'livekit-client@2.23.0'}")
        schema = httpx.get(base + "/schema", timeout=5).text
        assert "The API reference viewer is not available yet" in schema and "ConnectError" in schema
        assert httpx.get(base + "/healthz", timeout=5).status_code == 200
    warnings = [line for line in third if "is unavailable: could not fetch npm package" in line]
    assert len(warnings) == 3, third  # one line per package, no traceback
    assert not [line for line in third if "Traceback" in line]
