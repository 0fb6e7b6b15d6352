"""Error mapping: the shared JSON shape, store outages, and no leaks on unexpected errors."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.domain import StoreUnavailable

Client = AsyncTestClient[Litestar]
AGENTS = "/api/v1/agents/config"


async def test_unexpected_exception_is_generic_500_and_logged(
    client: Client, store: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("SELECT secret FROM internals -- token=abc123")

    monkeypatch.setattr(store, "get_agent_config", broken)
    with caplog.at_level(logging.ERROR, logger="app.api.errors"):
        r = await client.get(f"{AGENTS}/support-agent")
    assert r.status_code == 500
    assert r.json() == {"status_code": 500, "detail": "Internal Server Error"}
    assert "abc123" not in r.text and "SELECT" not in r.text and "Traceback" not in r.text
    # ...but the operator can find it
    assert "RuntimeError" in caplog.text and "abc123" in caplog.text


async def test_store_unavailable_is_503_with_retry_after(
    client: Client, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*_: Any, **__: Any) -> Any:
        raise StoreUnavailable("database error: OperationalError")

    monkeypatch.setattr(store, "list_agent_configs", down)
    r = await client.get(AGENTS)
    assert r.status_code == 503
    assert r.json() == {"status_code": 503, "detail": "store unavailable, retry shortly"}
    assert r.headers["retry-after"] == "1"


async def test_closed_store_is_503_not_500(client: Client, store: Any, body: Any) -> None:
    await store.aclose()
    assert (await client.get(AGENTS)).status_code == 503
    assert (await client.post(AGENTS, json=body())).status_code == 503


async def test_concurrent_writer_without_if_match_is_409(
    client: Client, agent: dict[str, Any], store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost race the client did not ask to detect is a plain conflict, not a failed precondition."""
    from app.domain import VersionConflict

    async def raced(*_: Any, **__: Any) -> Any:
        raise VersionConflict("support-agent", 1, None)

    monkeypatch.setattr(store, "update_agent_config", raced)
    r = await client.patch(f"{AGENTS}/support-agent", json={"name": "x"})
    assert r.status_code == 409
    assert "etag" not in r.headers


async def test_unknown_path_and_method_are_json(client: Client) -> None:
    r = await client.get("/api/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["status_code"] == 404
    r = await client.post("/api/v1/sessions")
    assert r.status_code == 405
    assert r.json()["status_code"] == 405


async def test_error_shape_everywhere(client: Client, agent: dict[str, Any], body: Any) -> None:
    responses = [
        await client.get(f"{AGENTS}/ghost-agent"),  # 404
        await client.post(AGENTS, json=body()),  # 409
        await client.patch(f"{AGENTS}/support-agent", json={"name": 1}),  # 422
        await client.patch(f"{AGENTS}/support-agent", json={}, headers={"If-Match": '"9"'}),  # 412
        await client.patch(f"{AGENTS}/support-agent", json={}, headers={"If-Match": "nine"}),  # 400
    ]
    assert [r.status_code for r in responses] == [404, 409, 422, 412, 400]
    for r in responses:
        assert r.headers["content-type"].startswith("application/json")
        err = r.json()
        assert set(err) <= {"status_code", "detail", "extra"}
        assert err["status_code"] == r.status_code
        assert isinstance(err["detail"], str) and err["detail"]
