"""Item 2: 10 000 hostile metadata payloads through the real session-start logic.

Payloads (hypothesis): random bytes, invalid UTF-8, lone surrogates, deep nesting,
1 MB strings, numbers/arrays/objects where strings belong, prototype-pollution keys
(`__proto__`, `constructor`), SQL injection strings, Mongo operators
(`{"agent_id": {"$ne": null}}`, `{"purpose": {"$gt": ""}}`, `$regex`, `$where`),
NaN/Infinity, duplicate keys, huge numbers — mixed with valid routing metadata, spread
over the three sources (job dispatch, room, participant) in every combination.

Two paths, said plainly:
- **volume (all 10 000)**: `resolve` — the exact function `prepare_session` calls
  once it has the config snapshot (routing + config lookup) — on the real cache's
  snapshot of a real seeded SQLite store. Every payload must end in an enabled agent
  of the snapshot (routed, or defaulted with a `default*` reason) and never reach
  routing's catch-all `except` (an ERROR log line would say it did).
- **full sessions (a sample)**: every 40th payload (250) runs the whole
  `prepare_session` (agent built, session record written through `SessionManager`), and
  every 400th (25) also a text `AgentSession` turn on the scripted OpenAI endpoint. The
  store is wrapped: every agent_id/purpose argument it receives must be a plain `str`
  matching the slug/purpose pattern, and no argument, however deep, may carry a
  `$`-operator or prototype key.
The same sample runs against MongoDB (SecantusDB), where operator injection matters most.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from livekit.agents import AgentSession

from app.domain import SessionRecord
from app.domain.fallback import FALLBACK_CONFIG
from app.domain.models import PURPOSE_RE, SLUG_RE
from app.domain.routing import MetadataSource
from app.seed import seed
from app.settings import Settings
from app.store import open_store
from app.store.base import StartSession
from app.store.resolver import resolve
from app.worker.services import WorkerServices
from app.worker.session_start import prepare_session
from sim.db_servers import mongo_server
from sim.fake_openai import FakeOpenAI

pytestmark = pytest.mark.slow

N_PAYLOADS = 10_000
FULL_EVERY = 40
TURN_EVERY = 400

SLUG = re.compile(SLUG_RE)
PURPOSE = re.compile(PURPOSE_RE)

# ------------------------------------------------------------------ strategies

SQLI = ["'; DROP TABLE routes;--", "sales' OR '1'='1", "1; DELETE FROM agent_versions", "\" OR \"\"=\"",
        "sales'--", "support-agent-v1' /*", "%27%20OR%201=1"]
KEYS = ["agent_id", "purpose", "user_id", "variables", "__proto__", "constructor", "prototype",
        "$where", "$ne", "toString", "hasOwnProperty", "", "AGENT_ID", "agent_id\u0000"]
OPERATORS = st.sampled_from([
    {"$ne": None}, {"$gt": ""}, {"$regex": ".*"}, {"$in": ["sales", "support"]}, {"$exists": True},
    {"$where": "sleep(1000)"}, {"$expr": {"$eq": [1, 1]}}, {"$nin": []}, {"__proto__": {"admin": True}},
])
VALID = st.sampled_from([
    {"purpose": "sales"}, {"purpose": "support"}, {"agent_id": "sales-agent-v1"}, {"agent_id": "support-agent-v1"},
    {"purpose": "sales", "user_id": "u-1", "variables": {"customer": "Ada"}}, {"agent_id": "no-such-agent"},
    {"purpose": "no_such_purpose"}, {},
])
scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.sampled_from(SQLI), st.sampled_from(["sales", "support", "sales-agent-v1"]),
)
json_value = st.recursive(
    scalar | OPERATORS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), kids, max_size=4),
    max_leaves=6,
)
hostile_object = st.one_of(
    st.fixed_dictionaries({}, optional=dict.fromkeys(("agent_id", "purpose", "user_id", "variables"), json_value)),
    st.dictionaries(st.sampled_from(KEYS), json_value, max_size=6),
    st.builds(lambda op, k: {k: op}, OPERATORS, st.sampled_from(["agent_id", "purpose", "user_id", "variables"])),
    st.builds(lambda v, extra: {**v, **extra}, VALID, st.dictionaries(st.sampled_from(KEYS), json_value, max_size=3)),
    VALID,
)


def _encode(obj: Any) -> str:
    return json.dumps(obj, allow_nan=True)


MIB = 1 << 20
BIG = [  # built once: building a fresh 1 MiB string per example would dominate the run
    "y" * MIB, _encode({"agent_id": "x" * MIB}), _encode({"purpose": "sales", "user_id": "u" * MIB}),
    _encode({"variables": {"v": "z" * (64 << 10)}}), "[" * (64 << 10), ("\u00e9" * (MIB // 2)),
]


def _deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    if kind == "open":
        return "[" * depth
    return '{"a":' * depth + '"x"' + "}" * depth


raw_text = st.one_of(
    hostile_object.map(_encode),                                             # JSON objects
    json_value.map(_encode),                                                 # any JSON value
    st.builds(_deep, st.integers(1, 100_000), st.sampled_from(["list", "open", "obj"])),
    st.integers(1, 9_000).map(lambda n: _encode({"agent_id": "x" * n})),    # around the 8 KiB cap
    st.sampled_from(BIG),                                                     # 64 KiB .. 1 MiB strings
    st.text(max_size=200),                                                   # arbitrary unicode
    st.text(max_size=50).map(lambda t: t + "\ud800"),                       # lone surrogate
    st.sampled_from(['{"agent_id": NaN}', '{"purpose": Infinity}', '{"agent_id": 1e999999}',
                     '{"agent_id": "x", "agent_id": "sales-agent-v1"}', '{"purpose": "sales"} trailing',
                     '{"x": 1' + "0" * 5000 + "}", "null", "true", "[]", '""', " ", "\ufeff{}",
                     '{"agent_id": "sales-agent-v1\\u0000"}', '{"purpose": "SALES"}', '{"purpose": " sales"}']),
)
raw_bytes = st.one_of(
    st.binary(max_size=300),
    raw_text.filter(lambda t: len(t) < 20_000).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(lambda a, b: a + b"\xff\xfe" + b, st.binary(max_size=20), st.binary(max_size=20)),
    st.just(b'{"purpose": "sales"}'),
)
payload = st.one_of(st.none(), raw_text, raw_bytes)
# The two other sources come from a fixed pool (cheap to draw: hypothesis spends ~5 ms
# generating each fresh payload, so one fresh payload per session keeps 10 000 sessions
# affordable) of empty, valid, garbage and injection values.
POOL = [None, "", b"", "{}", '{"purpose": "sales"}', b'{"agent_id": "sales-agent-v1"}', '{"agent_id": {"$ne": null}}',
        '{"purpose": {"$gt": ""}}', "\xff not json", b"\xff\xfe", "[" * 5000, '{"purpose": "x"}', "null",
        '{"__proto__": {"agent_id": "sales-agent-v1"}}', "'; DROP TABLE routes;--", '{"agent_id": 7}']
sources_strategy = st.tuples(payload, st.sampled_from(POOL), st.sampled_from(POOL),
                             st.permutations(["job", "room", "participant"]))


def to_sources(drawn: tuple[Any, Any, Any, list[str]]) -> list[MetadataSource]:
    a, b, c, order = drawn
    return [MetadataSource(name, raw) for name, raw in zip(order, (a, b, c), strict=True)]  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the spy

FORBIDDEN_KEY = re.compile(r"^(\$|__proto__$|constructor$|prototype$)")
AGENT_ARG_METHODS = {"get_agent_config", "update_agent_config", "delete_agent_config", "list_versions", "rollback"}
PURPOSE_ARG_METHODS = {"get_route", "delete_route"}


def _keys(value: Any) -> Iterator[str]:
    """Every mapping key in `value`, however deep (models are dumped first)."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a session write op
        for f in dataclasses.fields(value):
            yield from _keys(getattr(value, f.name))
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _keys(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _keys(v)


@dataclass
class SpyStore:
    """Delegates to a real store and checks every argument it receives."""

    inner: Any
    calls: int = 0
    session_starts: int = 0
    violations: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_") or name in ("add_change_listener",):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._check(name, args, kwargs)
            return await attr(*args, **kwargs)

        return call

    def _check(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.calls += 1
        if name in AGENT_ARG_METHODS:
            agent_id = args[0] if args else kwargs.get("agent_id")
            if not (type(agent_id) is str and SLUG.fullmatch(agent_id)):
                self.violations.append(f"{name}: agent_id {agent_id!r}")
        if name in PURPOSE_ARG_METHODS:
            purpose = args[0] if args else kwargs.get("purpose")
            if not (type(purpose) is str and PURPOSE.fullmatch(purpose)):
                self.violations.append(f"{name}: purpose {purpose!r}")
        if name == "list_sessions" and kwargs.get("agent_id") is not None and type(kwargs["agent_id"]) is not str:
            self.violations.append(f"list_sessions: agent_id {kwargs['agent_id']!r}")
        starts: list[SessionRecord] = []
        if name == "start_session":
            starts.append(args[0])
        if name == "apply_session_writes":  # the session writer's batches (typed ops)
            ops = args[1] if len(args) > 1 else kwargs["ops"]
            starts += [op.record for op in ops if isinstance(op, StartSession)]
        for rec in starts:
            self.session_starts += 1
            if not (type(rec.agent_id) is str and SLUG.fullmatch(rec.agent_id)):
                self.violations.append(f"start_session: agent_id {rec.agent_id!r}")
            if rec.user_id is not None and type(rec.user_id) is not str:
                self.violations.append(f"start_session: user_id {rec.user_id!r}")
        bad = [k for k in _keys([*args, *kwargs.values()]) if FORBIDDEN_KEY.match(k)]
        if bad:
            self.violations.append(f"{name}: operator/prototype key(s) {bad}")


# --------------------------------------------------------------------- fixture

class RoutingErrors(logging.Handler):
    """Counts routing's catch-all (`logger.exception`): it must never fire."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def routing_errors() -> Iterator[RoutingErrors]:
    handler = RoutingErrors()
    for name in ("app.domain.routing", "app.store.resolver", "app.worker"):
        logging.getLogger(name).addHandler(handler)
    yield handler
    for name in ("app.domain.routing", "app.store.resolver", "app.worker"):
        logging.getLogger(name).removeHandler(handler)


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/hostile.db"


async def _services(url: str) -> tuple[WorkerServices, SpyStore, Any]:
    raw = open_store(url)
    await raw.start()
    await seed(raw)
    spy = SpyStore(raw)
    svc = WorkerServices(Settings(_env_file=None, cache_poll_interval=0.5), spy)  # type: ignore[call-arg, arg-type]
    await svc.start()
    return svc, spy, raw


# ------------------------------------------------------------------------ tests


def _check_routed(snapshot: Any, sources: list[MetadataSource], decision: Any, config: Any) -> None:
    enabled = {a for a, c in snapshot.configs.items() if c.enabled}
    assert config.agent_id in enabled, (config.agent_id, sources)
    assert config is not FALLBACK_CONFIG  # the seed has an enabled default route
    if decision.reason in ("agent_id", "purpose"):
        assert decision.agent_id == config.agent_id
    else:
        assert decision.reason.startswith("default"), decision.reason
        assert config.agent_id == snapshot.default_agent_id
    assert decision.user_id is None or (type(decision.user_id) is str and len(decision.user_id) <= 128)
    for k, v in decision.variables.items():
        assert type(k) is str and type(v) is str and len(v) <= 1024
    assert decision.purpose is None or PURPOSE.fullmatch(decision.purpose)


async def test_10000_hostile_payloads_route_or_default_and_never_reach_the_store_as_operators(
    sqlite_url: str, routing_errors: RoutingErrors
) -> None:
    svc, spy, raw = await _services(sqlite_url)
    try:
        snapshot = await svc.snapshot()
        assert snapshot.default_agent_id == "support-agent-v1"
        drawn_all: list[list[MetadataSource]] = []
        counts = {"routed": 0, "defaulted": 0}

        @settings(max_examples=N_PAYLOADS, deadline=None, database=None, derandomize=False,
                  phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
        @given(sources_strategy)
        def volume(drawn: tuple[Any, Any, Any, list[str]]) -> None:
            sources = to_sources(drawn)
            n = len(drawn_all)
            resolution = resolve(snapshot, sources, room=f"hostile-{n}")
            decision, config = resolution.decision, resolution.config
            _check_routed(snapshot, sources, decision, config)
            counts["defaulted" if decision.is_fallback else "routed"] += 1
            if n % FULL_EVERY == 0:  # keep the sample small in memory: no 1 MB payloads kept
                drawn_all.append([s if _size(s.raw) < 20_000 else MetadataSource(s.name, str(s.raw)[:20_000])
                                  for s in sources])
            else:
                drawn_all.append([])

        # Each fallback logs one WARNING line (bounded: the metadata preview is capped);
        # formatting 8 000 of them through pytest's capture is most of the cost, so only
        # ERROR (routing's catch-all) is recorded during the volume run.
        quiet = [logging.getLogger(n) for n in ("app.domain.routing", "app.store.resolver", "app.worker")]
        levels = [lg.level for lg in quiet]
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        try:
            volume()
        finally:
            for lg, level in zip(quiet, levels, strict=True):
                lg.setLevel(level)
        tried = len(drawn_all)
        assert tried >= N_PAYLOADS, tried
        assert not routing_errors.records, [r.getMessage() for r in routing_errors.records[:5]]
        sample = [s for s in drawn_all if s]
        print(f"\n[hostile] {tried} payload triples routed in-process: {counts['routed']} routed, "
              f"{counts['defaulted']} defaulted; {len(sample)} run as full sessions")
        await _full_sessions(svc, spy, raw, sample, routing_errors)
    finally:
        await svc.aclose()
        await raw.aclose()


def _size(raw: Any) -> int:
    return len(raw) if isinstance(raw, str | bytes) else 0


async def _full_sessions(svc: WorkerServices, spy: SpyStore, raw: Any, sample: list[list[MetadataSource]],
                         routing_errors: RoutingErrors) -> None:
    snapshot = await svc.snapshot()
    ids = []
    for i, sources in enumerate(sample):
        fake = FakeOpenAI().text("How can I help?")
        prepared = await prepare_session(svc, sources, room=f"hostile-room-{i}", audio=False, llm_client=fake.client())
        _check_routed(snapshot, sources, prepared.decision, prepared.config)
        if i % (TURN_EVERY // FULL_EVERY) == 0:
            async with AgentSession() as session:
                prepared.manager.attach(session)
                await session.start(prepared.agent, capture_run=True)
                result = await session.run(user_input="hello")
                result.expect.contains_message(role="assistant")
        await prepared.aclose()
        assert not prepared.manager.dropped, prepared.manager.dropped
        ids.append(prepared.record.session_id)
    for sid in ids[:: max(1, len(ids) // 20)]:
        rec = await raw.get_session(sid)
        assert rec.agent_id in snapshot.configs and rec.status.value == "completed"
    assert spy.calls > len(sample), spy.calls
    assert spy.session_starts == len(sample), (spy.session_starts, len(sample))  # the spy saw every record
    assert not spy.violations, spy.violations[:10]
    assert not routing_errors.records, [r.getMessage() for r in routing_errors.records[:5]]


async def test_hostile_sample_against_mongo(routing_errors: RoutingErrors) -> None:
    """The operator-injection payloads against a real Mongo-wire server: the store only
    ever sees plain strings, and sessions are recorded."""
    specials = [
        {"agent_id": {"$ne": None}}, {"purpose": {"$gt": ""}}, {"agent_id": {"$regex": ".*"}},
        {"agent_id": "sales-agent-v1", "$where": "1"}, {"user_id": {"$ne": None}, "purpose": "sales"},
        {"__proto__": {"agent_id": "sales-agent-v1"}}, {"purpose": "'; DROP TABLE routes;--"},
        {"purpose": "sales", "variables": {"$set": {"agent_id": "x"}}}, {"constructor": {"prototype": {"x": 1}}},
    ]
    async with mongo_server() as url:
        svc, spy, raw = await _services(url)
        try:
            snapshot = await svc.snapshot()
            sample = [[MetadataSource("job", _encode(m)), MetadataSource("room", None)] for m in specials]
            sample += [[MetadataSource("room", _encode(m))] for m in specials]
            await _full_sessions(svc, spy, raw, sample, routing_errors)
            assert snapshot.default_agent_id == "support-agent-v1"
        finally:
            await svc.aclose()
            await raw.aclose()
