"""Issue 21, items 3 and 5: who a `POST /api/v1/token` caller is.

Item 3: uvicorn rewrote the client address from `X-Forwarded-For` for any loopback
peer, so 40 requests with 40 made-up addresses all got 201 past a 30-per-minute limit.
Tested end to end: `python -m app dev` (the supervisor's real uvicorn) on loopback.

Item 5: without `TOKEN_API_KEY` anyone may claim any `user_id`; it becomes the LiveKit
identity and the session record's user, so it is marked `unverified:`. With the key,
the trusted backend's `user_id` is used as given. The session-record test goes from
the minted token's dispatch metadata through the worker's own session start.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient
from livekit import api
from pydantic import SecretStr

from app.api.app import create_app
from app.api.tokens import UNVERIFIED_PREFIX, token_controller
from app.domain import AgentConfigInput, Route
from app.domain.routing import MetadataSource
from app.settings import Settings
from app.store.sql import SQLStore
from app.worker.services import WorkerServices
from app.worker.session_start import prepare_session
from sim.fake_openai import FakeOpenAI
from tests.reliability.conftest import LiveApp

LIMIT = 30  # the default TOKEN_RATE_PER_MINUTE
SPOOFS = [
    {"X-Forwarded-For": "203.0.113.{i}"},
    {"X-Forwarded-For": "203.0.113.{i}, 10.0.0.1"},
    {"Forwarded": "for=198.51.100.{i}"},
    {"X-Real-IP": "192.0.2.{i}"},
]


def _mint_40(app: LiveApp, headers_for: object) -> list[int]:
    codes = []
    with httpx.Client(base_url=app.base, timeout=10) as c:
        for i in range(40):
            headers = {k: v.format(i=i) for k, v in headers_for(i).items()}  # type: ignore[operator]
            codes.append(c.post("/api/v1/token", json={"purpose": "support"}, headers=headers).status_code)
    return codes


@pytest.mark.slow
def test_forwarded_headers_from_loopback_do_not_multiply_the_token_limit(
    tmp_path: Path, live_app: type[LiveApp]
) -> None:
    app = live_app(tmp_path, "xff")
    app.wait_seeded()
    codes = _mint_40(app, lambda i: SPOOFS[i % len(SPOOFS)])
    assert codes == [201] * LIMIT + [429] * (40 - LIMIT), codes


@pytest.mark.slow
def test_client_ip_header_is_the_only_proxy_header_believed(tmp_path: Path, live_app: type[LiveApp]) -> None:
    """Behind a proxy (CLIENT_IP_HEADER set) the limit counts per that header's value
    and X-Forwarded-For still changes nothing."""
    app = live_app(tmp_path, "fly", extra_env={"CLIENT_IP_HEADER": "Fly-Client-IP"})
    app.wait_seeded()
    same_client = _mint_40(app, lambda i: {"Fly-Client-IP": "198.51.100.7", **SPOOFS[i % len(SPOOFS)]})
    assert same_client == [201] * LIMIT + [429] * (40 - LIMIT), same_client
    many_clients = _mint_40(app, lambda i: {"Fly-Client-IP": "198.51.100.{i}".replace("{i}", str(100 + i))})
    assert many_clients == [201] * 40, many_clients


# ---------------------------------------------------------------- identity

LK_KEY, LK_SECRET = "APIidentity", "identity-secret-0123456789abcdef0123"
TOKEN_KEY = "identity-token-key-0123456789"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLStore]:
    s = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/id.db")
    await s.start()
    await s.create_agent_config(AgentConfigInput.model_validate(
        {"agent_id": "support-agent-v1", "name": "Support", "prompt_config": {"instructions": "Help."}}))
    await s.put_route(Route(purpose="support", agent_id="support-agent-v1", is_default=True))
    yield s
    await s.aclose()


async def _mint(store: SQLStore, body: dict[str, object], token_key: str | None = None) -> httpx.Response:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, livekit_url="wss://lk.example", livekit_api_key=SecretStr(LK_KEY),
        livekit_api_secret=SecretStr(LK_SECRET), token_api_key=SecretStr(token_key) if token_key else None,
        admin_api_key=SecretStr("identity-admin-key-0123"),
    )
    headers = {"Authorization": f"Bearer {token_key}"} if token_key else {}
    async with AsyncTestClient(create_app(settings, store, extra_route_handlers=[token_controller(settings)])) as c:
        return await c.post("/api/v1/token", json=body, headers=headers)


def _claims(r: httpx.Response) -> tuple[str, dict[str, object]]:
    assert r.status_code == 201, r.text
    claims = api.TokenVerifier(LK_KEY, LK_SECRET).verify(r.json()["participant_token"])
    assert r.json()["participant_identity"] == claims.identity
    return claims.identity, json.loads(claims.room_config.agents[0].metadata)


async def test_without_a_token_key_a_claimed_user_id_is_marked_unverified(store: SQLStore) -> None:
    identity, meta = _claims(await _mint(store, {"purpose": "support", "user_id": "alice@example.com"}))
    assert identity == "unverified:alice@example.com" and meta["user_id"] == identity
    identity, _ = _claims(await _mint(store, {"purpose": "support"}))  # none claimed: still not asserted
    assert identity.startswith(UNVERIFIED_PREFIX + "user-")
    # a caller cannot shed the mark by claiming an id that looks asserted
    identity, _ = _claims(await _mint(store, {"user_id": "unverified:x"}))
    assert identity == "unverified:unverified:x"


async def test_with_a_token_key_the_backend_asserts_the_identity(store: SQLStore) -> None:
    identity, meta = _claims(await _mint(store, {"user_id": "alice@example.com"}, token_key=TOKEN_KEY))
    assert identity == "alice@example.com" and meta["user_id"] == identity
    identity, _ = _claims(await _mint(store, {}, token_key=TOKEN_KEY))  # none asserted: a fresh one
    assert identity.startswith("user-")


async def test_unverified_identity_fits_what_the_worker_keeps(store: SQLStore) -> None:
    """The worker keeps user ids up to 128 characters; the prefix must not push one out."""
    longest = 128 - len(UNVERIFIED_PREFIX)
    assert _claims(await _mint(store, {"user_id": "u" * longest}))[0] == UNVERIFIED_PREFIX + "u" * longest
    r = await _mint(store, {"user_id": "u" * (longest + 1)})
    assert r.status_code == 422 and r.json()["extra"][0]["key"] == "user_id", r.text
    assert _claims(await _mint(store, {"user_id": "u" * 128}, token_key=TOKEN_KEY))[0] == "u" * 128


async def test_session_record_shows_the_unverified_identity(store: SQLStore) -> None:
    """The token's dispatch metadata is what the worker routes on: the stored session
    record carries the marked identity."""
    _, meta = _claims(await _mint(store, {"purpose": "support", "user_id": "mallory"}))
    settings = Settings(_env_file=None, openai_api_key=None, openai_base_url=None)  # type: ignore[call-arg]
    services = WorkerServices(settings, store)
    await services.start()
    try:
        prepared = await prepare_session(services, [MetadataSource("job", json.dumps(meta))], room="id-room",
                                         audio=False, llm_client=FakeOpenAI().client())
        await prepared.aclose()
        record = await store.get_session(prepared.record.session_id)
    finally:
        await services.aclose()
    assert record.user_id == "unverified:mallory"
    assert record.agent_id == "support-agent-v1"
