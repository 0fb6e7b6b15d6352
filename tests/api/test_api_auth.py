"""The bearer guard: every admin route needs the key; health, schema and extras do not."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient

from app.api import create_app
from app.settings import Settings

Client = AsyncTestClient[Litestar]
AGENTS = "/api/v1/agents/config"
EXPECTED_401 = {"status_code": 401, "detail": "missing or invalid bearer token"}


def _admin_endpoints(app: Litestar) -> list[tuple[str, str]]:
    """(method, concrete path) for every handler under /api/v1, path params filled in."""
    out: list[tuple[str, str]] = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/api/v1"):
            continue
        path = re.sub(r"\{(\w+):int\}", "1", route.path)
        path = re.sub(r"\{(\w+):str\}", "some-id", path)
        for method in route.route_handler_map:
            if method not in ("OPTIONS", "HEAD"):
                out.append((method, path))
    return out


async def test_every_admin_endpoint_requires_the_key(anon: Client, app: Litestar) -> None:
    endpoints = _admin_endpoints(app)
    assert len(endpoints) >= 16  # agents 8, routes 6, sessions 2; a new one is covered too
    for method, path in endpoints:
        r = await anon.request(method, path, json={})
        assert r.status_code == 401, (method, path, r.text)
        assert r.json() == EXPECTED_401
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-key",
        "Basic {key}",
        "{key}",
        "Bearer {key}x",
        "Bearer {key_prefix}",
        "Token {key}",
    ],
)
async def test_missing_or_wrong_key_is_401_without_hints(
    anon: Client, admin_key: str, header: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {} if header is None else {
        "Authorization": header.format(key=admin_key, key_prefix=admin_key[:-1])
    }
    r = await anon.get(AGENTS, headers=headers)
    assert r.status_code == 401
    assert r.json() == EXPECTED_401
    assert admin_key not in r.text
    assert admin_key[:-1] not in r.text
    assert all(admin_key not in v for v in r.headers.values())
    assert admin_key not in caplog.text


async def test_right_key_is_accepted_case_insensitive_scheme(anon: Client, admin_key: str) -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = await anon.get(AGENTS, headers={"Authorization": f"{scheme} {admin_key}"})
        assert r.status_code == 200, scheme


async def test_health_and_schema_need_no_key(anon: Client) -> None:
    assert (await anon.get("/healthz")).status_code == 200
    assert (await anon.get("/readyz")).status_code == 200
    assert (await anon.get("/schema/openapi.json")).status_code == 200


async def test_no_key_configured_allows_all(store: Any) -> None:
    app = create_app(Settings(_env_file=None, admin_api_key=None), store)  # type: ignore[call-arg,arg-type]
    async with AsyncTestClient(app) as c:
        assert (await c.get(AGENTS)).status_code == 200


async def test_blank_key_setting_means_no_key(store: Any) -> None:
    settings = Settings(_env_file=None, admin_api_key="   ")  # type: ignore[call-arg,arg-type]
    assert settings.admin_api_key is None
    async with AsyncTestClient(create_app(settings, store)) as c:
        assert (await c.get(AGENTS)).status_code == 200


async def test_extra_route_handlers_sit_outside_the_admin_guard(
    settings: Settings, store: Any, admin_key: str
) -> None:
    """The hook the token endpoint uses: mounted as given, with its own auth (none here)."""

    @get("/api/v1/extra-ping", sync_to_thread=False)
    def extra_ping() -> dict[str, str]:
        return {"pong": "yes"}

    app = create_app(settings, store, extra_route_handlers=[extra_ping])
    async with AsyncTestClient(app) as c:
        r = await c.get("/api/v1/extra-ping")
        assert (r.status_code, r.json()) == (200, {"pong": "yes"})
        assert (await c.get(AGENTS)).status_code == 401  # the admin routes stay guarded
