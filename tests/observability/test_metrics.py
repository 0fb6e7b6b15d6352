"""`GET /metrics`: who may read it, that Prometheus' own parser reads it, and that a
spoken session run through the real worker path shows up in its counters and
histograms (the voice sim's LiveKit session produces real per-turn metrics).

The registry is process-wide (as in production), so every check compares the figures
before and after the session instead of assuming a fresh registry.
"""

from __future__ import annotations

from pathlib import Path

from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.api import RuntimeStatus, create_app
from app.settings import Settings
from app.store.sql import SQLStore
from sim.harness import SimEnvironment, run_session
from sim.report import Checks
from sim.scenario import load_scenario
from tests.api.conftest import ADMIN_KEY, AUTH

SCENARIOS = Path(__file__).resolve().parents[2] / "sim" / "scenarios"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert isinstance(s, Sample)
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_need_the_admin_key_unless_open(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    await store.start()
    try:
        for access, anon_status in (("key", 401), ("open", 200)):
            settings = Settings(_env_file=None, admin_api_key=ADMIN_KEY, metrics_access=access)  # type: ignore[call-arg,arg-type]
            app = create_app(settings, store, status=RuntimeStatus())
            async with AsyncTestClient(app) as client:
                anon = await client.get("/metrics")
                assert anon.status_code == anon_status, (access, anon.text)
                assert ADMIN_KEY not in anon.text
                r = await client.get("/metrics", headers=AUTH)
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/plain; version=")
                families = {f.name for f in text_string_to_metric_families(r.text)}
                # ours and LiveKit's worker metrics, from one registry
                assert {"voice_sessions_started", "voice_turn_latency_seconds", "store_session_writes_buffered",
                        "lk_agents_worker_load"} <= families, families
                schema = (await client.get("/schema/openapi.json")).json()
                assert bool(schema["paths"]["/metrics"]["get"].get("security")) is (access == "key")
    finally:
        await store.aclose()


async def test_a_spoken_session_shows_in_the_metrics() -> None:
    loaded = load_scenario(SCENARIOS / "voice_support_call.yaml")
    spec = loaded.scenario.sessions[0]
    agent = "support-agent-v1"
    async with SimEnvironment(loaded.scenario) as env:
        api = await env.api()
        before = parse((await api.get("/metrics")).text)
        checks = Checks()
        outcome = await run_session(env, spec, checks=checks)
        assert not checks.failures, "\n".join(f.render() for f in checks.failures)
        after = parse((await api.get("/metrics")).text)
        record = (await api.get(f"/api/v1/sessions/{outcome.session_id}")).json()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("voice_sessions_started_total", agent_id=agent) == 1
    assert delta("voice_sessions_ended_total", agent_id=agent, status=record["status"]) == 1
    assert delta("voice_sessions_active", agent_id=agent) == 0  # started and ended
    # one observation per stored per-turn figure, in seconds, under the agent and version
    entries = record["metrics"]
    assert len(entries) >= 3
    version = str(record["config_version"])
    for stage, field in (("e2e", "total_ms"), ("llm_ttft", "llm_ttft_ms"), ("tts_ttfb", "tts_ttfb_ms"),
                         ("eou", "eou_delay_ms")):
        stored = [e[field] for e in entries if e[field] is not None]
        labels = {"agent_id": agent, "version": version, "stage": stage}
        assert delta("voice_turn_latency_seconds_count", **labels) == len(stored), stage
        assert abs(delta("voice_turn_latency_seconds_sum", **labels) - sum(stored) / 1000) < 0.01, stage
    # the scenario's tool calls, by tool: five record_ tools and end_session, none failing
    assert delta("voice_tool_calls_total", agent_id=agent, tool="record_order_id", outcome="ok") == 1
    assert delta("voice_tool_calls_total", agent_id=agent, tool="end_session", outcome="ok") == 1
    assert not any(
        name == "voice_tool_calls_total" and dict(labels).get("outcome") == "error" and v != value(before, name, **dict(labels))
        for (name, labels), v in after.items()
    )
    # the session's writes went through the store and left nothing queued
    assert delta("store_session_write_seconds_count", outcome="ok") >= 1
    assert value(after, "store_session_writes_buffered") == value(before, "store_session_writes_buffered")
    assert value(after, "config_cache_confirmed_timestamp_seconds", cache="configs") > 0
