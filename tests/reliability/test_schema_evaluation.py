"""Issue 21, item 1: no schema evaluation on a caller's data can stall the process.

A pattern such as `^(a+)+$` made Python's backtracking `re` take exponential time in a
value the caller dictates (0.34 s at 22 characters, a `chat` turn that never ended at
34). Now every pattern runs on RE2 (linear time), schemas are bounded at write time,
and each validation is bounded in size and time and runs off the session's loop.

The chat-turn tests run the real path of a session start: routing over the store (a
SQLite file), the factory's tools, the session record, LiveKit's `AgentSession` in
text mode and the OpenAI plugin against a scripted endpoint. The time bounds are
generous behaviour checks (exponential versus linear), not benchmarks; the measured
turn time is printed (`-s`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from livekit.agents import AgentSession

from app.api.app import create_app
from app.domain import AgentConfigInput, HttpTool, SessionStatus
from app.domain.jsonschema_safe import (
    MAX_VALUE_BYTES,
    VALIDATION_BUDGET_S,
    pattern_search,
    validator_for,
    value_problems,
)
from app.domain.routing import MetadataSource
from app.domain.schema_admission import (
    MAX_SCHEMA_COST,
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_NODES,
    MAX_SCHEMA_PATTERNS,
    SchemaRefused,
    check_schema,
)
from app.settings import Settings
from app.store.sql import SQLStore
from app.worker.services import WorkerServices
from app.worker.session_start import prepare_session
from sim.fake_openai import FakeOpenAI, ToolCall
from tests.api.conftest import agent_body

EVIL = "^(a+)+$"
CRAFTED = "a" * 34 + "!"  # Python's re: ~2^34 steps; RE2: 35
KEY = "schema-eval-admin-key-0123456789"
AGENTS = "/api/v1/agents/config"


# ------------------------------------------------------------------ a chat turn


async def _store(tmp_path: Path, *configs: AgentConfigInput) -> SQLStore:
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/schema.db")
    await store.start()
    for cfg in configs:
        await store.create_agent_config(cfg)
    return store


def _agent(agent_id: str, schema: dict[str, Any], tools: list[dict[str, Any]] | None = None) -> AgentConfigInput:
    return AgentConfigInput.model_validate({
        "agent_id": agent_id, "name": agent_id, "prompt_config": {"instructions": "Collect the code."},
        "schema_config": schema, "tools": tools or [],
    })


async def _chat(
    tmp_path: Path, store: SQLStore, agent_id: str, fake: FakeOpenAI, turns: list[str]
) -> tuple[list[float], list[Any], Any]:
    """One text session with `agent_id` through the worker's session start; returns the
    duration of each turn, each turn's RunResult and the stored session record."""
    settings = Settings(_env_file=None, openai_api_key=None, openai_base_url=None)  # type: ignore[call-arg]
    services = WorkerServices(settings, store)
    await services.start()
    durations, results = [], []
    try:
        prepared = await prepare_session(
            services, [MetadataSource("job", json.dumps({"agent_id": agent_id}))], room="redos-room",
            audio=False, llm_client=fake.client(),
        )
        async with AgentSession() as session:
            prepared.manager.attach(session)
            await session.start(prepared.agent, capture_run=True)
            for text in turns:
                t0 = time.perf_counter()
                results.append(await asyncio.wait_for(session.run(user_input=text), timeout=30))
                durations.append(time.perf_counter() - t0)
        await prepared.aclose()
        record = await store.get_session(prepared.record.session_id)
    finally:
        await services.aclose()
    return durations, results, record


def _outputs(result: Any) -> list[str]:
    return [e.item.output for e in result.events if e.type == "function_call_output"]


