"""`/api/v1/webhooks` through the real app: the secret in exactly two responses, bad input
as 422 naming the field, the production URL policy, deliveries and resends, the audit
trail of endpoint changes, and the OpenAPI `webhooks` section."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from app.api import create_app
from app.domain.events import EVENT_TYPES
from app.settings import Settings
from tests.api.conftest import ADMIN_KEY, AUTH

HOOKS = "/api/v1/webhooks"
GOOD = {"url": "https://hooks.example.com/voice", "events": ["session.ended"], "description": "CRM"}


async def test_crud_and_the_secret_is_shown_once(client):
    r = await client.post(HOOKS, json=GOOD, headers={"X-Change-Note": "crm sync"})
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["secret"]
    assert secret.startswith("whsec_") and created["id"].startswith("wh_")
    hook_id = created["id"]

    listed, one = await client.get(HOOKS), await client.get(f"{HOOKS}/{hook_id}")
    for resp in (listed, one):
        assert resp.status_code == 200 and secret not in resp.text and "whsec_" not in resp.text
    assert "secret" not in one.json() and "secret" not in listed.json()[0]

    r = await client.patch(f"{HOOKS}/{hook_id}", json={"events": ["session.ended", "session.started"],
                                                       "agent_id": "billing"})
    assert r.status_code == 200 and r.json()["agent_id"] == "billing" and secret not in r.text
    r = await client.patch(f"{HOOKS}/{hook_id}", json={"agent_id": None, "enabled": False})
    assert r.json()["agent_id"] is None and r.json()["enabled"] is False

    r = await client.post(f"{HOOKS}/{hook_id}/rotate-secret", json={"grace_period_s": 600})
    assert r.status_code == 200
    new_secret = r.json()["secret"]
    assert new_secret != secret and r.json()["previous_secret_expires_at"]
    r = await client.post(f"{HOOKS}/{hook_id}/rotate-secret")  # default grace
    assert r.status_code == 200 and r.json()["secret"] not in (secret, new_secret)

    assert (await client.delete(f"{HOOKS}/{hook_id}")).status_code == 204
    assert (await client.get(f"{HOOKS}/{hook_id}")).status_code == 404
    assert (await client.delete(f"{HOOKS}/{hook_id}")).status_code == 404

    audit = (await client.get("/api/v1/audit", params={"type": ["webhook.created", "webhook.updated",
                                                                 "webhook.secret_rotated", "webhook.deleted"]})).json()
    assert [i["type"] for i in reversed(audit["items"])] == [
        "webhook.created", "webhook.updated", "webhook.updated", "webhook.secret_rotated",
        "webhook.secret_rotated", "webhook.deleted"]
    assert audit["items"][-1]["note"] == "crm sync" and {i["actor"] for i in audit["items"]} == {"admin"}
    for s in (secret, new_secret):
        assert s not in str(audit)


@pytest.mark.parametrize(("body", "key"), [
    ({**GOOD, "url": "not a url"}, "url"),
    ({**GOOD, "url": "ftp://example.com/x"}, "url"),
    ({**GOOD, "url": "https://user:pw@example.com/x"}, "url"),
    ({**GOOD, "url": "https://example.com/" + "a" * 3000}, "url"),
    ({**GOOD, "url": "javascript:alert(1)"}, "url"),
    ({**GOOD, "url": 5}, "url"),
    ({**GOOD, "description": "d" * 501}, "description"),
    ({**GOOD, "events": ["session.ended", "no.such.event"]}, "events"),
    ({**GOOD, "events": []}, "events"),
    ({**GOOD, "events": ["session.ended", "session.ended"]}, "events"),
    ({**GOOD, "events": "session.ended"}, "events"),
    ({**GOOD, "agent_id": "Not A Slug"}, "agent_id"),
    ({**GOOD, "enabled": "yes"}, "enabled"),
    ({**GOOD, "secret": "whsec_mine"}, "secret"),
    ({"events": ["session.ended"]}, "url"),
])
async def test_bad_input_is_422_naming_the_field(client, body, key):
    r = await client.post(HOOKS, json=body)
    assert r.status_code == 422, r.text
    assert any(e.get("key", "").split(".")[0] == key for e in r.json()["extra"]), r.json()


async def test_bad_patches_and_rotations(client):
    hook_id = (await client.post(HOOKS, json=GOOD)).json()["id"]
    for patch, key in (({"url": "gopher://x"}, "url"), ({"events": ["nope"]}, "events"),
                       ({"description": "x" * 600}, "description"), ({"id": "wh_other"}, "id")):
        r = await client.patch(f"{HOOKS}/{hook_id}", json=patch)
        assert r.status_code == 422 and any(e.get("key", "").startswith(key) for e in r.json()["extra"]), r.text
    assert (await client.patch(f"{HOOKS}/{hook_id}", content=b"[]",
                               headers={"content-type": "application/json-patch+json"})).status_code == 415
    for body in ({"grace_period_s": -1}, {"grace_period_s": 10**9}, {"grace_period_s": "60"}, {"x": 1}):
        r = await client.post(f"{HOOKS}/{hook_id}/rotate-secret", json=body)
        assert r.status_code == 422, (body, r.text)
    assert (await client.patch(f"{HOOKS}/wh_nope", json={"enabled": False})).status_code == 404
    assert (await client.post(f"{HOOKS}/wh_nope/rotate-secret")).status_code == 404


@pytest.fixture
async def strict(store):
    settings = Settings(_env_file=None, admin_api_key=ADMIN_KEY, webhook_url_policy="public")  # type: ignore[call-arg]
    async with AsyncTestClient(create_app(settings, store)) as c:
        c.headers.update(AUTH)
        yield c


@pytest.mark.parametrize("url", [
    "http://hooks.example.com/x",  # not https
    "https://127.0.0.1/x", "https://localhost:8443/x", "https://[::1]/x", "https://[::ffff:127.0.0.1]/x",
    "https://10.0.0.7/x", "https://192.168.1.20/x", "https://172.16.0.1/x", "https://100.64.0.1/x",
    "https://169.254.169.254/latest/meta-data", "https://[fe80::1]/x", "https://[fd00:ec2::254]/x",
    "https://0.0.0.0/x", "https://metadata.google.internal/x", "https://intranet/x", "https://224.0.0.1/x",
])
async def test_start_mode_refuses_internal_destinations(strict, url):
    r = await strict.post(HOOKS, json={**GOOD, "url": url})
    assert r.status_code == 422, (url, r.text)
    assert r.json()["extra"][0]["key"] == "url"


async def test_start_mode_accepts_public_https_and_checks_patches(strict):
    r = await strict.post(HOOKS, json={**GOOD, "url": "https://93.184.215.14/hooks"})
    assert r.status_code == 201, r.text
    r = await strict.patch(f"{HOOKS}/{r.json()['id']}", json={"url": "https://10.1.2.3/x"})
    assert r.status_code == 422 and r.json()["extra"][0]["key"] == "url"


async def test_loopback_can_be_allowed_for_tests(store):
    settings = Settings(_env_file=None, admin_api_key=ADMIN_KEY, webhook_url_policy="public",  # type: ignore[call-arg]
                        webhook_allow_loopback=True)
    async with AsyncTestClient(create_app(settings, store)) as c:
        c.headers.update(AUTH)
        assert (await c.post(HOOKS, json={**GOOD, "url": "http://127.0.0.1:9/x"})).status_code == 201
        assert (await c.post(HOOKS, json={**GOOD, "url": "https://10.0.0.1/x"})).status_code == 422


async def test_deliveries_listed_and_resent(client, store):
    from datetime import timedelta

    from app.domain.models import utcnow
    from app.domain.webhooks import Delivery, new_delivery_id

    hook_id = (await client.post(HOOKS, json=GOOD)).json()["id"]
    other = (await client.post(HOOKS, json=GOOD)).json()["id"]
    now = utcnow()
    d = Delivery(id=new_delivery_id(), webhook_id=hook_id, event_id="evt_x", event_type="session.ended",
                 next_attempt_at=now, window_ends_at=now + timedelta(hours=1), created_at=now)
    await store.add_deliveries([d])
    (claimed,) = await store.claim_deliveries(hook_id, "someone", 60, 1)

    r = await client.get(f"{HOOKS}/{hook_id}/deliveries")
    assert r.status_code == 200 and r.json()["total"] == 1
    item = r.json()["items"][0]
    assert (item["id"], item["status"], item["attempts"], item["event_id"]) == (d.id, "pending", 1, "evt_x")
    assert (await client.get(f"{HOOKS}/{hook_id}/deliveries", params={"status": "failed"})).json()["total"] == 0
    assert (await client.get(f"{HOOKS}/{hook_id}/deliveries", params={"status": "nope"})).status_code == 422
    assert (await client.get(f"{HOOKS}/{hook_id}/deliveries/{d.id}")).json()["id"] == d.id
    assert (await client.get(f"{HOOKS}/{other}/deliveries/{d.id}")).status_code == 404
    assert (await client.get(f"{HOOKS}/wh_nope/deliveries")).status_code == 404

    assert (await client.post(f"{HOOKS}/{hook_id}/deliveries/{d.id}/resend")).status_code == 409  # in flight
    await store.finish_delivery(d.id, "someone", 1, status="failed", next_attempt_at=None, last_error="HTTP 500")
    r = await client.post(f"{HOOKS}/{hook_id}/deliveries/{d.id}/resend")
    assert r.status_code == 202 and r.json()["status"] == "pending"
    assert (await client.post(f"{HOOKS}/{other}/deliveries/{d.id}/resend")).status_code == 404


async def test_webhooks_need_the_admin_key(anon):
    assert (await anon.get(HOOKS)).status_code == 401
    assert (await anon.post(HOOKS, json=GOOD)).status_code == 401


async def test_openapi_documents_every_event_payload(client):
    doc = (await client.get("/schema/openapi.json")).json()
    assert set(doc["webhooks"]) == set(EVENT_TYPES)
    ended = doc["webhooks"]["session.ended"]["post"]
    schema = ended["requestBody"]["content"]["application/json"]["schema"]
    ref = schema["properties"]["data"]["$ref"].rsplit("/", 1)[-1]
    assert "transcript" in doc["components"]["schemas"][ref]["properties"]
    assert {p["name"] for p in ended["parameters"]} == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert "/api/v1/webhooks" in doc["paths"] and "/api/v1/audit" in doc["paths"]
    created = doc["paths"]["/api/v1/webhooks"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"]["$ref"].endswith("WebhookCreated")
    patch = doc["paths"]["/api/v1/webhooks/{webhook_id}"]["patch"]["requestBody"]["content"]
    assert all(m["schema"]["$ref"].endswith("WebhookPatch") for m in patch.values())
