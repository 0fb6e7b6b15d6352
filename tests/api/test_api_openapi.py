"""The OpenAPI document describes every route, body, error and the security scheme."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def spec(anon: Client) -> dict[str, Any]:
    r = await anon.get("/schema/openapi.json")
    assert r.status_code == 200
    return r.json()


def _op(spec: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    return spec["paths"][path][method]


def _ref(schema: dict[str, Any]) -> str:
    return schema.get("$ref", "").rsplit("/", 1)[-1]


async def test_schema_ui_is_served(anon: Client) -> None:
    r = await anon.get("/schema")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]


async def test_every_path_is_documented(spec: dict[str, Any]) -> None:
    expected = {
        "/api/v1/agents/config": {"get", "post"},
        "/api/v1/agents/config/{agent_id}": {"get", "put", "patch", "delete"},
        "/api/v1/agents/config/{agent_id}/versions": {"get"},
        "/api/v1/agents/config/{agent_id}/rollback/{version}": {"post"},
        "/api/v1/routes": {"get", "put", "delete"},
        "/api/v1/routes/{purpose}": {"get", "put", "delete"},
        "/api/v1/sessions": {"get"},
        "/api/v1/sessions/{session_id}": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
    }
    for path, methods in expected.items():
        assert path in spec["paths"], path
        assert methods <= set(spec["paths"][path]), (path, spec["paths"][path].keys())


async def test_bodies_use_the_domain_models(spec: dict[str, Any]) -> None:
    create = _op(spec, "/api/v1/agents/config", "post")
    assert _ref(create["requestBody"]["content"]["application/json"]["schema"]) == "AgentConfigInput"
    assert _ref(create["responses"]["201"]["content"]["application/json"]["schema"]) == "AgentConfig"
    assert {"ETag", "Location"} <= set(create["responses"]["201"]["headers"])
    patch = _op(spec, "/api/v1/agents/config/{agent_id}", "patch")
    assert "application/merge-patch+json" in patch["requestBody"]["content"]
    put_route = _op(spec, "/api/v1/routes/{purpose}", "put")
    assert _ref(put_route["requestBody"]["content"]["application/json"]["schema"]) == "RouteInput"
    schemas = spec["components"]["schemas"]
    models = {"AgentConfig", "AgentConfigInput", "Route", "RouteInput", "SessionRecord", "ErrorBody"}
    assert models <= set(schemas)
    assert schemas["AgentConfigInput"]["properties"]["agent_id"]["pattern"]


async def test_error_responses_are_documented(spec: dict[str, Any]) -> None:
    item = "/api/v1/agents/config/{agent_id}"
    expectations = {
        ("/api/v1/agents/config", "post"): {"409", "422"},
        (item, "get"): {"404"},
        (item, "patch"): {"400", "404", "412", "415", "422"},
        (item, "put"): {"400", "404", "412", "422"},
        (item, "delete"): {"404", "409", "412"},
        ("/api/v1/agents/config/{agent_id}/rollback/{version}", "post"): {"404", "412"},
        ("/api/v1/routes/{purpose}", "put"): {"422"},
        ("/api/v1/sessions/{session_id}", "get"): {"404"},
    }
    for (path, method), codes in expectations.items():
        responses = _op(spec, path, method)["responses"]
        assert codes <= set(responses), (path, method, responses.keys())
        for code in codes - {"400"}:  # Litestar documents 400 with its own schema
            schema = responses[code]["content"]["application/json"]["schema"]
            assert _ref(schema) == "ErrorBody", (path, method, code)


async def test_every_admin_operation_documents_401_403_and_503(spec: dict[str, Any]) -> None:
    for path, item in spec["paths"].items():
        if path.startswith("/api/v1"):
            for method, op in item.items():
                assert {"401", "403", "503"} <= set(op["responses"]), (path, method)


async def test_bearer_security_applies_to_admin_routes_only(spec: dict[str, Any]) -> None:
    (name,) = spec["components"]["securitySchemes"]
    assert spec["components"]["securitySchemes"][name] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <key>`: `ADMIN_API_KEY`, or a named key (`vp_…`) from "
        "`/api/v1/keys` whose role allows the operation (read < edit < publish < admin)",
    }
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if path.startswith("/api/v1") or path == "/metrics":  # /metrics: METRICS_ACCESS=key, the default
                assert op.get("security") == [{name: []}], (path, method)
            else:
                assert not op.get("security"), (path, method)


async def test_if_match_header_is_documented(spec: dict[str, Any]) -> None:
    params = _op(spec, "/api/v1/agents/config/{agent_id}", "patch")["parameters"]
    (if_match,) = [p for p in params if p["name"] == "If-Match"]
    assert if_match["in"] == "header" and not if_match["required"]