async def test_chat_turn_with_a_value_crafted_against_a_nested_quantifier_finishes_promptly(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": EVIL}}, "required": ["code"]}
    store = await _store(tmp_path, _agent("redos-agent", schema))
    fake = FakeOpenAI()
    fake.tool_call("record_code", {"value": CRAFTED}).text("That code is not valid, please repeat it.")
    fake.tool_call("record_code", {"value": "aaaa"}).text("Thanks, recorded.")
    try:
        durations, (bad, good), record = await _chat(tmp_path, store, "redos-agent", fake, ["a" * 34 + "!", "aaaa"])
    finally:
        await store.aclose()
    print(f"\n[redos] turn with a {len(CRAFTED)}-char value against {EVIL!r}: {durations[0] * 1000:.1f} ms "
          f"(two scripted LLM round trips, a refused record); valid turn {durations[1] * 1000:.1f} ms")
    assert durations[0] < 2.0, durations  # exponential would be hours; linear is milliseconds
    (refused,) = _outputs(bad)
    assert refused.startswith("Error: 'code' was not recorded: value: ") and "does not match" in refused
    assert _outputs(good) == ['Recorded code="aaaa". All required fields collected.']
    assert record.collected == {"code": "aaaa"}
    assert record.status == SessionStatus.completed


async def test_grouped_tool_and_pattern_properties_match_in_linear_time(tmp_path: Path) -> None:
    """More than 12 fields: one `record_data` tool; patterns in `patternProperties`
    (matched against the keys the model sends) and `additionalProperties` go to RE2 too."""
    props = {f"f{i}": {"type": "string"} for i in range(13)}
    props["extra"] = {"type": "object", "patternProperties": {EVIL: {"type": "integer"}},
                      "additionalProperties": False}
    store = await _store(tmp_path, _agent("grouped-agent", {"type": "object", "properties": props}))
    fake = FakeOpenAI()
    fake.tool_call("record_data", {"extra": {CRAFTED: 1}, "f0": "x"}).text("Sorry?")
    fake.tool_call("record_data", {"extra": {"aaaa": 2}}).text("Noted.")
    try:
        durations, (bad, good), record = await _chat(tmp_path, store, "grouped-agent", fake, ["...", "..."])
    finally:
        await store.aclose()
    assert durations[0] < 2.0, durations
    (out,) = _outputs(bad)
    assert out.startswith("Error: nothing was recorded: extra: ") and "does not match any of the regexes" in out
    assert _outputs(good)[0].startswith('Recorded extra={"aaaa": 2}.')
    assert record.collected == {"extra": {"aaaa": 2}}


async def test_parallel_record_calls_are_recorded_in_call_order(tmp_path: Path) -> None:
    """Validation now awaits a worker thread, so a slow first value could finish after a
    quick second one: the model's later call (a correction) must still win."""
    slow = {"type": "array", "items": {"allOf": [{"minLength": 1} for _ in range(50)]}}
    store = await _store(tmp_path, _agent("order-agent", {"type": "object", "properties": {"codes": slow}}))
    fake = FakeOpenAI()
    fake.tool_calls(ToolCall("record_codes", {"value": ["a"] * 400}), ToolCall("record_codes", {"value": ["b"]}))
    fake.text("Noted.")
    try:
        _, (result,), record = await _chat(tmp_path, store, "order-agent", fake, ["my codes"])
    finally:
        await store.aclose()
    outputs = _outputs(result)
    assert len(outputs) == 2 and all(o.startswith("Recorded codes=") for o in outputs), outputs
    assert record.collected == {"codes": ["b"]}


@respx.mock
async def test_http_tool_argument_is_validated_in_linear_time_before_any_call(tmp_path: Path) -> None:
    upstream = respx.get("https://tools.example/orders").mock(return_value=httpx.Response(200, json={"ok": True}))
    tool = {"type": "http", "name": "lookup_order", "description": "Look up an order.", "method": "GET",
            "url": "https://tools.example/orders",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "pattern": EVIL}},
                           "required": ["order_id"]}}
    store = await _store(tmp_path, _agent("http-agent", {"type": "object", "properties": {}}, [tool]))
    fake = FakeOpenAI()
    fake.tool_call("lookup_order", {"order_id": CRAFTED}).text("That order id looks wrong.")
    fake.tool_call("lookup_order", {"order_id": "aaa"}).text("Found it.")
    try:
        durations, (bad, good), _ = await _chat(tmp_path, store, "http-agent", fake, ["order", "order aaa"])
    finally:
        await store.aclose()
    assert durations[0] < 2.0, durations
    assert _outputs(bad)[0].startswith("error: invalid arguments: order_id: ")
    assert _outputs(good) == ['{"ok":true}']
    assert upstream.call_count == 1  # only the valid one went out


