"""Bad input never reaches the store and never yields a 500: 400/413/422 with field paths."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.settings import Settings

Client = AsyncTestClient[Litestar]
AGENTS = "/api/v1/agents/config"


def _keys(r: Any) -> list[str | None]:
    return [e.get("key") for e in r.json()["extra"]]


async def _nothing_stored(client: Client) -> None:
    assert (await client.get(AGENTS)).json()["total"] == 0


async def test_malformed_json_is_400(client: Client) -> None:
    r = await client.post(
        AGENTS, content=b'{"agent_id": "abc",', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    err = r.json()
    assert err["status_code"] == 400
    assert "JSON" in err["detail"]
    await _nothing_stored(client)


async def test_malformed_json_patch_is_400(client: Client, agent: dict[str, Any]) -> None:
    r = await client.patch(
        f"{AGENTS}/support-agent",
        content=b"{name: x}",
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 400


async def test_empty_body_is_422(client: Client) -> None:
    r = await client.post(AGENTS, content=b"", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["extra"][0]["message"] == "a JSON request body is required"


async def test_unknown_field_is_422_naming_it(client: Client, body: Any) -> None:
    r = await client.post(AGENTS, json=body(colour="blue"))
    assert r.status_code == 422
    assert r.json()["extra"] == [{"message": "Extra inputs are not permitted", "key": "colour"}]
    nested = body()
    nested["llm"] = {"modle": "gpt"}
    r = await client.post(AGENTS, json=nested)
    assert r.status_code == 422
    assert _keys(r) == ["llm.modle"]
    await _nothing_stored(client)


async def test_wrong_type_is_422(client: Client, body: Any) -> None:
    r = await client.post(AGENTS, json=body(enabled="sometimes"))
    assert r.status_code == 422
    assert _keys(r) == ["enabled"]
    r = await client.post(AGENTS, json=body(tools="none"))
    assert r.status_code == 422
    assert _keys(r) == ["tools"]


@pytest.mark.parametrize(
    "agent_id", ["Support", "a", "-lead", "has space", "x" * 64, "ünï", "agent_1"]
)
async def test_invalid_slug_is_422(client: Client, body: Any, agent_id: str) -> None:
    r = await client.post(AGENTS, json=body(agent_id))
    assert r.status_code == 422, r.text
    assert _keys(r) == ["agent_id"]


async def test_invalid_json_schema_is_422(client: Client, body: Any) -> None:
    cases = [
        {"type": "object", "properties": {"age": {"type": "integr"}}},  # not a JSON Schema type
        {"type": "array", "items": {}},  # must describe an object
        {"type": "object", "properties": {}, "required": ["email"]},  # required not declared
        {"type": "object", "properties": {"bad name": {"type": "string"}}},
    ]
    for schema in cases:
        r = await client.post(AGENTS, json=body(schema_config=schema))
        assert r.status_code == 422, (schema, r.text)
        assert _keys(r) == ["schema_config"]
    await _nothing_stored(client)


async def test_invalid_tool_parameters_schema_has_nested_path(client: Client, body: Any) -> None:
    tool = {
        "type": "http",
        "name": "lookup",
        "description": "find an order",
        "url": "https://example.com/orders",
        "parameters": {"type": "object", "properties": {"id": {"type": 7}}},
    }
    r = await client.post(AGENTS, json=body(tools=[tool]))
    assert r.status_code == 422
    assert _keys(r) == ["tools.0.http.parameters"]


async def test_undeclared_template_variable_is_422_at_the_template_field(client: Client, body: Any) -> None:
    r = await client.post(
        AGENTS, json=body(prompt_config={"instructions": "Hello {name}, order {order_id}"})
    )
    assert r.status_code == 422
    assert r.json()["extra"] == [{
        "key": "prompt_config.instructions",
        "message": "uses undeclared variable(s) name, order_id; declare them under prompt_config.variables",
    }]
    r = await client.post(
        AGENTS, json=body(prompt_config={"instructions": "Hi {user.__class__}"})
    )
    assert r.status_code == 422
    assert _keys(r) == ["prompt_config.instructions"]
    # both templates wrong: one entry each, at its own field
    r = await client.post(AGENTS, json=body(prompt_config={
        "instructions": "Help {company}.", "greeting": "Hi {caller}", "variables": {"company": {}},
    }))
    assert r.status_code == 422
    assert r.json()["extra"] == [{
        "key": "prompt_config.greeting",
        "message": "uses undeclared variable(s) caller; declare them under prompt_config.variables",
    }]
    r = await client.post(AGENTS, json=body(prompt_config={"instructions": "{a}", "greeting": "{b:>9}"}))
    assert _keys(r) == ["prompt_config.instructions", "prompt_config.greeting"]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"enabled": "yes"}, "enabled"),  # a BeforeValidator's ValueError
        ({"schema_config": {"type": "array"}}, "schema_config"),  # an AfterValidator's
        ({"handoffs": ["support-agent"]}, "handoffs"),  # the model validator's, located
        ({"tools": [{"type": "builtin", "name": "transfer"}]}, "handoffs"),
        ({"tools": [{"type": "builtin", "name": "end_session"}] * 2}, "tools"),
    ],
)
async def test_422_messages_carry_no_pydantic_prefix(
    client: Client, body: Any, overrides: dict[str, Any], key: str
) -> None:
    """Litestar words a pydantic body error from pydantic's raw `msg` ("Value error,
    ..."); the API answers with the validator's own words, at the field's path."""
    r = await client.post(AGENTS, json=body(**overrides))
    assert r.status_code == 422
    extra = r.json()["extra"]
    assert [e["key"] for e in extra] == [key]
    assert not any(e["message"].startswith(("Value error", "Assertion failed")) for e in extra), extra
    # the PATCH path (the store validates the merged document) words it the same
    await client.post(AGENTS, json=body())
    r = await client.patch(f"{AGENTS}/support-agent", json=overrides,
                           headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 422
    assert r.json()["extra"] == extra


async def test_several_errors_are_all_reported(client: Client, body: Any) -> None:
    r = await client.post(AGENTS, json=body("Bad Id", name="", enabled="x"))
    assert r.status_code == 422
    assert set(_keys(r)) == {"agent_id", "name", "enabled"}


@pytest.mark.parametrize(
    "payload",
    [[], "agent", 42, None, True, {"": None}, {"agent_id": {"$gt": ""}}, [{"agent_id": "x"}]],
)
async def test_wrong_shaped_bodies_are_4xx_never_500(client: Client, payload: Any) -> None:
    r = await client.post(
        AGENTS, content=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["status_code"] == 422


async def test_error_messages_do_not_echo_input(client: Client, body: Any) -> None:
    secret = "sk-live-should-not-echo"
    r = await client.post(AGENTS, json=body(name={"nested": secret}))
    assert r.status_code == 422
    assert secret not in r.text


# -------------------------------------------------------------------- body size


@pytest.fixture
async def small_client(store: Any, admin_key: str) -> AsyncIterator[Client]:
    from app.api import create_app

    settings = Settings(_env_file=None, admin_api_key=admin_key, max_body_bytes=4096)  # type: ignore[call-arg,arg-type]
    async with AsyncTestClient(create_app(settings, store)) as c:
        c.headers["Authorization"] = f"Bearer {admin_key}"
        yield c


async def test_oversize_body_is_413_json(client: Client, body: Any) -> None:
    big = body(description="x" * (1024 * 1024))  # > 1 MiB once serialised
    r = await client.post(AGENTS, json=big)
    assert r.status_code == 413
    assert r.json() == {"status_code": 413, "detail": "request body exceeds the 1048576-byte limit"}
    await _nothing_stored(client)


async def _raw_asgi_post(app: Litestar, path: str, chunks: list[bytes], key: str) -> tuple[int, bytes]:
    """POST `chunks` as separate ASGI messages with no Content-Length (chunked upload)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "server": ("testserver", 80), "client": ("127.0.0.1", 1234),
        "headers": [(b"content-type", b"application/json"), (b"authorization", f"Bearer {key}".encode())],
    }
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[arg-type]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def test_body_limit_follows_settings_and_counts_streamed_bytes(
    small_client: Client, body: Any, admin_key: str
) -> None:
    ok = body()
    assert (await small_client.post(AGENTS, json=ok)).status_code == 201
    payload = json.dumps(body("other-agent", description="y" * 5000)).encode()

    # No Content-Length: the limit must hold on the bytes actually streamed.
    app = small_client.app
    status, raw = await _raw_asgi_post(
        app, AGENTS, [payload[i : i + 1000] for i in range(0, len(payload), 1000)], admin_key
    )
    assert status == 413
    assert json.loads(raw)["status_code"] == 413

    # The same body in small chunks under the limit is accepted (the check is on size, not chunking).
    small = json.dumps(body("chunked-agent")).encode()
    status, raw = await _raw_asgi_post(app, AGENTS, [small[:50], small[50:]], admin_key)
    assert status == 201, raw

    r = await small_client.patch(
        f"{AGENTS}/support-agent", content=payload, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert (await small_client.get(f"{AGENTS}/other-agent")).status_code == 404


async def test_body_just_under_the_limit_reaches_validation(client: Client, body: Any) -> None:
    # Large but allowed: the size check passes and the domain rule (32 KiB prompt) answers.
    r = await client.post(
        AGENTS, json=body(prompt_config={"instructions": "z" * (200 * 1024)})
    )
    assert r.status_code == 422
    assert _keys(r) == ["prompt_config.instructions"]


# ------------------------------------------------- fallback chains, timeouts, budgets


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"llm": {"fallbacks": [{"provider": "anthropic"}]}}, "llm.fallbacks.0.provider"),
        ({"stt": {"fallbacks": [{"provider": "deepgram"}]}}, "stt.fallbacks.0.provider"),
        ({"tts": {"provider": "elevenlabs"}}, "tts.provider"),
        ({"llm": {"fallbacks": [{"base_url": "not a url"}]}}, "llm.fallbacks.0.base_url"),
        ({"tts": {"fallbacks": [{"base_url": "ftp://tts.example/v1"}]}}, "tts.fallbacks.0.base_url"),
        ({"llm": {"timeouts": {"first_token_s": 0}}}, "llm.timeouts.first_token_s"),
        ({"llm": {"fallbacks": [{"timeouts": {"connect_s": -1}}]}}, "llm.fallbacks.0.timeouts.connect_s"),
        ({"stt": {"timeouts": {"total_s": -5}}}, "stt.timeouts.total_s"),
        ({"llm": {"timeouts": {"first_token_s": 50, "total_s": 10}}}, "llm.timeouts"),
        ({"llm": {"max_tokens": 0}}, "llm.max_tokens"),
        ({"llm": {"max_tokens_param": "n_predict"}}, "llm.max_tokens_param"),
        ({"llm": {"repetition_limit": 1}}, "llm.repetition_limit"),
        ({"llm": {"repetition_limit": -1}}, "llm.repetition_limit"),
        ({"llm": {"repetition_limit": None}}, "llm.repetition_limit"),
        ({"llm": {"fallbacks": [{}, {}, {}, {}, {}]}}, "llm.fallbacks"),
        ({"budget": {"llm_tokens": 0}}, "budget.llm_tokens"),
        ({"budget": {"tts_characters": -10}}, "budget.tts_characters"),
        ({"budget": {"duration_s": 0}}, "budget.duration_s"),
        ({"budget": {"wrap_up_at": 1}}, "budget.wrap_up_at"),
        ({"budget": {"duration_s": "600"}}, "budget.duration_s"),
        ({"budget": {"max_calls": 3}}, "budget.max_calls"),
    ],
)
async def test_bad_chains_timeouts_and_budgets_are_422_naming_the_field(
    client: Client, body: Any, patch: dict[str, Any], key: str
) -> None:
    r = await client.post(AGENTS, json=body(**patch))
    assert r.status_code == 422, r.text
    assert _keys(r) == [key], r.json()
    await _nothing_stored(client)


async def test_a_chain_with_budgets_round_trips(client: Client, body: Any) -> None:
    chain = {
        "model": "gpt-4.1-mini", "max_tokens": 180, "timeouts": {"first_token_s": 4},
        "fallbacks": [{"model": "llama", "base_url": "http://127.0.0.1:8080/v1",
                       "timeouts": {"first_token_s": 20, "total_s": 60}, "max_tokens_param": "max_tokens"}],
    }
    r = await client.post(AGENTS, json=body(llm=chain, budget={"llm_tokens": 50_000, "duration_s": 900}))
    assert r.status_code == 201, r.text
    got = r.json()
    assert got["llm"]["fallbacks"][0]["base_url"] == "http://127.0.0.1:8080/v1"
    assert got["llm"]["fallbacks"][0]["timeouts"] == {"connect_s": 3.0, "first_token_s": 20.0, "total_s": 60.0}
    assert got["llm"]["timeouts"] == {"connect_s": 3.0, "first_token_s": 4.0, "total_s": 45.0}
    assert got["llm"]["repetition_limit"] == 3 and got["llm"]["max_tokens_param"] == "auto"
    assert got["budget"] == {"llm_tokens": 50_000, "tts_characters": None, "duration_s": 900.0, "wrap_up_at": 0.8}


async def test_the_repetition_guard_is_turned_off_with_0_and_a_null_patch_restores_it(client: Client, body: Any) -> None:
    r = await client.post(AGENTS, json=body(llm={"repetition_limit": 0}))
    assert r.status_code == 201, r.text
    agent_id = r.json()["agent_id"]
    assert r.json()["llm"]["repetition_limit"] == 0
    r = await client.patch(f"{AGENTS}/{agent_id}", json={"llm": {"repetition_limit": None}},
                           headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["llm"]["repetition_limit"] == 3  # RFC 7386: null removes the member, the default returns
