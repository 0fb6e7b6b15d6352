"""The routing table over HTTP: per-purpose CRUD, whole-table replace, default rules."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

Client = AsyncTestClient[Litestar]
ROUTES = "/api/v1/routes"
AGENTS = "/api/v1/agents/config"


@pytest.fixture
async def two_agents(client: Client, body: Any) -> list[str]:
    ids = ["sales-agent", "support-agent"]
    for agent_id in ids:
        assert (await client.post(AGENTS, json=body(agent_id))).status_code == 201
    return ids


def _table(r: Any) -> list[tuple[str, str, bool]]:
    return [(x["purpose"], x["agent_id"], x["is_default"]) for x in r.json()]


async def test_empty_table(client: Client) -> None:
    r = await client.get(ROUTES)
    assert (r.status_code, r.json()) == (200, [])


async def test_put_get_delete_one_route(client: Client, two_agents: list[str]) -> None:
    r = await client.put(f"{ROUTES}/billing", json={"agent_id": "sales-agent"})
    assert r.status_code == 200, r.text
    route = r.json()
    assert (route["purpose"], route["agent_id"], route["is_default"]) == ("billing", "sales-agent", False)
    assert route["updated_at"]

    got = await client.get(f"{ROUTES}/billing")
    assert got.status_code == 200 and got.json()["agent_id"] == "sales-agent"

    # replace in place
    r = await client.put(f"{ROUTES}/billing", json={"agent_id": "support-agent"})
    assert r.json()["agent_id"] == "support-agent"
    assert _table(await client.get(ROUTES)) == [("billing", "support-agent", False)]

    assert (await client.delete(f"{ROUTES}/billing")).status_code == 204
    assert (await client.get(f"{ROUTES}/billing")).status_code == 404
    assert (await client.delete(f"{ROUTES}/billing")).status_code == 404


async def test_default_moves_to_the_newest_default(client: Client, two_agents: list[str]) -> None:
    await client.put(f"{ROUTES}/sales", json={"agent_id": "sales-agent", "is_default": True})
    await client.put(f"{ROUTES}/support", json={"agent_id": "support-agent", "is_default": True})
    assert _table(await client.get(ROUTES)) == [
        ("sales", "sales-agent", False),
        ("support", "support-agent", True),
    ]


async def test_route_to_unknown_agent_is_422_naming_agent_id(client: Client, two_agents: list[str]) -> None:
    r = await client.put(f"{ROUTES}/billing", json={"agent_id": "ghost-agent"})
    assert r.status_code == 422
    err = r.json()
    assert err["extra"][0]["key"] == "agent_id"
    assert "ghost-agent" in err["detail"]
    assert (await client.get(ROUTES)).json() == []


async def test_invalid_route_bodies_and_purposes(client: Client, two_agents: list[str]) -> None:
    r = await client.put(f"{ROUTES}/Billing Dept", json={"agent_id": "sales-agent"})
    assert r.status_code == 422
    assert r.json()["extra"][0]["key"] == "purpose"
    r = await client.put(f"{ROUTES}/billing", json={"agent_id": "Sales"})
    assert r.status_code == 422
    assert r.json()["extra"][0]["key"] == "agent_id"
    r = await client.put(f"{ROUTES}/billing", json={"agent_id": "sales-agent", "weight": 3})
    assert r.status_code == 422
    assert r.json()["extra"][0]["key"] == "weight"
    assert (await client.get(f"{ROUTES}/nope")).status_code == 404


async def test_replace_whole_table(client: Client, two_agents: list[str]) -> None:
    await client.put(f"{ROUTES}/old", json={"agent_id": "sales-agent"})
    table = [
        {"purpose": "support", "agent_id": "support-agent", "is_default": True},
        {"purpose": "billing", "agent_id": "sales-agent"},
    ]
    r = await client.put(ROUTES, json=table)
    assert r.status_code == 200, r.text
    expected = [("billing", "sales-agent", False), ("support", "support-agent", True)]
    assert _table(r) == expected
    assert _table(await client.get(ROUTES)) == expected  # "old" is gone


async def test_replace_table_rejects_two_defaults_and_duplicates(
    client: Client, two_agents: list[str]
) -> None:
    await client.put(f"{ROUTES}/keep", json={"agent_id": "sales-agent"})
    two_defaults = [
        {"purpose": "a", "agent_id": "sales-agent", "is_default": True},
        {"purpose": "b", "agent_id": "support-agent", "is_default": True},
    ]
    r = await client.put(ROUTES, json=two_defaults)
    assert r.status_code == 422
    assert r.json()["extra"][0]["key"] == "1.is_default"

    dupes = [
        {"purpose": "a", "agent_id": "sales-agent"},
        {"purpose": "a", "agent_id": "support-agent"},
    ]
    r = await client.put(ROUTES, json=dupes)
    assert r.status_code == 422
    assert r.json()["extra"][0]["key"] == "1.purpose"

    r = await client.put(ROUTES, json=[{"purpose": "a", "agent_id": "ghost-agent"}])
    assert r.status_code == 422
    assert r.json()["extra"][0]["key"] == "agent_id"

    r = await client.put(ROUTES, json={"purpose": "a", "agent_id": "sales-agent"})  # not a list
    assert r.status_code == 422

    # every rejected replace left the table as it was
    assert _table(await client.get(ROUTES)) == [("keep", "sales-agent", False)]


async def test_delete_whole_table(client: Client, two_agents: list[str]) -> None:
    await client.put(f"{ROUTES}/a", json={"agent_id": "sales-agent", "is_default": True})
    await client.put(f"{ROUTES}/b", json={"agent_id": "support-agent"})
    assert (await client.delete(ROUTES)).status_code == 204
    assert (await client.get(ROUTES)).json() == []
    # with no route pointing at them, the agents can be deleted
    assert (await client.delete(f"{AGENTS}/sales-agent")).status_code == 204


async def test_routes_answer_phone_numbers_each_number_once(client: Client, two_agents: list[str]) -> None:
    r = await client.put(f"{ROUTES}/support", json={"agent_id": "support-agent", "phone_numbers": ["+15550001111"]})
    assert r.status_code == 200, r.text
    assert r.json()["phone_numbers"] == ["+15550001111"]
    assert (await client.get(f"{ROUTES}/support")).json()["phone_numbers"] == ["+15550001111"]

    # a number another route answers: 409 naming the number and the route holding it
    r = await client.put(f"{ROUTES}/sales", json={"agent_id": "sales-agent", "phone_numbers": ["+15550001111"]})
    assert r.status_code == 409, r.text
    assert "+15550001111" in r.json()["detail"] and "'support'" in r.json()["detail"]
    assert r.json()["extra"] == {"number": "+15550001111", "route": "support", "purpose": "sales"}
    r = await client.put(ROUTES, json=[
        {"purpose": "a", "agent_id": "sales-agent", "phone_numbers": ["+15550002222"]},
        {"purpose": "b", "agent_id": "support-agent", "phone_numbers": ["+15550002222"]},
    ])
    assert r.status_code == 409 and r.json()["extra"]["route"] == "a"
    assert [x["purpose"] for x in (await client.get(ROUTES)).json()] == ["support"]  # nothing written


@pytest.mark.parametrize(
    ("numbers", "key"),
    [
        (["5550001111"], "phone_numbers.0"),  # no +
        (["+1 555 000 1111"], "phone_numbers.0"),  # spaces
        (["+15550001111", "+0123"], "phone_numbers.1"),  # country code 0
        (["+1234567890123456"], "phone_numbers.0"),  # 16 digits
        (["+15550001111", "+15550001111"], "phone_numbers"),  # twice in one route
        ("+15550001111", "phone_numbers"),  # not a list
        ([15550001111], "phone_numbers.0"),
    ],
)
async def test_bad_phone_numbers_are_422_naming_the_field(
    client: Client, two_agents: list[str], numbers: Any, key: str
) -> None:
    r = await client.put(f"{ROUTES}/support", json={"agent_id": "support-agent", "phone_numbers": numbers})
    assert r.status_code == 422, r.text
    assert r.json()["extra"][0]["key"] == key
    assert (await client.get(ROUTES)).json() == []


async def test_resolve_by_called_number(client: Client, two_agents: list[str]) -> None:
    await client.put(f"{ROUTES}/support", json={"agent_id": "support-agent", "is_default": True})
    await client.put(f"{ROUTES}/sales", json={"agent_id": "sales-agent", "phone_numbers": ["+15550003333"]})

    r = await client.get("/api/v1/resolve", params={"called_number": "+15550003333"})
    assert r.status_code == 200, r.text
    assert (r.json()["agent_id"], r.json()["reason"]) == ("sales-agent", "called_number")
    # an unknown number falls back to the default; an explicit purpose wins over the number
    r = await client.get("/api/v1/resolve", params={"called_number": "+15550009999"})
    assert (r.json()["agent_id"], r.json()["reason"]) == ("support-agent", "default:unknown_called_number")
    r = await client.get("/api/v1/resolve", params={"called_number": "+15550003333", "purpose": "support"})
    assert (r.json()["agent_id"], r.json()["reason"]) == ("support-agent", "purpose")
    r = await client.get("/api/v1/resolve", params={"called_number": "555-0003"})
    assert r.status_code == 422 and r.json()["extra"][0]["key"] == "called_number"
