"""Live mode's wiring, proven offline: the "real" model is a FakeOpenAI served over
loopback HTTP (uvicorn), reached through the same code path a real OpenAI-compatible
endpoint is (LiveConfig -> openai.AsyncClient -> httpx2 network transport ->
RecordingTransport). What this cannot prove: how a real model behaves on the suite.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from sim.db_servers import free_port
from sim.fake_openai import CapturedRequest, FakeOpenAI, ScriptedText, ScriptedToolCalls, ToolCall
from sim.harness import run_scenario
from sim.llm import NO_KEY, LiveConfig, live_skip_reason
from sim.scenario import Scenario

AGENT_REPLY = "Hello Grace, happy to set up a demo."

SCENARIO: dict[str, Any] = {
    "name": "live wiring",
    "sessions": [
        {
            "job_metadata": {"purpose": "sales"},
            "route": {"agent_id": "sales-agent-v1", "version": 1, "reason": "purpose"},
            "turns": [
                {
                    "user": "Hi, I'm Grace and I want a demo.",
                    # scripted model turns are ignored live: if they were used, the event
                    # and text expectations below would see this tool call
                    "llm": [{"tool": "record_name", "args": {"value": "SCRIPTED"}}],
                    "expect": [
                        {"function_call": {"name": "record_name"}},
                        {"message": {"text": "a scripted text the live model never says",
                                     "intent": "greets the caller and offers a demo"}},
                    ],
                    "llm_received": {
                        "count": 99,  # offline only
                        "instructions_contain": ["You are the voice sales assistant"],
                        "tools_include": ["record_name", "end_session"],
                    },
                    "within_ms": 0.001,  # offline only
                }
            ],
            "record": {"status": "completed", "agent_id": "sales-agent-v1", "collected": {}, "turn_count": 3},
        }
    ],
}


class LoopbackModel:
    """A FakeOpenAI that answers every request: judge calls with a verdict, the rest with text."""

    def __init__(self, verdict: bool) -> None:
        self.verdict = verdict
        self.fake = FakeOpenAI([self._respond] * 100, model="loopback")

    def _respond(self, req: CapturedRequest) -> ScriptedText | ScriptedToolCalls:
        if "check_intent" in req.tool_names:
            args = {"success": self.verdict, "reason": "judged by the loopback model"}
            return ScriptedToolCalls((ToolCall("check_intent", args),))
        return ScriptedText(AGENT_REPLY)


@pytest.fixture
async def loopback() -> AsyncIterator[tuple[str, list[LoopbackModel]]]:
    models: list[LoopbackModel] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await models[-1].fake.asgi_app()(scope, receive, send)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1", models
    finally:
        server.should_exit = True
        await task


async def test_live_mode_runs_against_an_openai_compatible_server(loopback) -> None:
    url, models = loopback
    models.append(LoopbackModel(verdict=True))
    config = LiveConfig(api_key="sk-loopback", base_url=url, model="live-model", judge_model="judge-model")
    result = await run_scenario(Scenario.model_validate(SCENARIO), live=True, live_config=config)
    assert result.passed, result.report()

    requests = models[0].fake.requests
    agent_calls = [r for r in requests if "check_intent" not in r.tool_names]
    judge_calls = [r for r in requests if "check_intent" in r.tool_names]
    assert [r.body["model"] for r in agent_calls] == ["live-model"]
    assert [r.body["model"] for r in judge_calls] == ["judge-model"]
    assert "greets the caller and offers a demo" in json.dumps(judge_calls[0].messages)
    assert AGENT_REPLY in json.dumps(judge_calls[0].messages)
    # the harness captured what it sent through the recording transport, like offline
    captured = result.sessions[0].requests
    assert len(captured) == 1 and "voice sales assistant" in (captured[0].system or "")
    record = result.sessions[0].record
    assert record is not None and record.turns[-1].text == AGENT_REPLY  # the live reply, not the script


async def test_live_mode_reports_a_failed_judgement_and_structural_misses(loopback) -> None:
    url, models = loopback
    models.append(LoopbackModel(verdict=False))
    doc = json.loads(json.dumps(SCENARIO))
    doc["sessions"][0]["route"]["agent_id"] = "support-agent-v1"  # structural: checked live too
    config = LiveConfig(api_key="sk-loopback", base_url=url)
    result = await run_scenario(Scenario.model_validate(doc), live=True, live_config=config)
    assert not result.passed
    messages = [f.message for f in result.failures]
    assert any("LLM judge" in m for m in messages), result.report()
    assert any("route agent_id" in m for m in messages), result.report()
    assert len(result.failures) == 2, result.report()  # offline-only checks stayed off


async def test_live_mode_without_a_key_is_skipped_with_the_reason(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = await run_scenario(Scenario.model_validate(SCENARIO), live=True)
    assert not result.passed and result.skipped and "OPENAI_API_KEY" in result.skipped
    assert live_skip_reason({"SIM_LIVE": "1"}) == NO_KEY
    assert live_skip_reason({"SIM_LIVE": "1", "OPENAI_API_KEY": "sk-x"}) is None
    assert live_skip_reason({}) is None  # offline runs never skip


def test_live_config_from_environment() -> None:
    assert LiveConfig.from_env({"OPENAI_API_KEY": "  "}) is None
    cfg = LiveConfig.from_env({"OPENAI_API_KEY": "sk-1", "OPENAI_BASE_URL": "http://x/v1", "SIM_LIVE_MODEL": "m"})
    assert cfg == LiveConfig(api_key="sk-1", base_url="http://x/v1", model="m", judge_model="m")
