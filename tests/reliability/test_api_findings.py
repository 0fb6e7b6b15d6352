"""Regression tests for what fuzzing the live API found (item 1), in process and fast.

Each test names the finding; `test_api_fuzz.py` re-finds them all if they come back,
these say which one it is in a second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.api.app import create_app
from app.api.tokens import token_controller
from app.settings import Settings
from app.store.sql import SQLStore
from tests.api.conftest import agent_body

KEY = "findings-admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
AGENTS = "/api/v1/agents/config"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/f.db")
    await store.start()
    settings = Settings(_env_file=None, admin_api_key=KEY, token_rate_per_minute=1000)  # type: ignore[call-arg]
    app = create_app(settings, store, extra_route_handlers=[token_controller(settings)])
    async with AsyncTestClient(app) as c:
        c.headers.update(AUTH)
        yield c
    await store.aclose()


@pytest.fixture
async def spec(client: AsyncTestClient[Litestar]) -> dict[str, Any]:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200
    return r.json()


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        out = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for v in node.values():
            out |= _refs(v)
        return out
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


async def test_component_schemas_say_what_pydantic_validates(spec: dict[str, Any]) -> None:
    """Finding: Litestar documented `prompt_config.variables` and the token's `variables`
    (dicts) as arrays, dropped nested patterns and `ge=0` bounds; responses then
    violated the document and documented bodies were rejected."""
    schemas = spec["components"]["schemas"]
    variables = schemas["PromptConfig"]["properties"]["variables"]
    assert variables["type"] == "object" and "pattern" in variables["propertyNames"]
    assert schemas["TokenRequest"]["properties"]["variables"]["type"] == "object"
    assert schemas["LLMConfig"]["properties"]["temperature"]["anyOf"][0]["minimum"] == 0
    assert schemas["RouteInput"]["properties"]["agent_id"]["pattern"]
    assert schemas["AgentConfigInput"]["additionalProperties"] is False
    missing = {r for r in _refs(spec) if r.rsplit("/", 1)[-1] not in schemas}
    assert not missing, missing


async def test_merge_patch_body_and_if_match_are_documented_as_accepted(spec: dict[str, Any]) -> None:
    """Findings: the PATCH body was a free-form object (unknown keys are a 422), and
    `If-Match` a nullable unconstrained string (a 400 for anything but a version)."""
    op = spec["paths"]["/api/v1/agents/config/{agent_id}"]["patch"]
    for media in op["requestBody"]["content"].values():
        assert media["schema"] == {"$ref": "#/components/schemas/AgentConfigPatch"}
    patch = spec["components"]["schemas"]["AgentConfigPatch"]
    assert patch["additionalProperties"] is False and "required" not in patch
    assert {"type": "null"} in patch["properties"]["name"]["anyOf"]
    (if_match,) = [p for p in op["parameters"] if p["name"] == "If-Match"]
    assert if_match["schema"]["type"] == "string" and if_match["schema"]["pattern"]


async def test_parameter_422s_are_documented(spec: dict[str, Any]) -> None:
    """Finding: an out-of-range `offset` or an over-long path id is a 422, undocumented."""
    for path, method in [("/api/v1/agents/config", "get"), ("/api/v1/agents/config/{agent_id}", "get"),
                         ("/api/v1/routes/{purpose}", "delete"), ("/api/v1/sessions", "get"),
                         ("/api/v1/agents/config/{agent_id}/rollback/{version}", "post")]:
        assert "422" in spec["paths"][path][method]["responses"], (path, method)
    token = spec["paths"]["/api/v1/token"]["post"]["responses"]
    assert {"201", "400", "413", "422", "429", "503"} <= set(token)


async def test_options_lists_every_method_of_the_path(client: AsyncTestClient[Litestar]) -> None:
    """Finding: Litestar 2's automatic OPTIONS listed only the first handler's method
    (`Allow: OPTIONS, POST` on a path that also has GET; litestar#4169)."""
    expect = {AGENTS: "GET, OPTIONS, POST", f"{AGENTS}/x": "DELETE, GET, OPTIONS, PATCH, PUT",
              "/api/v1/routes": "DELETE, GET, OPTIONS, PUT", "/api/v1/routes/x": "DELETE, GET, OPTIONS, PUT"}
    for path, allow in expect.items():
        r = await client.options(path)
        assert r.status_code == 204 and r.headers["allow"] == allow, (path, r.headers.get("allow"))


@pytest.mark.parametrize(
    "change",
    [
        {"enabled": 0},
        {"enabled": "true"},
        {"llm": {"temperature": "0.5"}},
        {"llm": {"max_tokens": "100"}},
        {"llm": {"max_tokens": True}},
        {"vad": {"min_silence_duration": False}},
        {"tools": [{"type": "http", "name": "t", "description": "d", "url": "https://a.example/", "timeout_s": "5"}]},
    ],
)
async def test_lax_scalars_are_422(client: AsyncTestClient[Litestar], change: dict[str, Any]) -> None:
    """Finding: pydantic's lax mode (Litestar validates bodies with strict=False) took
    `0`/`"true"` for booleans and `"0.5"` for numbers: bodies the document calls invalid."""
    r = await client.post(AGENTS, json=agent_body("lax-agent", **change))
    assert r.status_code == 422, r.text


async def test_route_flags_and_times_are_exact_types(client: AsyncTestClient[Litestar]) -> None:
    assert (await client.post(AGENTS, json=agent_body("route-target"))).status_code == 201
    r = await client.put("/api/v1/routes/sales", json={"agent_id": "route-target", "is_default": 0})
    assert r.status_code == 422, r.text
    r = await client.put("/api/v1/routes", json=[{"purpose": "p", "agent_id": "route-target", "updated_at": 0}])
    assert r.status_code == 422, r.text
    r = await client.put("/api/v1/routes", json=[{"purpose": "p", "agent_id": "route-target",
                                                  "updated_at": "2025-01-01T00:00:00Z"}])
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", ["0.5", "null", "2020-01-01", "yesterday", "2020-13-01T00:00:00Z"])
async def test_session_time_filters_take_rfc3339_only(client: AsyncTestClient[Litestar], value: str) -> None:
    """Finding: `?until=0.5` (a Unix time) and `?until=null` were accepted; a huge
    number was a 422 'Timestamp out of range' for a value the document allowed."""
    r = await client.get("/api/v1/sessions", params={"until": value})
    assert r.status_code == 422, r.text
    assert r.json()["extra"][0]["key"] == "until"


async def test_session_time_filters_accept_rfc3339(client: AsyncTestClient[Litestar]) -> None:
    for value in ["2025-01-31T09:00:00Z", "2025-01-31t09:00:00.123456789+02:00", "2016-12-31T23:59:60Z"]:
        r = await client.get("/api/v1/sessions", params={"since": value})
        assert r.status_code == 200, (value, r.text)


async def test_url_growing_past_the_cap_when_normalised_is_refused(client: AsyncTestClient[Litestar]) -> None:
    """Finding (the serious one): pydantic caps a URL's input at 2083 chars, then
    percent-encodes it; a longer *stored* URL failed validation on every read, so one
    accepted write made the agent's GET/versions a 422 and broke the config listing
    the worker's cache reloads from."""
    url = "https://tools.example/" + "ü" * 400  # 422 input chars, ~2.4 kB once encoded
    tool = {"type": "http", "name": "lookup", "description": "d", "url": url}
    r = await client.post(AGENTS, json=agent_body("url-agent", tools=[tool]))
    assert r.status_code == 422, r.text
    assert "normalised" in r.text
    assert (await client.post(AGENTS, json=agent_body("url-agent"))).status_code == 201
    r = await client.patch(f"{AGENTS}/url-agent", json={"tools": [tool]})
    assert r.status_code == 422, r.text
    assert (await client.get(AGENTS)).status_code == 200
    assert (await client.get(f"{AGENTS}/url-agent/versions")).status_code == 200
