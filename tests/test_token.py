"""POST /api/v1/token: checked before minting, dispatch metadata embedded, rate-limited."""

from __future__ import annotations

import json

import pytest
from litestar.testing import AsyncTestClient
from livekit import api
from pydantic import SecretStr

from app.api.app import create_app
from app.api.tokens import token_controller
from app.domain import AgentConfigInput, Route
from app.settings import Settings
from app.store.sql import SQLStore

LK_KEY, LK_SECRET = "APIkey123", "lk-secret-0123456789abcdef0123456789abcdef"


def make_settings(**kw) -> Settings:
    base = dict(
        livekit_url="wss://example.livekit.cloud", livekit_api_key=SecretStr(LK_KEY),
        livekit_api_secret=SecretStr(LK_SECRET), admin_api_key=SecretStr("admin-key-123456"),
        token_rate_per_minute=100,
    )
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path):
    s = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    await s.start()
    await s.create_agent_config(AgentConfigInput(
        agent_id="support-agent-v1", name="Support",
        prompt_config={"instructions": "Help {customer} of {company}.",
                       "variables": {"customer": {"required": True}, "company": {"default": "Acme"}}},
    ))
    await s.create_agent_config(AgentConfigInput(
        agent_id="sales-agent-v1", name="Sales", enabled=False, prompt_config={"instructions": "Sell."},
    ))
    await s.put_route(Route(purpose="support", agent_id="support-agent-v1", is_default=True))
    await s.put_route(Route(purpose="sales", agent_id="sales-agent-v1"))
    yield s
    await s.aclose()


def client_for(settings: Settings, store: SQLStore) -> AsyncTestClient:
    app = create_app(settings, store, extra_route_handlers=[token_controller(settings)])
    return AsyncTestClient(app)


async def test_mints_a_token_that_dispatches_our_agent_with_metadata(store) -> None:
    # With TOKEN_API_KEY the caller is a trusted backend and user_id is the identity as
    # given; without it the identity is marked unverified (tests/reliability/test_token_identity.py).
    settings = make_settings(token_api_key=SecretStr("token-key-0123456789"))
    async with client_for(settings, store) as c:
        r = await c.post("/api/v1/token", headers={"Authorization": "Bearer token-key-0123456789"}, json={
            "purpose": "support", "user_id": "u-42", "variables": {"customer": "Ada"}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["server_url"] == "wss://example.livekit.cloud"
    assert body["agent_id"] == "support-agent-v1"
    claims = api.TokenVerifier(LK_KEY, LK_SECRET).verify(body["participant_token"])
    assert claims.identity == "u-42"
    assert claims.video.room == body["room_name"]
    assert claims.video.room_join and claims.video.can_publish and claims.video.can_subscribe
    dispatch = claims.room_config.agents[0]
    assert dispatch.agent_name == "voice-platform"
    meta = json.loads(dispatch.metadata)
    assert meta == {"purpose": "support", "variables": {"customer": "Ada"}, "user_id": "u-42"}
    assert LK_SECRET not in r.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"purpose": "nope"}, "purpose"),
        ({"agent_id": "ghost-agent"}, "agent_id"),
        ({"agent_id": "sales-agent-v1", "variables": {}}, "agent_id"),  # disabled
        ({"purpose": "sales"}, "purpose"),  # routes to a disabled agent
        ({"purpose": "support", "variables": {}}, "variables.customer"),  # required missing
        ({"purpose": "support", "variables": {"customer": "x", "evil": "y"}}, "variables.evil"),
        ({"purpose": "support", "agent_id": "support-agent-v1"}, None),
        ({"purpose": "support", "variables": {"customer": "x" * 5000}}, None),
        ({"purpose": "support", "user_id": "<script>"}, "user_id"),
        ({"purpose": "support", "unknown": 1}, None),
    ],
)
async def test_refuses_bad_requests_with_422_naming_the_field(store, body, field) -> None:
    async with client_for(make_settings(), store) as c:
        r = await c.post("/api/v1/token", json=body)
    assert r.status_code == 422, r.text
    if field:
        assert field in json.dumps(r.json()["extra"])


async def test_no_livekit_credentials_is_503(store) -> None:
    settings = make_settings(livekit_url=None)
    async with client_for(settings, store) as c:
        r = await c.post("/api/v1/token", json={"purpose": "support", "variables": {"customer": "A"}})
    assert r.status_code == 503
    assert "LiveKit" in r.json()["detail"]


