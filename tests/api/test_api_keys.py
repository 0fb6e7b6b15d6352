"""Named API keys and roles through the real app: `/api/v1/keys` (admin only; the secret
shown once), the role every operation of the OpenAPI document needs (a lower role gets
a 403 naming the role, the right one gets through), the audit trail recording each
key's name, revocation within the stated bound, and a lookup that compares every
stored hash in constant time whether or not the key exists."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.api import auth as auth_module, create_app
from app.api.auth import KEY_TABLE_TTL_S, KeyRing
from app.domain.keys import ApiKeyInput, Role
from app.settings import Settings
from app.store.sql import SQLStore
from tests.api.conftest import AGENTS, AUTH, agent_body

KEYS = "/api/v1/keys"
AUDIT = "/api/v1/audit"
Client = AsyncTestClient[Litestar]
ROLES = [Role.read, Role.edit, Role.publish, Role.admin]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def make_key(client: Client, name: str, role: str) -> str:
    r = await client.post(KEYS, json={"name": name, "role": role}, headers=AUTH)
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


# ------------------------------------------------------------------ /api/v1/keys


async def test_create_shows_the_secret_once_list_never_does(client: Client) -> None:
    r = await client.post(KEYS, json={"name": "ci-deploy", "role": "publish"},
                          headers={"X-Change-Note": "for the deploy pipeline"})
    assert r.status_code == 201
    assert r.headers["cache-control"] == "no-store"  # a secret: no proxy or browser cache keeps it
    created = r.json()
    secret = created["secret"]
    assert re.fullmatch(r"vp_[A-Za-z0-9_-]{43}", secret)
    assert (created["name"], created["role"], created["last_used_at"]) == ("ci-deploy", "publish", None)

    listed = (await client.get(KEYS)).json()
    assert listed == [{k: v for k, v in created.items() if k != "secret"}]
    assert secret not in (await client.get(KEYS)).text
    audit = (await client.get(AUDIT, params={"type": "key.created"})).json()["items"]
    assert [(e["actor"], e["note"], e["data"]) for e in audit] == [
        ("admin", "for the deploy pipeline", {"name": "ci-deploy", "role": "publish", "change": "created"})]
    assert secret not in (await client.get(AUDIT)).text


async def test_key_endpoint_errors(client: Client) -> None:
    await make_key(client, "jane", "edit")
    r = await client.post(KEYS, json={"name": "jane", "role": "read"})
    assert r.status_code == 409 and "jane" in r.json()["detail"]
    for body, key in (({"name": "admin", "role": "read"}, "name"), ({"name": "Bad Name", "role": "read"}, "name"),
                      ({"name": "ok", "role": "root"}, "role"), ({"role": "read"}, "name"),
                      ({"name": "ok", "role": "read", "secret": "vp_x"}, "secret")):
        r = await client.post(KEYS, json=body)
        assert r.status_code == 422, body
        assert [e["key"] for e in r.json()["extra"]] == [key], r.json()
    r = await client.delete(f"{KEYS}/nobody")
    assert r.status_code == 404 and "nobody" in r.json()["detail"]
    assert [k["name"] for k in (await client.get(KEYS)).json()] == ["jane"]


async def test_a_named_key_records_its_name_and_last_use(client: Client, anon: Client) -> None:
    secret = await make_key(client, "ci-bot", "edit")
    r = await anon.post(AGENTS, json=agent_body("billing"), headers={**bearer(secret), "X-Change-Note": "new bot"})
    assert r.status_code == 201, r.text
    r = await anon.patch(f"{AGENTS}/billing", json={"description": "v2"}, headers=bearer(secret))
    assert r.status_code == 200
    events = (await client.get(AUDIT, params={"actor": "ci-bot"})).json()
    assert events["total"] == 3
    assert [(e["type"], e["actor"], e["note"]) for e in reversed(events["items"])] == [
        ("agent.created", "ci-bot", "new bot"), ("agent.version_created", "ci-bot", "new bot"),
        ("agent.version_created", "ci-bot", None)]
    assert (await client.get(AUDIT, params={"actor": "admin"})).json()["total"] == 1  # the key's creation
    (listed,) = (await client.get(KEYS)).json()
    assert listed["last_used_at"] is not None


async def test_a_role_too_low_is_a_403_naming_the_role_never_the_key(client: Client, anon: Client,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reader = await make_key(client, "dashboard", "read")
    editor = await make_key(client, "jane", "edit")
    await client.post(AGENTS, json=agent_body("billing"))
    assert (await anon.get(f"{AGENTS}/billing", headers=bearer(reader))).status_code == 200
    r = await anon.patch(f"{AGENTS}/billing", json={"description": "x"}, headers=bearer(reader))
    assert r.status_code == 403
    assert r.json()["detail"] == ("this operation needs an API key with the 'edit' role (or higher); "
                                  "this key's role is 'read'")
    r = await anon.post(f"{AGENTS}/billing/rollback/1", headers=bearer(editor))
    assert r.status_code == 403 and "'publish'" in r.json()["detail"]
    r = await anon.post(KEYS, json={"name": "escalate", "role": "admin"}, headers=bearer(editor))
    assert r.status_code == 403 and "'admin'" in r.json()["detail"]
    for resp in (r,):
        assert editor not in resp.text and "jane" not in resp.text
    assert all(s not in caplog.text for s in (reader, editor))
    assert (await anon.get(AGENTS, headers=bearer(editor + "x"))).status_code == 401
    assert (await anon.get(AGENTS, headers={"Authorization": f"Token {editor}"})).status_code == 401


# ---------------------------------------------------------------- the role matrix

PUBLISH_ACTIONS = re.compile(r"/(publish|canary|promote|abort|rollback)(/|$)|/versions/[^/]+/token$")
"""Writes that change what callers get: publishing, canaries, rollbacks, and minting a
call against a pinned version (a draft, which routing would not hand out)."""


def expected_role(method: str, path: str) -> Role:
    """What each operation must need, written down independently of the handlers' `opt`
    (issue 15 §4): keys and webhooks are admin; publishing, canaries, rollbacks, calls
    with a pinned version and route changes are publish; other writes edit; reads read."""
    if path.startswith(("/api/v1/keys", "/api/v1/webhooks")):
        return Role.admin
    if method in ("GET", "HEAD"):
        return Role.read
    if PUBLISH_ACTIONS.search(path) or path.startswith("/api/v1/routes"):
        return Role.publish
    return Role.edit


def concrete(path: str) -> str:
    path = re.sub(r"\{(\w*version\w*)\}", "1", path)
    return re.sub(r"\{\w+\}", "some-id", path)


@pytest.fixture
async def role_keys(client: Client) -> dict[Role, str]:
    return {role: await make_key(client, f"k-{role.value}", role.value) for role in ROLES}


async def test_every_operation_in_the_openapi_document_needs_its_role(
    client: Client, anon: Client, role_keys: dict[Role, str]
) -> None:
    spec = (await anon.get("/schema/openapi.json")).json()
    checked = 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if not op.get("security"):
                continue  # open: health probes, the token endpoint (its own key)
            method = method.upper()
            needed = expected_role(method, path)
            url = concrete(path)
            for role in ROLES:
                r = await anon.request(method, url, json={}, headers=bearer(role_keys[role]))
                if role.allows(needed):
                    assert r.status_code not in (401, 403), (method, path, role, r.text)
                else:
                    assert r.status_code == 403, (method, path, role, r.text)
                    assert f"the {needed.value!r} role" in r.json()["detail"], (method, path)
            checked += 1
    assert checked >= 30  # agents, routes, sessions, usage, audit, webhooks, keys, metrics...
    assert len((await client.get(KEYS)).json()) == len(ROLES)  # nothing above revoked a key


# ------------------------------------------------------------------ revocation


@pytest.fixture
async def second_process(tmp_path: Path, settings: Settings) -> AsyncIterator[Client]:
    """Another app with its own store instance on the same database: another process."""
    other = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/api.db")
    await other.start()
    async with AsyncTestClient(create_app(settings, other)) as c:
        yield c
    await other.aclose()


async def test_revocation_holds_at_once_here_and_within_the_bound_elsewhere(
    client: Client, anon: Client, second_process: Client
) -> None:
    secret = await make_key(client, "temp", "read")
    assert (await anon.get(AGENTS, headers=bearer(secret))).status_code == 200
    assert (await second_process.get(AGENTS, headers=bearer(secret))).status_code == 200  # cached there now
    r = await client.delete(f"{KEYS}/temp", headers={"X-Change-Note": "laptop lost"})
    assert r.status_code == 204
    revoked_at = asyncio.get_running_loop().time()
    assert (await anon.get(AGENTS, headers=bearer(secret))).status_code == 401  # this process: next request
    while (await second_process.get(AGENTS, headers=bearer(secret))).status_code == 200:
        assert asyncio.get_running_loop().time() - revoked_at <= KEY_TABLE_TTL_S + 0.25
        await asyncio.sleep(0.05)
    assert (await second_process.get(AGENTS, headers=bearer(secret))).status_code == 401
    (event,) = (await client.get(AUDIT, params={"type": "key.revoked"})).json()["items"]
    assert (event["actor"], event["note"], event["data"]["name"]) == ("admin", "laptop lost", "temp")


async def test_a_key_created_elsewhere_works_on_the_next_request(client: Client, second_process: Client) -> None:
    assert (await second_process.get(AGENTS, headers=bearer("vp_" + "x" * 43))).status_code == 401  # table cached
    secret = await make_key(client, "fresh", "read")
    deadline = asyncio.get_running_loop().time() + KEY_TABLE_TTL_S + 0.25
    while (await second_process.get(AGENTS, headers=bearer(secret))).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


# --------------------------------------------------------- constant-time lookup


async def test_lookup_compares_every_hash_in_constant_time_found_or_not(
    store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = [(await store.create_api_key(ApiKeyInput(name=f"k{i}", role=Role.read))).secret for i in range(5)]
    ring = KeyRing(store)
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    for token, name in ((secrets[0], "k0"), (secrets[4], "k4"), ("vp_" + "A" * 43, None), ("short", None)):
        calls.clear()
        found = await ring.lookup(token.encode())
        assert (found.name if found else None) == name
        # the same work whether the key exists, where it is in the table, or not: one
        # constant-time comparison of two 32-byte digests per stored key, no early exit
        assert calls == [(32, 32)] * 5


async def test_unknown_handler_role_fails_at_start(settings: Settings, store: SQLStore) -> None:
    from litestar import get

    @get("/api/v1/oops", opt={"role": "owner"}, sync_to_thread=False)
    def oops() -> None:
        return None

    with pytest.raises(ValueError, match="owner"):
        create_app(settings, store, extra_route_handlers=[oops])


async def test_store_outage_still_lets_the_bootstrap_key_in(client: Client, store: SQLStore, anon: Client,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    secret = await make_key(client, "k", "read")
    from app.domain import StoreUnavailable

    async def down(*_: Any, **__: Any) -> Any:
        raise StoreUnavailable("database unreachable")

    monkeypatch.setattr(store, "api_key_table", down)
    monkeypatch.setattr(store, "list_routes", down)
    app_state = anon.app.state
    app_state["keyring"].invalidate()
    r = await anon.get("/api/v1/routes", headers=bearer(secret))
    assert r.status_code == 503 and secret not in r.text  # a named key cannot be checked: unavailable
    assert (await anon.get("/metrics", headers=AUTH)).status_code == 200  # the bootstrap key needs no store
