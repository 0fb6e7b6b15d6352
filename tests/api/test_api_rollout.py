"""Publishing over HTTP: publish, canary, rollout figures, promote, abort, and what
`GET /api/v1/resolve` says a caller gets; the errors users meet (404, 409, 412, 422 with
the field path) and the role each handler declares for the role guard."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.domain.rollout import arm_for
from app.store.rollout_guard import RolloutGuard
from tests.api.conftest import AGENTS, AgentBody

Client = AsyncTestClient[Litestar]
MERGE = {"content-type": "application/merge-patch+json"}


async def _agent_with_draft(client: Client, body: AgentBody) -> None:
    assert (await client.post(AGENTS, json=body(auto_publish=False))).status_code == 201
    r = await client.patch(f"{AGENTS}/support-agent", json={"description": "v2"}, headers=MERGE)
    assert r.status_code == 200 and r.json()["version"] == 2


async def _resolve(client: Client, user_id: str) -> dict[str, Any]:
    r = await client.get("/api/v1/resolve", params={"agent_id": "support-agent", "user_id": user_id})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_drafts_publish_and_resolve(client: Client, body: AgentBody) -> None:
    await _agent_with_draft(client, body)
    # GET is the newest version; routing hands out the published one
    assert (await client.get(f"{AGENTS}/support-agent")).json()["version"] == 2
    assert (await _resolve(client, "u1"))["config_version"] == 1
    r = await client.get(f"{AGENTS}/support-agent/rollout")
    assert r.status_code == 200 and r.headers["etag"] == '"0"'
    doc = r.json()
    assert (doc["release"]["published_version"], doc["release"]["current_version"], doc["drafts"]) == (1, 2, [2])
    assert doc["stable"] is None and doc["canary"] is None

    r = await client.post(f"{AGENTS}/support-agent/publish", json={"version": 2}, headers={"If-Match": '"0"'})
    assert r.status_code == 200, r.text
    assert r.json()["published_version"] == 2 and r.headers["etag"] == '"1"'
    assert (await _resolve(client, "u1"))["config_version"] == 2


async def test_publish_errors(client: Client, body: AgentBody) -> None:
    await _agent_with_draft(client, body)
    url = f"{AGENTS}/support-agent/publish"
    r = await client.post(url, json={"version": 9})
    assert r.status_code == 404 and "version 9" in r.json()["detail"]
    assert (await client.post(f"{AGENTS}/nobody/publish", json={"version": 1})).status_code == 404
    for bad in (0, 100, "ten"):
        r = await client.post(url, json={"version": 2, "canary_percent": bad})
        assert r.status_code == 422, r.text
        assert [e["key"] for e in r.json()["extra"]] == ["canary_percent"]
    r = await client.post(url, json={"version": 2, "extra": 1})
    assert r.status_code == 422
    r = await client.post(url, json={"version": 1, "canary_percent": 10})  # already published
    assert r.status_code == 422 and r.json()["extra"][0]["key"] == "version"
    # a stale revision: 412 naming the current one
    await client.post(url, json={"version": 2})
    r = await client.post(url, json={"version": 1}, headers={"If-Match": '"0"'})
    assert r.status_code == 412 and r.headers["etag"] == '"1"' and r.json()["extra"]["current_rev"] == 1
    assert (await client.post(url, json={"version": 1}, headers={"If-Match": "nope"})).status_code == 400


async def test_canary_promote_abort(client: Client, body: AgentBody) -> None:
    await _agent_with_draft(client, body)
    url = f"{AGENTS}/support-agent"
    r = await client.post(f"{url}/publish", json={"version": 2, "canary_percent": 30},
                          headers={"X-Change-Note": "try the shorter greeting"})
    assert r.status_code == 200, r.text
    canary = r.json()["rollout"]
    assert (canary["version"], canary["stable_version"], canary["percent"], canary["status"]) == (2, 1, 30, "running")
    # every caller gets the arm the hash gives them, sticky
    for uid in (f"caller-{i}" for i in range(20)):
        doc = await _resolve(client, uid)
        want = arm_for("support-agent", uid, 30)
        assert (doc["arm"], doc["config_version"]) == (want, 2 if want == "canary" else 1)
        assert (doc["published_version"], doc["canary_version"], doc["canary_percent"]) == (1, 2, 30)
    # while it runs: publish and rollback are 409, a rollout report has both arms
    r = await client.post(f"{url}/publish", json={"version": 2})
    assert r.status_code == 409 and "canary" in r.json()["detail"]
    assert (await client.post(f"{url}/rollback/1")).status_code == 409
    report = (await client.get(f"{url}/rollout")).json()
    assert report["stable"]["sessions"] == 0 and report["canary"]["version"] == 2
    assert report["verdict"]["ready"] is False

    r = await client.post(f"{url}/rollout/abort", json={"reason": "callers confused"})
    assert r.status_code == 200 and r.json()["rollout"]["status"] == "aborted"
    assert (await _resolve(client, "caller-1"))["arm"] is None
    assert (await client.post(f"{url}/rollout/abort")).status_code == 409  # nothing runs now
    assert (await client.post(f"{url}/rollout/promote")).status_code == 409

    await client.post(f"{url}/publish", json={"version": 2, "canary_percent": 50})
    r = await client.post(f"{url}/rollout/promote")
    assert r.status_code == 200 and r.json()["published_version"] == 2
    events = (await client.get("/api/v1/audit", params={"agent_id": "support-agent"})).json()["items"]
    types = [e["type"] for e in events]
    for t in ("rollout.started", "rollout.aborted", "rollout.promoted", "agent.published"):
        assert t in types
    started = next(e for e in reversed(events) if e["type"] == "rollout.started")
    assert started["note"] == "try the shorter greeting" and started["actor"] == "admin"


async def test_guard_aborts_a_worse_canary_into_the_journal(client: Client, body: AgentBody, store: Any) -> None:
    """The guard over the store the API serves: a canary that never completes a required
    field against a stable that always does is aborted, with the figures in the event."""
    from app.domain import SessionRecord, SessionStatus
    from app.domain.rollout import GuardPolicy

    await _agent_with_draft(client, body)
    await client.post(f"{AGENTS}/support-agent/publish", json={"version": 2, "canary_percent": 50})
    guard = RolloutGuard(store, GuardPolicy(min_sessions=5))
    for i in range(5):
        for arm, version in (("stable", 1), ("canary", 2)):
            sid = f"{arm}-{i}"
            await store.start_session(SessionRecord(session_id=sid, room="r", agent_id="support-agent",
                                                    config_version=version, arm=arm))
            if arm == "stable":
                await store.record_data(sid, {"email": "a@example.com"})
            await store.finish_session(sid, SessionStatus.completed, "user_initiated")
        if i < 4:
            assert await guard.check_all() == []  # not enough sessions per arm yet
    assert await guard.check_all() == ["support-agent"]
    report = (await client.get(f"{AGENTS}/support-agent/rollout")).json()
    assert report["release"]["rollout"]["status"] == "aborted"
    assert report["release"]["rollout"]["ended_by"] == "rollout-guard"
    assert report["canary"]["required_complete"] == 0 and report["stable"]["required_complete"] == 5
    [event] = (await client.get("/api/v1/audit", params={"type": "rollout.aborted"})).json()["items"]
    assert event["actor"] == "rollout-guard" and event["data"]["automatic"] is True
    assert "required complete rate 0%" in event["data"]["reason"]
    assert event["data"]["figures"]["verdict"]["worse"] is True
    assert (await _resolve(client, "anyone"))["config_version"] == 1


def test_publishing_handlers_declare_the_publish_role(app: Litestar) -> None:
    roles = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            roles[(route.path, next(iter(handler.http_methods)))] = handler.opt.get("role")
    agent = "/api/v1/agents/config/{agent_id:str}"
    for key in [(f"{agent}/publish", "POST"), (f"{agent}/rollout/promote", "POST"),
                (f"{agent}/rollout/abort", "POST"), (f"{agent}/rollback/{{version:int}}", "POST"),
                ("/api/v1/routes", "PUT"), ("/api/v1/routes/{purpose:str}", "PUT"),
                ("/api/v1/routes/{purpose:str}", "DELETE"), ("/api/v1/routes", "DELETE")]:
        assert roles[key] == "publish", key
    assert roles[(f"{agent}/rollout", "GET")] is None
    assert roles[(agent, "PATCH")] is None
