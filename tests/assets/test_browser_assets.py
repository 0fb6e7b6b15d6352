"""Where the console's LiveKit client and Swagger UI come from (app/assets/browser.py):
node_modules when `npm ci` ran, else the asset cache, fetched in the background by the
serving process and retried when a page needs it. Registry faked with respx."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
import respx

import app.assets.browser as browser
from app.assets.browser import LIVEKIT_CLIENT, SWAGGER_UI, AssetState, BrowserAssets
from app.settings import Settings

from .npm_fakes import locked, tarball, write_lock

CLIENT_TGZ = tarball({"package.json": b'{"version": "2.23.0"}', "dist/livekit-client.esm.mjs": b"export class Room {}"})
CLIENT = locked(CLIENT_TGZ, "livekit-client", "2.23.0")


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    return write_lock(tmp_path / "package-lock.json", CLIENT)


def assets(tmp_path: Path, lock: Path, *, fetch: bool = False) -> BrowserAssets:
    return BrowserAssets(tmp_path / "cache", fetch=fetch, node_modules=tmp_path / "node_modules", lockfile=lock)


def npm_installed(tmp_path: Path, version: str) -> Path:
    root = tmp_path / "node_modules" / "livekit-client"
    (root / "dist").mkdir(parents=True)
    (root / "package.json").write_text(json.dumps({"name": "livekit-client", "version": version}))
    (root / "dist" / "livekit-client.esm.mjs").write_text("export class Room {}")
    return root / "dist"


def test_node_modules_is_used_when_it_holds_the_locked_version(tmp_path: Path, lock: Path) -> None:
    dist = npm_installed(tmp_path, "2.23.0")
    a = assets(tmp_path, lock)
    assert a.directory(LIVEKIT_CLIENT) == dist == a.serve_dir(LIVEKIT_CLIENT)
    assert a.status(LIVEKIT_CLIENT).state is AssetState.ready


def test_a_stale_node_modules_is_ignored(tmp_path: Path, lock: Path) -> None:
    npm_installed(tmp_path, "2.1.0")  # `npm ci` from an older lock
    a = assets(tmp_path, lock)
    assert a.directory(LIVEKIT_CLIENT) is None
    assert a.serve_dir(LIVEKIT_CLIENT) == tmp_path / "cache" / "npm" / "livekit-client@2.23.0" / "dist"


def test_without_fetching_the_status_says_where_it_looked(tmp_path: Path, lock: Path) -> None:
    status = assets(tmp_path, lock).status(LIVEKIT_CLIENT)
    assert status.state is AssetState.missing
    assert status.detail == (
        f"livekit-client@2.23.0 is not in {tmp_path / 'node_modules'} or "
        f"{tmp_path / 'cache' / 'npm' / 'livekit-client@2.23.0'}; "
        "`python -m app dev` fetches it from the npm registry at start"
    )


@respx.mock
async def test_a_failed_fetch_is_explained_then_retried_when_a_page_asks(
    tmp_path: Path, lock: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    route = respx.get(CLIENT.resolved).mock(side_effect=httpx.ConnectError("network is unreachable"))
    a = assets(tmp_path, lock, fetch=True)
    with caplog.at_level(logging.WARNING, logger="app.assets.browser"):
        assert await a.ensure(LIVEKIT_CLIENT) is None
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("the console's Talk page is unavailable: could not fetch npm package livekit-client: "
                              f"GET {CLIENT.resolved}: ConnectError: network is unreachable")
    status = a.status(LIVEKIT_CLIENT)
    assert status.state is AssetState.missing
    assert CLIENT.resolved in status.detail and "no cached copy in" in status.detail

    # A page request right after the failure does not hammer the registry...
    a.request_fetch(LIVEKIT_CLIENT)
    await a.wait()
    assert route.call_count == 1
    # ...one after RETRY_AFTER tries again, in the background, and succeeds.
    monkeypatch.setattr(browser, "RETRY_AFTER", 0.0)
    route.side_effect = None
    route.return_value = httpx.Response(200, content=CLIENT_TGZ)
    a.request_fetch(LIVEKIT_CLIENT)
    assert a.status(LIVEKIT_CLIENT).state is AssetState.fetching
    await a.wait()
    assert route.call_count == 2
    assert a.status(LIVEKIT_CLIENT).state is AssetState.ready
    assert (a.serve_dir(LIVEKIT_CLIENT) / "livekit-client.esm.mjs").read_text() == "export class Room {}"
    await a.aclose()


def test_request_fetch_does_nothing_unless_the_process_fetches(tmp_path: Path, lock: Path) -> None:
    a = assets(tmp_path, lock)
    a.request_fetch(LIVEKIT_CLIENT)  # no running loop needed: nothing is started
    assert a.status(LIVEKIT_CLIENT).state is AssetState.missing


def test_settings_choose_the_cache_and_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSET_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.asset_cache_dir == tmp_path / "xdg" / "voice-platform" and s.npm_registry is None
    monkeypatch.setenv("ASSET_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("NPM_REGISTRY", "https://npm.corp.example/")
    a = BrowserAssets.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    assert a.cache_dir == tmp_path / "mine" and a.registry == "https://npm.corp.example/"
    assert not a.fetch_enabled
    monkeypatch.setenv("NPM_REGISTRY", "")
    assert Settings(_env_file=None).npm_registry is None  # type: ignore[call-arg]
    monkeypatch.setenv("NPM_REGISTRY", "registry.npmjs.org")
    with pytest.raises(ValueError, match="npm_registry"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_both_served_packages_are_pinned() -> None:
    a = BrowserAssets(Path("/nonexistent"))
    assert a.locked(LIVEKIT_CLIENT).version == "2.23.0"
    assert a.locked(SWAGGER_UI).version.startswith("5.")
