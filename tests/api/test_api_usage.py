"""Usage and cost over HTTP (`/api/v1/usage`), analysis settings on the agent config, and
the session record's usage and analysis sections: sums per agent, version and day, 422s
naming the query parameter or config field, the price table with its dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.domain import SessionRecord
from app.domain.analysis import AnalysisConfig, AnalysisRequest, AnalysisStatus, SessionAnalysis, SuccessVerdict
from app.domain.pricing import DEFAULT_PRICES_AS_OF, PriceTable
from app.domain.usage import ModelUsage, SessionUsage
from app.domain.values import utcnow
from tests.api.conftest import AGENTS, agent_body

Client = AsyncTestClient[Litestar]
USAGE = "/api/v1/usage"
D1 = datetime(2031, 3, 1, 22, 0, tzinfo=UTC)


def usage(input_tokens: int, cached: int, output: int, stt_s: float = 0.0) -> SessionUsage:
    lines = [ModelUsage(kind="llm", provider="openai", model="gpt-4.1-mini", input_tokens=input_tokens,
                        cached_tokens=cached, output_tokens=output)]
    if stt_s:
        lines.append(ModelUsage(kind="stt", provider="openai", model="gpt-4o-mini-transcribe", audio_s=stt_s))
    return PriceTable.defaults().priced(SessionUsage(), lines)


@pytest.fixture
async def sessions(store: Any) -> None:
    specs = [
        ("s1", "agent-a", 1, D1, usage(1000, 200, 100, 60.0)),
        ("s2", "agent-a", 2, D1 + timedelta(hours=3), usage(2000, 0, 50)),
        ("s3", "agent-b", 1, D1 + timedelta(hours=3), usage(10, 0, 10)),
        ("s4", "agent-b", 1, D1 + timedelta(days=2), None),
    ]
    for sid, aid, version, started, u in specs:
        await store.start_session(SessionRecord(session_id=sid, room="r", agent_id=aid, config_version=version,
                                                started_at=started))
        if u is not None:
            await store.update_session(sid, usage=u)


async def test_usage_sums_per_agent_version_and_day(client: Client, sessions: None) -> None:
    r = await client.get(USAGE)
    assert r.status_code == 200, r.text
    doc = r.json()
    [row] = doc["rows"]
    assert (row["sessions"], row["sessions_with_usage"]) == (4, 3)
    assert (row["llm_input_tokens"], row["llm_cached_tokens"], row["llm_output_tokens"]) == (3010, 200, 160)
    assert row["stt_audio_s"] == 60.0
    s1 = (800 * 0.40 + 200 * 0.10 + 100 * 1.60) / 1e6 + 1 * 0.003
    s2 = (2000 * 0.40 + 50 * 1.60) / 1e6
    s3 = (10 * 0.40 + 10 * 1.60) / 1e6
    assert row["cost_usd"] == pytest.approx(s1 + s2 + s3, abs=1e-6)
    assert doc["total"]["sessions"] == 4 and doc["group_by"] == []

    r = await client.get(USAGE, params={"group_by": "agent,version"})
    assert [(x["agent_id"], x["config_version"], x["sessions"]) for x in r.json()["rows"]] == [
        ("agent-a", 1, 1), ("agent-a", 2, 1), ("agent-b", 1, 2)]

    r = await client.get(USAGE, params=[("group_by", "day"), ("group_by", "agent"), ("agent_id", "agent-a")])
    assert [(x["day"], x["agent_id"], x["llm_input_tokens"]) for x in r.json()["rows"]] == [
        ("2031-03-01", "agent-a", 1000), ("2031-03-02", "agent-a", 2000)]

    r = await client.get(USAGE, params={"since": "2031-03-02T00:00:00Z", "until": "2031-03-03T00:00:00Z"})
    assert r.json()["total"]["sessions"] == 2 and r.json()["total"]["llm_input_tokens"] == 2010
    # an inverted or empty window is empty, not an error (well-formed, as on /sessions)
    r = await client.get(USAGE, params={"since": "2031-03-02T00:00:00Z", "until": "2031-03-02T00:00:00Z"})
    assert r.status_code == 200 and r.json()["rows"] == [] and r.json()["total"]["sessions"] == 0


@pytest.mark.parametrize(("params", "key", "message"), [
    ({"group_by": "agent,month"}, "group_by", "unknown group 'month'"),
    ({"group_by": ""}, "group_by", "unknown group ''"),
    ({"since": "yesterday"}, "since", "RFC 3339"),
    ({"until": "2031-03-01"}, "until", "RFC 3339"),
    ({"agent_id": "x" * 65}, "agent_id", ""),
])
async def test_bad_filters_are_422_naming_the_parameter(
    client: Client, params: dict[str, str], key: str, message: str
) -> None:
    r = await client.get(USAGE, params=params)
    assert r.status_code == 422, r.text
    [err] = r.json()["extra"]
    assert err["key"] == key and message in err["message"]


async def test_usage_needs_the_admin_key(anon: Client) -> None:
    assert (await anon.get(USAGE)).status_code == 401


async def test_the_price_table_lists_dated_prices_and_overrides(client: Client) -> None:
    r = await client.get(f"{USAGE}/prices")
    assert r.status_code == 200, r.text
    prices = {p["model"]: p for p in r.json()}
    assert prices["gpt-4.1-mini"]["input_per_mtok"] == 0.4
    assert prices["gpt-4.1-mini"]["as_of"] == DEFAULT_PRICES_AS_OF.isoformat()


async def test_a_session_shows_its_usage_and_analysis(client: Client, store: Any) -> None:
    await store.start_session(SessionRecord(session_id="s1", room="r", agent_id="agent-a"))
    done = SessionAnalysis(
        status=AnalysisStatus.done, requested_at=utcnow(), finished_at=utcnow(), attempts=1,
        request=AnalysisRequest(agent_id="agent-a", settings=AnalysisConfig(summary_prompt="Short."), model="m"),
        summary="Ada asked about a refund.", success=SuccessVerdict(passed=True, reason="resolved"),
    )
    await store.update_session("s1", usage=usage(100, 0, 10), analysis=done)
    doc = (await client.get("/api/v1/sessions/s1")).json()
    assert doc["usage"]["llm_input_tokens"] == 100 and doc["usage"]["models"][0]["model"] == "gpt-4.1-mini"
    assert doc["usage"]["cost_usd"] > 0
    assert doc["analysis"]["status"] == "done" and doc["analysis"]["summary"] == "Ada asked about a refund."


# ------------------------------------------------------------- analysis settings


ANALYSIS = {
    "summary_prompt": "Two sentences: why they called and how it ended.",
    "success_criteria": "The caller's order number was recorded.",
    "extraction_schema": {
        "type": "object",
        "properties": {"refund_requested": {"type": "boolean"}, "reason": {"type": "string", "maxLength": 200}},
        "required": ["refund_requested"],
    },
}


async def test_analysis_settings_are_versioned_with_the_agent(client: Client) -> None:
    r = await client.post(AGENTS, json=agent_body(analysis=ANALYSIS))
    assert r.status_code == 201, r.text
    assert r.json()["analysis"]["extraction_schema"] == ANALYSIS["extraction_schema"]
    assert r.json()["analysis"]["max_attempts"] == 3
    r = await client.patch(f"{AGENTS}/support-agent", json={"analysis": {"success_criteria": None}},
                           headers={"If-Match": r.headers["etag"], "Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["analysis"]["success_criteria"] is None
    assert r.json()["analysis"]["summary_prompt"] == ANALYSIS["summary_prompt"]


@pytest.mark.parametrize(("analysis", "key", "message"), [
    ({"extraction_schema": {"type": "object", "properties": {"x": {"type": "strang"}}}},
     "analysis.extraction_schema", ""),
    ({"extraction_schema": {"type": "array", "items": {}}}, "analysis.extraction_schema", '"type": "object"'),
    ({"extraction_schema": {"type": "object", "properties": {}}}, "analysis.extraction_schema", "at least one"),
    ({"extraction_schema": {"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}},
     "analysis.extraction_schema", "does not resolve"),
    ({"extraction_schema": {"type": "object", "properties": {"a b": {}}}}, "analysis.extraction_schema", "a b"),
    ({"extraction_schema": {"type": "object", "properties": {"a": {}}, "required": ["b"]}},
     "analysis.extraction_schema", "'b'"),
    ({}, "analysis", "at least one of"),
    ({"summary_prompt": ""}, "analysis.summary_prompt", ""),
    ({"summary_prompt": "x", "max_attempts": 0}, "analysis.max_attempts", ""),
    ({"summary_prompt": "x", "timeout_s": "30"}, "analysis.timeout_s", ""),
    ({"summary_prompt": "x", "colour": "red"}, "analysis.colour", ""),
])
async def test_bad_analysis_settings_are_422_naming_the_field(
    client: Client, analysis: dict[str, Any], key: str, message: str
) -> None:
    r = await client.post(AGENTS, json=agent_body(analysis=analysis))
    assert r.status_code == 422, r.text
    keys = [e.get("key") for e in r.json()["extra"]]
    assert keys == [key], r.json()
    assert message in r.json()["extra"][0]["message"]
