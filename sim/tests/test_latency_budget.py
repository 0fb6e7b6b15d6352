"""The voice sim's latency budget catches our own overhead: the same scenario, with the
same scripted provider delays, fails its `latency_budget` once a delay is added to our
path (the agent's LLM node, which every reply goes through) and passes without it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.agents.base import BaseAgent
from sim.harness import run_scenario
from sim.scenario import load_scenario
from sim.voice.expect import p95

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
BUDGET = SCENARIOS / "voice_latency_budget.yaml"
FAILOVER = SCENARIOS / "voice_llm_failover_latency.yaml"
INJECTED_S = 0.8
"""More than the budget leaves for our path (1.2 s minus 0.6 s of provider delays)."""


def slowed(monkeypatch: pytest.MonkeyPatch) -> None:
    original = BaseAgent.llm_node

    async def slow_llm_node(self: BaseAgent, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        await asyncio.sleep(INJECTED_S)
        async for chunk in original(self, *args, **kwargs):
            yield chunk

    monkeypatch.setattr(BaseAgent, "llm_node", slow_llm_node)


async def test_the_budget_scenario_passes_as_it_is() -> None:
    result = await run_scenario(BUDGET)
    assert result.passed, result.report()
    latencies = [ms for _, ms in result.sessions[0].voice.turn_latencies]
    assert len(latencies) == 4
    assert all(600 <= ms for ms in latencies)  # the scripted providers' share is in it
    assert p95(latencies) <= 1200


async def test_a_delay_in_our_path_breaks_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    slowed(monkeypatch)
    loaded = load_scenario(BUDGET)
    result = await run_scenario(loaded)
    assert not result.passed
    # only the budget fails: the conversation itself is still right
    assert [f.loc for f in result.failures] == [("latency_budget", "turn_p95_ms")]
    failure = result.failures[0]
    assert failure.where == f"{BUDGET}:{loaded.lines.line(('latency_budget',))}"
    assert failure.expected == "<= 1200 ms"
    assert int(failure.actual.split()[0]) >= 600 + INJECTED_S * 1000  # providers + the injected delay
    assert "default: 300 / 150 / 150 ms" in (failure.context or "")


async def test_the_failover_scenario_keeps_its_budget_and_fails_it_when_we_are_slow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = await run_scenario(FAILOVER)
    assert result.passed, result.report()
    slowed(monkeypatch)
    result = await run_scenario(FAILOVER)
    assert [f.loc for f in result.failures] == [("latency_budget", "turn_p95_ms")]


def test_p95_is_the_nearest_rank() -> None:
    assert p95([5.0]) == 5.0
    assert p95(list(range(1, 21))) == 19
    assert p95(list(range(1, 101))) == 95
    assert p95([3.0, 1.0, 2.0]) == 3.0