# ------------------------------------------------------------- engine semantics


def test_patterns_keep_json_schema_meaning_on_re2() -> None:
    assert pattern_search(EVIL, "a" * 100_000) and not pattern_search(EVIL, "a" * 100_000 + "!")
    assert pattern_search(r"^\u00e9t\u00E9$", "été")  # ECMA-262 escapes
    assert pattern_search(r"^\u{1F600}$", "😀")
    assert pattern_search(r"^ab\Z", "ab") and not pattern_search(r"^ab\Z", "ab\n")
    assert pattern_search("b", "abc")  # unanchored search, like `re.search`
    assert not pattern_search("^a", "\ud800a")  # a lone surrogate is data, not an error
    v = validator_for({"type": "array", "uniqueItems": True})
    assert value_problems(v, [1, True]) == [] and value_problems(v, [{"a": [1]}, {"a": [1.0]}])


def test_format_regex_means_a_pattern_re2_compiles() -> None:
    v = validator_for({"type": "object", "properties": {"value": {"type": "string", "format": "regex"}}})
    assert value_problems(v, {"value": "^[a-z]+$"}) == []
    assert value_problems(v, {"value": r"(a)\1"}) == [r"value: '(a)\\1' is not a 'regex'"]


def test_oversized_or_deep_values_are_refused_before_validation() -> None:
    v = validator_for({"type": "object", "properties": {"value": {}}})
    assert value_problems(v, {"value": "x" * MAX_VALUE_BYTES}) == [f"the value is larger than {MAX_VALUE_BYTES} bytes"]
    deep: Any = "leaf"
    for _ in range(5000):  # deeper than Python's stack: the check does not recurse
        deep = [deep]
    assert value_problems(v, {"value": deep}) == ["the value is nested more than 32 levels deep"]


