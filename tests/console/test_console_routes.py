"""The console's server side without a browser: pages, headers, static files, mounting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.api.app import create_app
from app.api.tokens import token_controller
from app.console import console_handlers
from app.settings import Settings
from app.store.sql import SQLStore

from .conftest import ADMIN_KEY, make_settings

PAGES = [
    "/agents", "/agents/new", "/agents/some-agent", "/agents/some-agent/history",
    "/routes", "/sessions", "/sessions/abc", "/talk",
]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLStore]:
    s = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/routes.db")
    await s.start()
    yield s
    await s.aclose()


def build(settings: Settings, store: SQLStore) -> Litestar:
    return create_app(settings, store, extra_route_handlers=[*console_handlers(settings), token_controller(settings)])


async def test_pages_are_served_without_credentials_and_hold_no_data(store: SQLStore) -> None:
    async with AsyncTestClient(build(make_settings(), store)) as c:
        for path in PAGES:
            r = await c.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-type"] == "text/html; charset=utf-8"
            assert "default-src 'self'" in r.headers["content-security-policy"]
            assert r.headers["cache-control"] == "no-store"
            assert ADMIN_KEY not in r.text
            assert '<script type="module" src="/console/static/js/main.js">' in r.text
        home = await c.get("/", follow_redirects=False)
        assert home.status_code in (301, 302, 307, 308)
        assert home.headers["location"] == "/agents"


async def test_path_parameters_are_escaped_into_data_attributes(store: SQLStore) -> None:
    async with AsyncTestClient(build(make_settings(), store)) as c:
        r = await c.get('/sessions/"><script>alert(1)<')
        assert r.status_code == 200
        assert "<script>alert(1)" not in r.text
        assert 'data-session-id="&quot;&gt;&lt;script&gt;alert(1)&lt;"' in r.text


async def test_page_facts_follow_settings(store: SQLStore) -> None:
    async with AsyncTestClient(build(make_settings(), store)) as c:
        body = (await c.get("/talk")).text
        assert 'data-auth="required"' in body and 'data-token-key="none"' in body
    open_settings = Settings(_env_file=None, admin_api_key=None, token_api_key="tk")  # type: ignore[call-arg]
    async with AsyncTestClient(build(open_settings, store)) as c:
        body = (await c.get("/talk")).text
        assert 'data-auth="none"' in body and 'data-token-key="required"' in body
        assert "tk" not in body.split("<body", 1)[1].split(">", 1)[0]


async def test_static_assets_and_livekit_client(store: SQLStore) -> None:
    async with AsyncTestClient(build(make_settings(), store)) as c:
        css = await c.get("/console/static/console.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        js = await c.get("/console/static/js/pages/agent.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        lk = await c.get("/console/vendor/livekit-client/livekit-client.esm.mjs")
        assert lk.status_code == 200 and "javascript" in lk.headers["content-type"]
        assert (await c.get("/console/static/../handlers.py")).status_code == 404


async def test_console_stays_out_of_openapi_and_api_still_guarded(store: SQLStore) -> None:
    async with AsyncTestClient(build(make_settings(), store)) as c:
        paths = (await c.get("/schema/openapi.json")).json()["paths"]
        assert not [p for p in paths if not p.startswith(("/api/v1", "/healthz", "/readyz", "/metrics"))]
        assert (await c.get("/api/v1/agents/config")).status_code == 401
        assert (await c.get("/healthz")).status_code == 200