async def test_token_key_is_enforced_when_set_and_admin_key_is_not_needed(store) -> None:
    settings = make_settings(token_api_key=SecretStr("token-key-abcdef"))
    body = {"purpose": "support", "variables": {"customer": "A"}}
    async with client_for(settings, store) as c:
        assert (await c.post("/api/v1/token", json=body)).status_code == 401
        wrong = await c.post("/api/v1/token", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "token-key" not in wrong.text
        ok = await c.post("/api/v1/token", json=body, headers={"Authorization": "Bearer token-key-abcdef"})
        assert ok.status_code == 201


async def test_rate_limited_per_client(store) -> None:
    settings = make_settings(token_rate_per_minute=3)
    body = {"purpose": "support", "variables": {"customer": "A"}}
    async with client_for(settings, store) as c:
        codes = [(await c.post("/api/v1/token", json=body)).status_code for _ in range(5)]
    assert codes[:3] == [201, 201, 201]
    assert codes[3:] == [429, 429]


async def test_rate_limit_counts_per_proxy_client_header(store) -> None:
    """Behind a proxy every request has the proxy's address: with CLIENT_IP_HEADER set,
    callers are told apart by the header the proxy sets, so one caller's burst does not
    lock out the others; without the header the peer address still counts."""
    settings = make_settings(token_rate_per_minute=2, client_ip_header="Fly-Client-IP")
    body = {"purpose": "support", "variables": {"customer": "A"}}

    async def codes(n: int, ip: str | None) -> list[int]:
        headers = {"Fly-Client-IP": ip} if ip is not None else {}
        return [(await c.post("/api/v1/token", json=body, headers=headers)).status_code for _ in range(n)]

    async with client_for(settings, store) as c:
        assert await codes(3, "203.0.113.7") == [201, 201, 429]
        assert await codes(2, "198.51.100.9") == [201, 201]  # another caller, same proxy peer
        assert await codes(1, "198.51.100.9, 10.0.0.1") == [429]  # first value only
        assert await codes(2, None) == [201, 201]  # no header: the peer address
        assert await codes(1, "") == [429]  # empty header: the peer address again


async def test_client_ip_header_setting_is_a_header_name() -> None:
    with pytest.raises(ValueError, match="client_ip_header"):
        make_settings(client_ip_header="Bad Header: x")


async def test_pte_mode_mints_for_the_pte_agent_without_routes(store) -> None:
    settings = make_settings(agent_mode="pte")
    async with client_for(settings, store) as c:
        r = await c.post("/api/v1/token", json={"user_id": "candidate-1"})
    assert r.status_code == 201, r.text
    assert r.json()["agent_id"] == "pte-interview"


async def test_a_version_token_pins_that_version_on_the_admin_api(store) -> None:
    """A draft is tried with a token from the admin API (the publish role), whose dispatch
    metadata names the version; the public endpoint cannot pin one."""
    await store.update_agent_config("support-agent-v1", {"auto_publish": False, "description": "draft"})
    settings = make_settings()
    admin = {"Authorization": "Bearer admin-key-123456"}
    url = "/api/v1/agents/config/support-agent-v1/versions/2/token"
    async with client_for(settings, store) as c:
        r = await c.post(url, json={"user_id": "tester", "variables": {"customer": "Ada"}}, headers=admin)
        assert r.status_code == 201, r.text
        claims = api.TokenVerifier(LK_KEY, LK_SECRET).verify(r.json()["participant_token"])
        meta = json.loads(claims.room_config.agents[0].metadata)
        assert meta == {"agent_id": "support-agent-v1", "version": 2, "variables": {"customer": "Ada"},
                        "user_id": "tester"}
        assert claims.identity == "tester"  # an admin key's caller is asserted, not "unverified:"
        assert (await c.post(url, json={"variables": {"customer": "Ada"}})).status_code == 401
        r = await c.post(url, json={"variables": {}}, headers=admin)
        assert r.status_code == 422 and r.json()["extra"][0]["key"] == "variables.customer"
        r = await c.post(url.replace("/2/", "/3/"), json={"variables": {"customer": "Ada"}}, headers=admin)
        assert r.status_code == 404
        r = await c.post("/api/v1/token", json={"agent_id": "support-agent-v1", "version": 2,
                                                "variables": {"customer": "Ada"}})
        assert r.status_code == 422 and r.json()["extra"][0]["key"] == "version"
    handler = next(h for route in client_for(settings, store).app.routes if route.path.endswith("/token")
                   and "versions" in route.path for h in route.route_handlers  # type: ignore[attr-defined]
                   if "POST" in h.http_methods)
    assert handler.opt["role"] == "publish"