async def test_slowest_admissible_schema_is_cut_off_and_never_blocks_the_loop() -> None:
    """Caps bound a schema's cost, but cost times value size can still be seconds: the
    per-validation budget answers, and the tool validates off the loop, so a session's
    other work (audio) keeps its timing meanwhile."""
    from app.agents import tools

    heavy = {"type": "object", "properties": {"value": {"type": "array", "items": {
        "allOf": [{"minLength": 1} for _ in range(MAX_SCHEMA_NODES // 2 - 10)]}}}}
    check_schema(heavy)  # admissible
    validator = validator_for(heavy)
    value = {"value": ["a"] * 3000}  # within MAX_VALUE_BYTES
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    problems = await tools.argument_problems(validator, value)
    elapsed = time.perf_counter() - t0
    stop.set()
    await tick
    print(f"\n[budget] heavy validation answered in {elapsed * 1000:.0f} ms; loop's longest gap "
          f"{max(gaps) * 1000:.1f} ms over {len(gaps)} ticks")
    assert problems == [f"the value could not be checked within {VALIDATION_BUDGET_S * 1000:.0f} ms; "
                        "ask for a shorter or simpler value"]
    assert elapsed < VALIDATION_BUDGET_S + 1.0
    assert len(gaps) >= 10 and max(gaps) < 0.2, max(gaps)  # on the loop it would be one gap of ~250 ms


# -------------------------------------------------------------- write-time rules


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/w.db")
    await store.start()
    app = create_app(Settings(_env_file=None, admin_api_key=KEY), store)  # type: ignore[call-arg,arg-type]
    async with AsyncTestClient(app) as c:
        c.headers.update({"Authorization": f"Bearer {KEY}"})
        yield c
    await store.aclose()


def _prop(**schema: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"x": schema}}


def _nested(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        node = {"type": "object", "properties": {"a": node}}
    return {"type": "object", "properties": {"x": node}}


def _laughs(links: int) -> dict[str, Any]:
    """Each definition refers to the next twice: 2^links subschemas once expanded."""
    defs: dict[str, Any] = {f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(links)}
    defs[f"d{links}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "properties": {"x": {"$ref": "#/$defs/d0"}}}


REFUSED = [
    pytest.param(_prop(type="string", pattern=r"(a)\1"), r"pattern '(a)\\1' at properties/x/pattern is not "
                 "supported: invalid escape sequence", id="backreference"),
    pytest.param(_prop(type="string", pattern="^(?=a)a"), "at properties/x/pattern is not supported: invalid perl "
                 "operator", id="lookahead"),
    pytest.param(_prop(type="string", pattern="(?<!a)b"), "at properties/x/pattern is not supported", id="lookbehind"),
    pytest.param(_prop(type="object", patternProperties={r"^(\w)\1$": {}}),
                 r"at properties/x/patternProperties/^(\w)\1$ is not supported", id="patternProperties-key"),
    pytest.param(_prop(type="string", pattern=r"\p{L}{1000}"), "pattern too large", id="too-large-for-re2"),
    pytest.param(_nested(100), f"nested more than {MAX_SCHEMA_DEPTH} levels deep", id="nested-100"),
    pytest.param(_nested(260), f"nested more than {MAX_SCHEMA_DEPTH} levels deep", id="nested-260"),
    pytest.param({"type": "object", "properties": {"x": {"enum": list(range(MAX_SCHEMA_NODES))}}},
                 f"more than {MAX_SCHEMA_NODES} JSON values", id="nodes"),
    pytest.param({"type": "object", "properties": {f"p{i}": {"pattern": "^a"} for i in range(MAX_SCHEMA_PATTERNS + 1)}},
                 f"more than {MAX_SCHEMA_PATTERNS} patterns", id="patterns"),
    pytest.param({"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}},
                  "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}},
                 "leads back to a schema that contains it", id="ref-loop"),
    pytest.param(_prop(**{"$ref": "#"}), "leads back to a schema that contains it", id="ref-to-root"),
    pytest.param({"type": "object", "$defs": {"n": {"type": "object", "properties": {"kids": {
        "type": "array", "items": {"$ref": "#/$defs/n"}}}}}, "properties": {"x": {"$ref": "#/$defs/n"}}},
        "recursive schemas are not supported", id="recursive-tree"),
    pytest.param(_prop(**{"$ref": "#/$defs/missing"}), "$ref '#/$defs/missing' at properties/x/$ref does not "
                 "resolve", id="unresolvable-ref"),
    pytest.param(_prop(**{"$ref": "https://json-schema.org/draft/2020-12/schema"}), "does not resolve inside "
                 "this schema", id="remote-ref"),
    pytest.param({"type": "object", "$defs": {"u": {"$ref": "#/$defs/nope"}}}, "at $defs/u/$ref does not resolve",
                 id="unused-definition-checked-too"),
    pytest.param(_prop(**{"$dynamicRef": "#meta"}), "$dynamicRef at properties/x/$dynamicRef is not supported",
                 id="dynamicRef"),
    pytest.param(_prop(**{"$id": "https://elsewhere.example/s", "type": "string"}),
                 "$id at properties/x/$id: only the schema's root", id="nested-id"),
    pytest.param({"type": "object", "patternProperties": {"^a": {}}, "unevaluatedProperties": False},
                 "unevaluatedProperties cannot be combined with patternProperties", id="unevaluated-with-patterns"),
    pytest.param(_laughs(12), f"expands to more than {MAX_SCHEMA_COST} subschemas", id="ref-expansion"),
    pytest.param(_prop(type="strin"), "invalid JSON Schema at properties/x/type", id="meta-schema"),
]


@pytest.mark.parametrize(("schema", "message"), REFUSED)
async def test_unsafe_schemas_are_refused_at_write_naming_the_place(
    client: AsyncTestClient[Litestar], schema: dict[str, Any], message: str
) -> None:
    r = await client.post(AGENTS, json=agent_body("refused-agent", schema_config=schema))
    assert r.status_code == 422, r.text
    (err,) = r.json()["extra"]
    assert err["key"] == "schema_config" and message in err["message"], err
    # The same rules guard HTTP tool parameters, at their own path.
    tool = {"type": "http", "name": "t", "description": "d", "url": "https://tools.example/", "parameters": schema}
    r = await client.post(AGENTS, json=agent_body("refused-tool", tools=[tool]))
    assert r.status_code == 422, r.text
    keys = [e.get("key") for e in r.json()["extra"]]
    assert "tools.0.http.parameters" in keys, r.json()


@pytest.mark.parametrize("schema", [
    _prop(type="string", pattern=EVIL),  # fine on RE2
    _prop(type="string", pattern=r"^\u00e9+\d{2,4}\Z"),
    _prop(type="string", format="email", minLength=3),
    _nested(14),
    _laughs(9),
    {"type": "object", "properties": {"x": {"$ref": "#c"}}, "$defs": {"c": {"$anchor": "c", "type": "string"}}},
    {"$id": "https://example.com/person.schema.json", "type": "object",
     "properties": {"x": {"$ref": "#/$defs/s"}}, "$defs": {"s": {"type": "string"}}},
    {"type": "object", "properties": {"x": {"type": "object", "unevaluatedProperties": False,
                                            "allOf": [{"properties": {"a": {}}}]}}},
])
async def test_reasonable_schemas_are_accepted(client: AsyncTestClient[Litestar], schema: dict[str, Any]) -> None:
    r = await client.post(AGENTS, json=agent_body("fine-agent", schema_config=schema))
    assert r.status_code == 201, r.text


async def test_patch_is_held_to_the_same_rules(client: AsyncTestClient[Litestar]) -> None:
    assert (await client.post(AGENTS, json=agent_body("patched-agent"))).status_code == 201
    r = await client.patch(f"{AGENTS}/patched-agent", json={"schema_config": _prop(type="string", pattern=r"(a)\1")})
    assert r.status_code == 422 and "properties/x/pattern" in r.text, r.text
    r = await client.patch(f"{AGENTS}/patched-agent", json={"schema_config": _nested(300)})
    assert r.status_code == 422 and "nested more than" in r.text, r.text


def test_schema_refused_names_where() -> None:
    with pytest.raises(SchemaRefused) as e:
        check_schema(_prop(type="string", pattern="(?=x)"))
    assert e.value.where == "properties/x/pattern"
    assert re.search(r"RE2 \(linear time\)", str(e.value))


def test_tool_schemas_use_the_safe_validator() -> None:
    """The factory's tools and HTTP tools validate with `validator_for` (one validator
    for untrusted data), and no module of the app evaluates jsonschema's own `pattern`."""
    spec = HttpTool.model_validate({"name": "t", "description": "d", "url": "https://x.example/",
                                    "parameters": _prop(type="string", pattern=EVIL)})
    v = validator_for(spec.parameters)
    assert type(v).VALIDATORS["pattern"] is not __import__("jsonschema").Draft202012Validator.VALIDATORS["pattern"]
    app_dir = Path(__file__).resolve().parents[2] / "app"
    offenders = [str(p.relative_to(app_dir)) for p in app_dir.rglob("*.py")
                 if "node_modules" not in p.parts and "Draft202012Validator(" in p.read_text()
                 and p.name != "jsonschema_safe.py"]
    assert offenders == [], offenders
