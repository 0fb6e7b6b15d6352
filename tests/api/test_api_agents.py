"""Agent config CRUD over HTTP: status codes, headers, versioning and paging."""

from __future__ import annotations

import json
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
AGENTS = "/api/v1/agents/config"


async def test_create_returns_201_version_1_etag_and_location(client: Client, body: Any) -> None:
    r = await client.post(AGENTS, json=body("billing-agent"))
    assert r.status_code == 201
    data = r.json()
    assert data["agent_id"] == "billing-agent"
    assert data["version"] == 1
    assert data["created_at"] and data["updated_at"]
    assert data["llm"]["provider"] == "openai"  # defaults filled in
    assert r.headers["etag"] == '"1"'
    assert r.headers["location"] == f"{AGENTS}/billing-agent"
    # Location really points at the new resource.
    got = await client.get(r.headers["location"])
    assert got.status_code == 200 and got.json() == data


async def test_create_existing_id_is_409(client: Client, agent: dict[str, Any], body: Any) -> None:
    r = await client.post(AGENTS, json=body(name="another"))
    assert r.status_code == 409
    assert r.json()["status_code"] == 409
    assert "support-agent" in r.json()["detail"]
    # The original is untouched.
    assert (await client.get(f"{AGENTS}/support-agent")).json()["name"] == agent["name"]


async def test_get_current_with_etag(client: Client, agent: dict[str, Any]) -> None:
    r = await client.get(f"{AGENTS}/support-agent")
    assert r.status_code == 200
    assert r.headers["etag"] == '"1"'
    assert r.json() == agent


async def test_get_unknown_agent_is_404_json(client: Client) -> None:
    r = await client.get(f"{AGENTS}/nobody-here")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["status_code"] == 404
    assert "nobody-here" in r.json()["detail"]


async def test_get_historic_version(client: Client, agent: dict[str, Any]) -> None:
    await client.patch(f"{AGENTS}/support-agent", json={"name": "renamed"})
    v1 = await client.get(f"{AGENTS}/support-agent", params={"version": 1})
    v2 = await client.get(f"{AGENTS}/support-agent")
    assert (v1.json()["name"], v1.headers["etag"]) == (agent["name"], '"1"')
    assert (v2.json()["name"], v2.headers["etag"]) == ("renamed", '"2"')
    missing = await client.get(f"{AGENTS}/support-agent", params={"version": 9})
    assert missing.status_code == 404
    bad = await client.get(f"{AGENTS}/support-agent", params={"version": 0})
    assert bad.status_code == 422
    assert bad.json()["extra"][0]["key"] == "version"


async def test_list_paginates_in_id_order_and_filters_enabled(client: Client, body: Any) -> None:
    ids = [f"agent-{i:02d}" for i in range(7)]
    for i, agent_id in enumerate(reversed(ids)):
        r = await client.post(AGENTS, json=body(agent_id, enabled=(i % 2 == 0)))
        assert r.status_code == 201

    page1 = (await client.get(AGENTS, params={"limit": 3})).json()
    assert (page1["total"], page1["offset"], page1["limit"]) == (7, 0, 3)
    assert [a["agent_id"] for a in page1["items"]] == ids[:3]

    page3 = (await client.get(AGENTS, params={"limit": 3, "offset": 6})).json()
    assert [a["agent_id"] for a in page3["items"]] == ids[6:]

    beyond = (await client.get(AGENTS, params={"offset": 50})).json()
    assert beyond["items"] == [] and beyond["total"] == 7

    enabled = (await client.get(AGENTS, params={"enabled": "true"})).json()
    disabled = (await client.get(AGENTS, params={"enabled": "false"})).json()
    assert all(a["enabled"] for a in enabled["items"])
    assert not any(a["enabled"] for a in disabled["items"])
    assert enabled["total"] + disabled["total"] == 7
    assert enabled["total"] == 4


async def test_list_rejects_bad_paging(client: Client) -> None:
    for params, key in (
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"offset": -1}, "offset"),
        ({"limit": "many"}, "limit"),
        ({"enabled": "perhaps"}, "enabled"),
    ):
        r = await client.get(AGENTS, params=params)
        assert r.status_code == 422, (params, r.text)
        assert [e["key"] for e in r.json()["extra"]] == [key]
    assert (await client.get(AGENTS, params={"limit": 200})).status_code == 200


async def test_patch_merges_and_bumps_version(client: Client, agent: dict[str, Any]) -> None:
    r = await client.patch(
        f"{AGENTS}/support-agent",
        json={
            "description": "updated",
            "llm": {"temperature": 0.2},
            "prompt_config": {"greeting": None},  # null removes (back to the default: none)
        },
    )
    assert r.status_code == 200, r.text
    new = r.json()
    assert r.headers["etag"] == '"2"'
    assert new["version"] == 2
    assert new["description"] == "updated"
    assert new["llm"]["temperature"] == 0.2
    assert new["llm"]["provider"] == "openai"  # sibling keys survive the nested merge
    assert new["prompt_config"]["greeting"] is None
    assert new["prompt_config"]["instructions"] == agent["prompt_config"]["instructions"]
    assert new["created_at"] == agent["created_at"]


