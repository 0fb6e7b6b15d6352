"""Latency in the console, in a real browser: a session's per-turn timeline, an agent's
percentiles per version and per day, and the sessions list ordered by slowest turn.

The figures are real: one spoken support call is run through the voice sim (LiveKit's
AgentSession with VAD, the OpenAI STT/LLM/TTS plugins against the scripted endpoint),
and its stored record, per-turn metrics included, is copied into the console's store.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from app.domain import SessionRecord
from sim.harness import SimEnvironment, run_session
from sim.report import Checks
from sim.scenario import load_scenario

from .conftest import ConsoleServer, screenshot

SCENARIO = Path(__file__).resolve().parents[2] / "sim" / "scenarios" / "voice_support_call.yaml"
STAGE_FIELDS = ("total_ms", "eou_delay_ms", "llm_ttft_ms", "tts_ttfb_ms")


@pytest.fixture(scope="module")
def voice_record() -> SessionRecord:
    """One spoken call's stored record (in a thread: Playwright's sync API owns this one)."""
    out: dict[str, Any] = {}

    async def run() -> None:
        loaded = load_scenario(SCENARIO)
        async with SimEnvironment(loaded.scenario) as env:
            checks = Checks()
            outcome = await run_session(env, loaded.scenario.sessions[0], checks=checks)
            assert not checks.failures, [f.render() for f in checks.failures]
            r = await (await env.api()).get(f"/api/v1/sessions/{outcome.session_id}")
            out["record"] = SessionRecord.model_validate(r.json())

    t = threading.Thread(target=lambda: asyncio.run(run()))
    t.start()
    t.join(240)
    record: SessionRecord = out["record"]
    assert sum(1 for m in record.metrics if m.get("total_ms") is not None) >= 2
    return record


def seed(server: ConsoleServer, record: SessionRecord, newer_silent: int = 0) -> tuple[str, str]:
    """The call as recorded, a copy whose turns were all twice as slow, and `newer_silent`
    later sessions without a spoken turn."""
    slow = record.model_copy(deep=True, update={"session_id": "voice-slow"})
    slow.metrics = [{k: (v * 2 if k in STAGE_FIELDS and isinstance(v, float) else v) for k, v in m.items()}
                    for m in slow.metrics]
    fast = record.model_copy(deep=True, update={"session_id": "voice-fast"})

    async def store() -> None:
        assert server.store is not None
        for r in (fast, slow):
            await server.store.start_session(r)
        for i in range(newer_silent):
            await server.store.start_session(SessionRecord(
                session_id=f"silent-{i:03d}", room="r", agent_id=record.agent_id,
                started_at=record.started_at + timedelta(minutes=1 + i),
            ))

    server.run(store())
    return fast.session_id, slow.session_id


def js_round(x: float) -> int:
    """JavaScript's Math.round (halves up), which the page uses; Python's round() goes to even."""
    return math.floor(x + 0.5)


def painted_pixels(page: Any, selector: str) -> int:
    """Non-transparent pixels on the chart's canvas: 0 means nothing was drawn."""
    return int(page.eval_on_selector(selector, """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""))


def test_session_page_charts_each_turn(server: ConsoleServer, page: Any, voice_record: SessionRecord) -> None:
    fast, _ = seed(server, voice_record)
    spoken = [m for m in voice_record.metrics if any(isinstance(m.get(f), float) for f in STAGE_FIELDS)]
    page.goto(f"/sessions/{fast}")
    card = page.locator("#turn-latency")
    chart = card.locator("figure.latency-chart")
    expect(chart).to_have_attribute("data-points", str(len(spoken)))
    expect(chart).to_have_attribute("data-series", "4")
    expect(chart.locator("canvas")).to_be_visible()
    assert painted_pixels(page, "#turn-latency canvas") > 500
    for label in ("End to end", "End of utterance", "LLM first token", "TTS first audio"):
        expect(chart.locator(".u-legend")).to_contain_text(label)
    rows = card.locator("table.latency-table tbody tr")
    expect(rows).to_have_count(len(spoken))
    last = spoken[-1]
    if isinstance(last.get("total_ms"), float):
        expect(rows.last).to_contain_text(f"{js_round(last['total_ms'])} ms")
    screenshot(page, "20-session-latency", full_page=True)


def test_agent_page_charts_percentiles_per_version_and_day(
    server: ConsoleServer, page: Any, voice_record: SessionRecord
) -> None:
    seed(server, voice_record)
    page.goto(f"/agents/{voice_record.agent_id}")
    section = page.locator("#latency-section")
    expect(section).to_be_visible()
    for block in ("#latency-by-version", "#latency-by-day"):
        expect(section.locator(f"{block} figure.latency-chart canvas")).to_be_visible()
        assert painted_pixels(page, f"{block} canvas") > 500
    by_version = section.locator("#latency-by-version table.latency-table tbody tr")
    expect(by_version).to_have_count(1)
    expect(by_version.first).to_contain_text(f"v{voice_record.config_version}")
    expect(by_version.first.locator("td").nth(1)).to_have_text("2")  # sessions
    expect(section).to_contain_text("2 session(s) in the last 30 days")
    screenshot(page, "21-agent-latency", full_page=True)


def test_sessions_list_orders_by_slowest_turn(server: ConsoleServer, page: Any, voice_record: SessionRecord) -> None:
    # 60 newer sessions push both calls past the first page (50) of the newest-first list:
    # the slowest-first order is the server's, over every session, not a re-sort of a page.
    fast, slow = seed(server, voice_record, newer_silent=60)
    worst = max(m["total_ms"] for m in voice_record.metrics if isinstance(m.get("total_ms"), float))
    page.goto("/sessions")
    table = page.locator("#sessions-table")
    expect(table.locator("tbody tr").first).to_contain_text("silent-059")
    expect(table.locator("tbody tr").filter(has_text=slow)).to_have_count(0)  # on a later page
    page.get_by_label("Order").select_option("worst")
    expect(table.locator("tbody tr").first).to_contain_text(slow)
    expect(table.locator("tbody tr").first).to_contain_text(f"{js_round(worst * 2)} ms")
    expect(table.locator("tbody tr").nth(1)).to_contain_text(fast)
    expect(table.locator("tbody tr").nth(1)).to_contain_text(f"{js_round(worst)} ms")
    expect(page).to_have_url(re.compile(r"sort=worst"))
