"""Routing: metadata sources → RouteDecision, for every reason, and never a crash."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from app.domain import Route
from app.domain.routing import (
    MAX_METADATA_BYTES,
    MetadataSource,
    RoutingTable,
    determine_agent_type,
)

from .conftest import make_config


@pytest.fixture
def table() -> RoutingTable:
    agents = [
        make_config("support"),
        make_config("sales"),
        make_config("legacy", enabled=False),
        make_config("intake"),
    ]
    routes = [
        Route(purpose="help", agent_id="support", is_default=True),
        Route(purpose="buy", agent_id="sales"),
        Route(purpose="old", agent_id="legacy"),
    ]
    return RoutingTable.build(routes, agents)


def job(meta: object) -> list[MetadataSource]:
    raw = meta if isinstance(meta, (str, bytes)) or meta is None else json.dumps(meta)
    return [MetadataSource("job", raw)]


# ------------------------------------------------------------------------ the table


def test_table_snapshot(table: RoutingTable) -> None:
    assert dict(table.routes) == {"buy": "sales", "help": "support", "old": "legacy"}
    assert table.default_agent_id == "support"
    assert table.enabled == {"support", "sales", "intake"}
    assert table.known == {"support", "sales", "legacy", "intake"}
    with pytest.raises(TypeError):
        table.routes["x"] = "y"  # type: ignore[index]


def test_default_to_disabled_agent_means_no_default() -> None:
    t = RoutingTable.build(
        [Route(purpose="p", agent_id="off", is_default=True)], [make_config("off", enabled=False)]
    )
    assert t.default_agent_id is None
    d = determine_agent_type(job({}), t)
    assert (d.agent_id, d.reason) == (None, "default")


# --------------------------------------------------------------------------- reasons


def test_agent_id(table: RoutingTable) -> None:
    d = determine_agent_type(job({"agent_id": "intake", "purpose": "buy"}), table)
    assert (d.agent_id, d.reason, d.source) == ("intake", "agent_id", "job")
    assert d.purpose == "buy"
    assert not d.is_fallback


def test_purpose(table: RoutingTable) -> None:
    d = determine_agent_type(job({"purpose": "buy"}), table)
    assert (d.agent_id, d.reason, d.purpose) == ("sales", "purpose", "buy")


def test_default_when_neither_given(table: RoutingTable) -> None:
    d = determine_agent_type(job({"user_id": "u1"}), table)
    assert (d.agent_id, d.reason, d.user_id) == ("support", "default", "u1")


@pytest.mark.parametrize(
    "agent_id",
    ["nope", "UPPER", "a", "-bad", {"$ne": None}, ["support"], 7, True, "support\n", "x" * 100],
)
def test_unknown_or_invalid_agent_id(table: RoutingTable, agent_id: object) -> None:
    d = determine_agent_type(job({"agent_id": agent_id, "purpose": "buy"}), table)
    assert (d.agent_id, d.reason) == ("support", "default:unknown_agent_id")


def test_disabled_agent_by_id(table: RoutingTable) -> None:
    d = determine_agent_type(job({"agent_id": "legacy"}), table)
    assert (d.agent_id, d.reason) == ("support", "default:disabled_agent")


def test_disabled_agent_by_purpose(table: RoutingTable) -> None:
    d = determine_agent_type(job({"purpose": "old"}), table)
    assert (d.agent_id, d.reason, d.purpose) == ("support", "default:disabled_agent", "old")


@pytest.mark.parametrize("purpose", ["nope", {"$gt": ""}, ["buy"], 3, "BUY", "b" * 200])
def test_unknown_purpose(table: RoutingTable, purpose: object) -> None:
    d = determine_agent_type(job({"purpose": purpose}), table)
    assert (d.agent_id, d.reason) == ("support", "default:unknown_purpose")
    assert d.purpose is None or d.purpose == "nope"


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        '"a string"',
        "42",
        "null",
        b"\xff\xfe{}",
        "\ud800",
        "[" * 4000 + "]" * 4000,
        json.dumps({"agent_id": "sales", "pad": "x" * MAX_METADATA_BYTES}),
        b"{" + b" " * (MAX_METADATA_BYTES + 10) + b"}",
    ],
)
def test_bad_metadata(table: RoutingTable, raw: str | bytes) -> None:
    d = determine_agent_type(job(raw), table)
    assert (d.agent_id, d.reason, d.source) == ("support", "default:bad_metadata", None)
    assert d.skipped and d.skipped[0].startswith("job:")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("[" * 4000 + "]" * 4000, "too_deep"),
        ('{"a":' * 1300 + "1" + "}" * 1300, "too_deep"),
        ("x" * (MAX_METADATA_BYTES + 1), "too_large"),
        ("é" * (MAX_METADATA_BYTES // 2 + 1), "too_large"),
        (b"\xc3", "invalid_utf8"),
        ("\udcff", "invalid_utf8"),
        ("[]", "not_an_object"),
        ("{", "invalid_json"),
    ],
)
def test_skip_reasons(table: RoutingTable, raw: str | bytes, why: str) -> None:
    assert determine_agent_type(job(raw), table).skipped == (f"job:{why}",)


@pytest.mark.parametrize("raw", [None, "", "   ", b""])
def test_no_metadata(table: RoutingTable, raw: str | bytes | None) -> None:
    d = determine_agent_type(job(raw), table)
    assert (d.agent_id, d.reason) == ("support", "default:no_metadata")


def test_no_sources_at_all(table: RoutingTable) -> None:
    assert determine_agent_type([], table).reason == "default:no_metadata"


def test_no_default_at_all() -> None:
    d = determine_agent_type(job({"agent_id": "ghost"}), RoutingTable())
    assert (d.agent_id, d.reason) == (None, "default:unknown_agent_id")


# ------------------------------------------------------------------ source ordering


def test_first_parsing_source_wins(table: RoutingTable) -> None:
    d = determine_agent_type(
        [
            MetadataSource("job", ""),
            MetadataSource("room", "{broken"),
            MetadataSource("participant", json.dumps({"purpose": "buy"})),
        ],
        table,
    )
    assert (d.agent_id, d.source, d.skipped) == ("sales", "participant", ("job:empty", "room:invalid_json"))


def test_parsed_source_stops_the_search(table: RoutingTable) -> None:
    """A source that parses decides even if it names nothing routable."""
    d = determine_agent_type(
        [MetadataSource("job", "{}"), MetadataSource("room", json.dumps({"purpose": "buy"}))], table
    )
    assert (d.agent_id, d.reason, d.source) == ("support", "default", "job")


def test_bytes_source(table: RoutingTable) -> None:
    d = determine_agent_type([("room", json.dumps({"purpose": "buy"}).encode())], table)
    assert (d.agent_id, d.source) == ("sales", "room")


def test_null_or_empty_agent_id_counts_as_absent(table: RoutingTable) -> None:
    assert determine_agent_type(job({"agent_id": None, "purpose": "buy"}), table).agent_id == "sales"
    assert determine_agent_type(job({"agent_id": "", "purpose": "buy"}), table).agent_id == "sales"


# ------------------------------------------------------------- variables and user_id


def test_variables_and_user_id_are_sanitised(table: RoutingTable) -> None:
    variables: dict[str, object] = {
        "name": "Ada",
        "n": 5,
        "nested": {"a": "b"},
        "long": "x" * 1025,
        "edge": "y" * 1024,
        "bad key": "z",
    }
    variables.update({f"v{i}": str(i) for i in range(40)})
    d = determine_agent_type(job({"purpose": "buy", "variables": variables, "user_id": "u-1"}), table)
    assert d.variables["name"] == "Ada"
    assert d.variables["edge"] == "y" * 1024
    assert not {"n", "nested", "long", "bad key"} & set(d.variables)
    assert len(d.variables) == 32
    assert d.user_id == "u-1"


@pytest.mark.parametrize("user_id", [5, {"$ne": None}, "", "u" * 129])
def test_bad_user_id_dropped(table: RoutingTable, user_id: object) -> None:
    assert determine_agent_type(job({"user_id": user_id}), table).user_id is None


def test_variables_not_a_dict(table: RoutingTable) -> None:
    assert dict(determine_agent_type(job({"variables": ["a"]}), table).variables) == {}


# ------------------------------------------------------------------------------ logs


def test_fallback_is_logged_with_room_and_capped_preview(
    table: RoutingTable, caplog: pytest.LogCaptureFixture
) -> None:
    raw = json.dumps({"agent_id": "ghost", "pad": "p" * 5000})
    with caplog.at_level(logging.DEBUG, logger="app.domain.routing"):
        determine_agent_type(job(raw), table, room="room-42")
    records = [r for r in caplog.records if r.name == "app.domain.routing"]
    assert records
    msg = records[-1].getMessage()
    assert "room-42" in msg and "default:unknown_agent_id" in msg
    assert "p" * 300 not in msg
    assert all(len(r.getMessage()) < 600 for r in records)


def test_bad_metadata_logged_without_the_payload(
    table: RoutingTable, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="app.domain.routing"):
        determine_agent_type(job("q" * 20000), table, room="r")
    assert all("q" * 300 not in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------- property

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
interesting_dicts = st.fixed_dictionaries(
    {},
    optional={
        "agent_id": st.sampled_from(["support", "sales", "legacy", "intake", "ghost", ""]) | json_values,
        "purpose": st.sampled_from(["help", "buy", "old", "nope"]) | json_values,
        "variables": st.dictionaries(st.text(max_size=10), json_values, max_size=40) | json_values,
        "user_id": st.text(max_size=200) | json_values,
    },
)


def deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


raw_metadata = st.one_of(
    st.none(),
    st.text(max_size=300),
    st.binary(max_size=300),
    json_values.map(json.dumps),
    interesting_dicts.map(json.dumps),
    interesting_dicts.map(lambda d: json.dumps(d).encode()),
    st.integers(min_value=1, max_value=100_000).map(deep),
    st.integers(min_value=1, max_value=50_000).map(lambda n: "[" * n),
    st.integers(min_value=MAX_METADATA_BYTES - 20, max_value=MAX_METADATA_BYTES * 4).map(
        lambda n: json.dumps({"agent_id": "sales", "pad": "x" * n})
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sources=st.lists(
        st.tuples(st.sampled_from(["job", "room", "participant"]), raw_metadata), max_size=3
    )
)
def test_routing_never_raises_and_only_routes_to_enabled(sources: list[tuple[str, object]]) -> None:
    table = RoutingTable.build(
        [
            Route(purpose="help", agent_id="support", is_default=True),
            Route(purpose="buy", agent_id="sales"),
            Route(purpose="old", agent_id="legacy"),
        ],
        [make_config("support"), make_config("sales"), make_config("legacy", enabled=False), make_config("intake")],
    )
    d = determine_agent_type([MetadataSource(n, r) for n, r in sources], table, room="prop")  # type: ignore[arg-type]
    assert d.agent_id in table.enabled
    if d.is_fallback:
        assert d.agent_id == table.default_agent_id
    assert all(isinstance(k, str) and isinstance(v, str) and len(v) <= 1024 for k, v in d.variables.items())
    assert len(d.variables) <= 32
    assert d.user_id is None or (isinstance(d.user_id, str) and len(d.user_id) <= 128)
    assert d.purpose is None or isinstance(d.purpose, str)


# ------------------------------------------------------------- by the dialled number


@pytest.fixture
def phone_table() -> RoutingTable:
    agents = [make_config("support"), make_config("sales"), make_config("legacy", enabled=False)]
    routes = [
        Route(purpose="help", agent_id="support", is_default=True),
        Route(purpose="buy", agent_id="sales", phone_numbers=["+15550001111", "+15550002222"]),
        Route(purpose="old", agent_id="legacy", phone_numbers=["+15550003333"]),
    ]
    return RoutingTable.build(routes, agents)


@pytest.mark.parametrize(
    ("sources", "number", "agent", "reason", "purpose"),
    [
        ([], "+15550002222", "sales", "called_number", "buy"),  # an inbound call: no metadata at all
        (job({}), "+15550001111", "sales", "called_number", "buy"),
        (job({"variables": {"x": "1"}}), "+15550001111", "sales", "called_number", "buy"),
        (job("not json"), "+15550001111", "sales", "called_number", "buy"),
        (job({"purpose": "help"}), "+15550001111", "support", "purpose", "help"),  # metadata names one: it wins
        (job({"agent_id": "support"}), "+15550001111", "support", "agent_id", None),
        (job({"purpose": "nope"}), "+15550001111", "support", "default:unknown_purpose", "nope"),
        ([], "+15559999999", "support", "default:unknown_called_number", None),
        ([], "+15550003333", "support", "default:disabled_agent", "old"),
        ([], None, "support", "default:no_metadata", None),
    ],
)
def test_called_number_routes_when_metadata_names_nothing(
    phone_table: RoutingTable, sources: list[MetadataSource], number: str | None, agent: str, reason: str,
    purpose: str | None,
) -> None:
    d = determine_agent_type(sources, phone_table, room="r", called_number=number)
    assert (d.agent_id, d.reason, d.purpose) == (agent, reason, purpose)


def test_number_routing_does_not_log_the_number(phone_table: RoutingTable, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    determine_agent_type([], phone_table, room="r", called_number="+15559999999")
    assert "default:unknown_called_number" in caplog.text and "5559999999" not in caplog.text


def test_call_direction_from_metadata(table: RoutingTable) -> None:
    assert determine_agent_type(job({"call": {"direction": "outbound"}}), table).direction == "outbound"
    assert determine_agent_type(job({"call": {"direction": "sideways"}}), table).direction is None
    assert determine_agent_type(job({"call": "outbound"}), table).direction is None