async def test_patch_accepts_merge_patch_content_type(client: Client, agent: dict[str, Any]) -> None:
    r = await client.patch(
        f"{AGENTS}/support-agent",
        content=b'{"enabled": false}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is False


async def test_patch_rejects_other_content_types(client: Client, agent: dict[str, Any]) -> None:
    r = await client.patch(
        f"{AGENTS}/support-agent",
        content=b'[{"op": "replace", "path": "/name", "value": "x"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert r.status_code == 415
    assert (await client.get(f"{AGENTS}/support-agent")).json()["version"] == 1


async def test_patch_if_match_forms(client: Client, agent: dict[str, Any]) -> None:
    for version, header in enumerate(['"1"', "2", 'W/"3"', "*"], start=1):
        r = await client.patch(
            f"{AGENTS}/support-agent", json={"name": f"n{version}"}, headers={"If-Match": header}
        )
        assert r.status_code == 200, (header, r.text)
        assert r.json()["version"] == version + 1


async def test_patch_malformed_if_match_is_400(client: Client, agent: dict[str, Any]) -> None:
    for header in ['"abc"', '"1', '"1", "2"', "v1", "-1", 'W/1']:
        r = await client.patch(
            f"{AGENTS}/support-agent", json={"name": "x"}, headers={"If-Match": header}
        )
        assert r.status_code == 400, (header, r.text)
        assert "If-Match" in r.json()["detail"]
    assert (await client.get(f"{AGENTS}/support-agent")).json()["version"] == 1


async def test_patch_stale_if_match_is_412_with_current_version(
    client: Client, agent: dict[str, Any]
) -> None:
    await client.patch(f"{AGENTS}/support-agent", json={"name": "first"})
    r = await client.patch(
        f"{AGENTS}/support-agent", json={"name": "second"}, headers={"If-Match": '"1"'}
    )
    assert r.status_code == 412
    err = r.json()
    assert err["status_code"] == 412
    assert err["extra"]["current_version"] == 2
    assert err["extra"]["expected_version"] == 1
    assert r.headers["etag"] == '"2"'
    assert (await client.get(f"{AGENTS}/support-agent")).json()["name"] == "first"


async def test_patch_invalid_result_is_422_with_path(client: Client, agent: dict[str, Any]) -> None:
    r = await client.patch(f"{AGENTS}/support-agent", json={"llm": {"temperature": 9}})
    assert r.status_code == 422
    assert r.json()["extra"] == [
        {"message": "Input should be less than or equal to 2", "key": "llm.temperature"}
    ]
    r = await client.patch(
        f"{AGENTS}/support-agent", json={"prompt_config": {"instructions": "Hi {who}"}}
    )
    assert r.status_code == 422
    (entry,) = r.json()["extra"]
    assert entry["key"] == "prompt_config.instructions" and "who" in entry["message"]
    r = await client.patch(f"{AGENTS}/support-agent", json={"name": None})  # removes a required field
    assert r.status_code == 422
    assert r.json()["extra"][0]["key"] == "name"
    r = await client.patch(f"{AGENTS}/support-agent", json={"surprise": 1})
    assert r.status_code == 422
    assert r.json()["extra"][0]["key"] == "surprise"
    # none of it was written
    assert (await client.get(f"{AGENTS}/support-agent")).json()["version"] == 1


async def test_patch_cannot_change_agent_id(client: Client, agent: dict[str, Any]) -> None:
    for value in ("other-agent", None):
        r = await client.patch(f"{AGENTS}/support-agent", json={"agent_id": value})
        assert r.status_code == 422
        assert r.json()["extra"][0]["key"] == "agent_id"
    # the same id is a no-op field, allowed
    r = await client.patch(f"{AGENTS}/support-agent", json={"agent_id": "support-agent"})
    assert r.status_code == 200


async def test_patch_body_must_be_an_object(client: Client, agent: dict[str, Any]) -> None:
    payloads: list[Any] = [[], "name", 3, None]
    for payload in payloads:
        r = await client.patch(
            f"{AGENTS}/support-agent",
            content=json.dumps(payload).encode(),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 422, (payload, r.text)


async def test_patch_unknown_agent_is_404(client: Client) -> None:
    r = await client.patch(f"{AGENTS}/ghost-agent", json={"name": "x"})
    assert r.status_code == 404


async def test_put_replaces_whole_config(client: Client, agent: dict[str, Any], body: Any) -> None:
    replacement = body(
        name="Replaced",
        prompt_config={"instructions": "No variables now."},
        schema_config={"type": "object", "properties": {}},
    )
    r = await client.put(f"{AGENTS}/support-agent", json=replacement, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    new = r.json()
    assert (new["version"], r.headers["etag"]) == (2, '"2"')
    assert new["name"] == "Replaced"
    assert new["prompt_config"] == {"instructions": "No variables now.", "greeting": None, "variables": {}}
    assert new["schema_config"] == {"type": "object", "properties": {}}


async def test_put_id_mismatch_is_422(client: Client, agent: dict[str, Any], body: Any) -> None:
    r = await client.put(f"{AGENTS}/support-agent", json=body("other-agent"))
    assert r.status_code == 422
    assert r.json()["extra"][0]["key"] == "agent_id"
    assert (await client.get(f"{AGENTS}/other-agent")).status_code == 404


async def test_put_stale_if_match_and_unknown_agent(
    client: Client, agent: dict[str, Any], body: Any
) -> None:
    await client.patch(f"{AGENTS}/support-agent", json={"name": "moved on"})
    r = await client.put(f"{AGENTS}/support-agent", json=body(), headers={"If-Match": '"1"'})
    assert r.status_code == 412
    assert r.json()["extra"]["current_version"] == 2
    r = await client.put(f"{AGENTS}/ghost-agent", json=body("ghost-agent"))
    assert r.status_code == 404


async def test_put_invalid_body_is_422(client: Client, agent: dict[str, Any], body: Any) -> None:
    r = await client.put(f"{AGENTS}/support-agent", json=body(name=""))
    assert r.status_code == 422
    assert r.json()["extra"][0]["key"] == "name"


async def test_delete_then_gone(client: Client, agent: dict[str, Any], body: Any) -> None:
    r = await client.delete(f"{AGENTS}/support-agent")
    assert r.status_code == 204
    assert r.content == b""
    assert (await client.get(f"{AGENTS}/support-agent")).status_code == 404
    assert (await client.get(f"{AGENTS}/support-agent/versions")).status_code == 404
    assert (await client.delete(f"{AGENTS}/support-agent")).status_code == 404
    # the id is free again and starts over at version 1
    again = await client.post(AGENTS, json=body(name="again"))
    assert (again.status_code, again.json()["version"]) == (201, 1)


async def test_delete_routed_agent_is_409_naming_the_route(
    client: Client, agent: dict[str, Any]
) -> None:
    assert (await client.put("/api/v1/routes/billing", json={"agent_id": "support-agent"})).status_code == 200
    r = await client.delete(f"{AGENTS}/support-agent")
    assert r.status_code == 409
    assert "billing" in r.json()["detail"]
    assert r.json()["extra"] == {"routes": ["billing"]}
    assert (await client.get(f"{AGENTS}/support-agent")).status_code == 200
    # once the route is gone, the delete goes through
    assert (await client.delete("/api/v1/routes/billing")).status_code == 204
    assert (await client.delete(f"{AGENTS}/support-agent")).status_code == 204


async def test_delete_if_match(client: Client, agent: dict[str, Any]) -> None:
    await client.patch(f"{AGENTS}/support-agent", json={"name": "v2"})
    stale = await client.delete(f"{AGENTS}/support-agent", headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.json()["extra"]["current_version"] == 2
    bad = await client.delete(f"{AGENTS}/support-agent", headers={"If-Match": "one"})
    assert bad.status_code == 400
    assert (await client.get(f"{AGENTS}/support-agent")).status_code == 200
    ok = await client.delete(f"{AGENTS}/support-agent", headers={"If-Match": '"2"'})
    assert ok.status_code == 204


async def test_versions_and_rollback(client: Client, agent: dict[str, Any]) -> None:
    for name in ("two", "three"):
        assert (await client.patch(f"{AGENTS}/support-agent", json={"name": name})).status_code == 200

    versions = (await client.get(f"{AGENTS}/support-agent/versions")).json()
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert [v["name"] for v in versions] == [agent["name"], "two", "three"]

    r = await client.post(f"{AGENTS}/support-agent/rollback/1", headers={"If-Match": '"3"'})
    assert r.status_code == 201, r.text
    rolled = r.json()
    assert (rolled["version"], r.headers["etag"]) == (4, '"4"')
    assert rolled["name"] == agent["name"]
    strip = ("version", "created_at", "updated_at")
    assert {k: v for k, v in rolled.items() if k not in strip} == {
        k: v for k, v in agent.items() if k not in strip
    }

    versions = (await client.get(f"{AGENTS}/support-agent/versions")).json()
    assert [v["version"] for v in versions] == [1, 2, 3, 4]
    assert (await client.get(f"{AGENTS}/support-agent")).json()["name"] == agent["name"]


async def test_rollback_errors(client: Client, agent: dict[str, Any]) -> None:
    assert (await client.post(f"{AGENTS}/support-agent/rollback/7")).status_code == 404
    assert (await client.post(f"{AGENTS}/ghost-agent/rollback/1")).status_code == 404
    assert (await client.post(f"{AGENTS}/support-agent/rollback/0")).status_code == 422
    r = await client.post(f"{AGENTS}/support-agent/rollback/1", headers={"If-Match": '"5"'})
    assert r.status_code == 412
    assert r.json()["extra"]["current_version"] == 1
    assert (await client.post(f"{AGENTS}/support-agent/rollback/x")).status_code in (404, 405)


async def test_versions_of_unknown_agent_is_404(client: Client) -> None:
    assert (await client.get(f"{AGENTS}/ghost-agent/versions")).status_code == 404
