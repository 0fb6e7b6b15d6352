"""`GET /api/v1/agents/config/{id}/latency`: percentiles per version and per day from
the per-turn metrics stored on session records, over the real API and SQLite store."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.domain import SessionRecord
from app.domain.latency import percentile
from app.domain.models import utcnow
from app.store.sql import SQLStore
from tests.api.conftest import AGENTS


def entry(total: float | None, *, ttft: float | None = 200.0, agent: str = "support-agent") -> dict[str, Any]:
    return {"seq": 1, "user_seq": 0, "agent_id": agent, "eou_delay_ms": 100.0, "transcription_delay_ms": 50.0,
            "llm_ttft_ms": ttft, "tts_ttfb_ms": 80.0, "total_ms": total, "speech_ms": 900.0, "interrupted": False}


async def session(store: SQLStore, sid: str, version: int, totals: list[float | None], days_ago: int = 0,
                  agent: str = "support-agent") -> None:
    await store.start_session(SessionRecord(
        session_id=sid, room="r", agent_id=agent, config_version=version,
        started_at=utcnow() - timedelta(days=days_ago), metrics=[entry(t) for t in totals],
    ))


async def test_percentiles_per_version_and_day(client: AsyncTestClient[Litestar], store: SQLStore,
                                               agent: dict[str, Any]) -> None:
    await session(store, "s1", 1, [500.0, 700.0, None])  # a greeting: no e2e figure
    await session(store, "s2", 2, [float(ms) for ms in range(100, 2100, 100)], days_ago=1)
    await session(store, "s3", 2, [900.0])
    await session(store, "s4", 2, [5000.0], days_ago=40)  # outside the 30-day window
    await session(store, "other", 1, [9000.0], agent="other-agent")
    r = await client.get(f"{AGENTS}/support-agent/latency")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["sessions"] == 3 and report["truncated"] is False
    v1, v2 = report["by_version"]
    assert (v1["version"], v1["sessions"], v1["turns"]) == (1, 1, 3)
    assert v1["e2e"] == {"count": 2, "p50_ms": 500.0, "p95_ms": 700.0}
    assert v1["llm_ttft"]["count"] == 3  # the greeting's other figures count
    v2_totals = sorted([float(ms) for ms in range(100, 2100, 100)] + [900.0])
    assert (v2["version"], v2["sessions"]) == (2, 2)
    assert v2["e2e"] == {"count": 21, "p50_ms": percentile(v2_totals, 50), "p95_ms": percentile(v2_totals, 95)}
    assert [d["sessions"] for d in report["by_day"]] == [1, 2]  # yesterday, today
    assert report["by_day"][0]["e2e"]["p95_ms"] == 1900.0
    narrow = (await client.get(f"{AGENTS}/support-agent/latency", params={"days": 1})).json()
    assert narrow["sessions"] == 2  # s2 started a day ago: just outside


async def test_unknown_agent_and_bad_window(client: AsyncTestClient[Litestar], agent: dict[str, Any]) -> None:
    assert (await client.get(f"{AGENTS}/nobody/latency")).status_code == 404
    for days in ("0", "91", "x"):
        r = await client.get(f"{AGENTS}/support-agent/latency", params={"days": days})
        assert r.status_code == 422, r.text
        assert r.json()["extra"][0]["key"] == "days"
    empty = (await client.get(f"{AGENTS}/support-agent/latency")).json()
    assert (empty["sessions"], empty["by_version"], empty["by_day"]) == (0, [], [])
