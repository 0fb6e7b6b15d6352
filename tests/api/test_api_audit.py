"""`GET /api/v1/audit`: the journal's change events through the real app — who (the API
key's name), what, when, and the `X-Change-Note` — with filters, paging and 422s."""

from __future__ import annotations

from tests.api.conftest import AGENTS, AUTH, agent_body

AUDIT = "/api/v1/audit"


async def test_every_change_is_recorded_with_actor_and_note(client):
    note = {**AUTH, "X-Change-Note": "new billing bot"}
    assert (await client.post(AGENTS, json=agent_body("billing"), headers=note)).status_code == 201
    r = await client.patch(f"{AGENTS}/billing", json={"description": "v2"},
                           headers={**AUTH, "X-Change-Note": "x" * 2000})
    assert r.status_code == 200
    assert (await client.post(f"{AGENTS}/billing/rollback/1", headers=AUTH)).status_code == 201
    assert (await client.put("/api/v1/routes/billing", json={"agent_id": "billing"}, headers=AUTH)).status_code == 200
    assert (await client.delete("/api/v1/routes/billing", headers=AUTH)).status_code == 204
    assert (await client.delete(f"{AGENTS}/billing", headers=AUTH)).status_code == 204

    r = await client.get(AUDIT, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 7
    items = list(reversed(body["items"]))
    assert [i["type"] for i in items] == [
        "agent.created", "agent.version_created", "agent.version_created", "agent.version_created",
        "routes.changed", "routes.changed", "agent.deleted",
    ]
    assert {i["actor"] for i in items} == {"admin"}
    assert items[0]["note"] == "new billing bot"
    assert len(items[2]["note"]) == 500 and items[2]["note"].endswith("…")  # capped, not refused
    assert items[3]["data"] == {"agent_id": "billing", "version": 3, "change": "rollback", "rolled_back_to": 1}
    assert all(i["id"].startswith("evt_") for i in items)


async def test_failed_writes_are_not_in_the_audit_trail(client):
    await client.post(AGENTS, json=agent_body("billing"), headers=AUTH)
    assert (await client.post(AGENTS, json=agent_body("billing"), headers=AUTH)).status_code == 409
    assert (await client.patch(f"{AGENTS}/billing", json={"description": "x"},
                               headers={**AUTH, "If-Match": '"9"'})).status_code == 412
    assert (await client.patch(f"{AGENTS}/billing", json={"name": ""}, headers=AUTH)).status_code == 422
    assert (await client.put("/api/v1/routes/x", json={"agent_id": "nobody"}, headers=AUTH)).status_code == 422
    assert (await client.get(AUDIT, headers=AUTH)).json()["total"] == 2


async def test_filters_and_paging(client, store):
    await client.post(AGENTS, json=agent_body("agent-a"), headers=AUTH)
    await client.post(AGENTS, json=agent_body("agent-b"), headers=AUTH)
    await client.patch(f"{AGENTS}/agent-a", json={"description": "x"}, headers=AUTH)

    r = await client.get(AUDIT, params={"agent_id": "agent-a"}, headers=AUTH)
    assert r.json()["total"] == 3
    r = await client.get(AUDIT, params={"type": ["agent.created"]}, headers=AUTH)
    assert [i["agent_id"] for i in r.json()["items"]] == ["agent-b", "agent-a"]
    r = await client.get(AUDIT, params={"type": ["agent.created", "agent.version_created"], "limit": 2,
                                        "offset": 1}, headers=AUTH)
    assert r.json()["total"] == 5 and len(r.json()["items"]) == 2
    assert (await client.get(AUDIT, params={"actor": "admin"}, headers=AUTH)).json()["total"] == 5
    assert (await client.get(AUDIT, params={"actor": "mallory"}, headers=AUTH)).json()["total"] == 0
    newest = r.json()["items"][0]["at"]
    r = await client.get(AUDIT, params={"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"},
                         headers=AUTH)
    assert r.json()["total"] == 5 and newest
    assert (await client.get(AUDIT, params={"since": "2100-01-01T00:00:00Z"}, headers=AUTH)).json()["total"] == 0


async def test_session_events_are_not_audit_events(client, store):
    from app.domain import SessionRecord

    await store.start_session(SessionRecord(session_id="s-1", room="r", agent_id="a"))
    assert (await client.get(AUDIT, headers=AUTH)).json()["total"] == 0


async def test_bad_filters_are_422_naming_the_parameter(client):
    for params, key in (
        ({"type": "session.started"}, "type"),
        ({"type": "no.such"}, "type"),
        ({"since": "yesterday"}, "since"),
        ({"until": "5"}, "until"),
        ({"limit": "0"}, "limit"),
    ):
        r = await client.get(AUDIT, params=params, headers=AUTH)
        assert r.status_code == 422, params
        assert any(e.get("key") == key for e in r.json()["extra"]), r.json()


async def test_audit_needs_the_admin_key(anon):
    assert (await anon.get(AUDIT)).status_code == 401
