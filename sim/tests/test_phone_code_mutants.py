"""The phone scenarios catch broken phone code, not only changed expectations: each test
breaks one piece of the worker's phone path (as a bug would) and requires the scenario
to fail at the expectation that guards it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.domain import routing
from app.domain.phone import SipCall
from app.worker import dtmf
from sim.harness import run_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def _failed_at(result: Any, *loc: int | str) -> bool:
    return any(f.loc[: len(loc)] == loc for f in result.failures)


async def test_routing_that_ignores_the_dialled_number_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = routing.determine_agent_type

    def ignores_number(sources: Any, routes: Any, *, room: str = "", called_number: str | None = None) -> Any:
        return real(sources, routes, room=room)

    monkeypatch.setattr("app.store.resolver.determine_agent_type", ignores_number)
    result = await run_scenario(SCENARIOS / "phone_inbound_by_number.yaml")
    assert not result.passed
    assert _failed_at(result, "sessions", 0, "route") and _failed_at(result, "sessions", 1, "route")


async def test_a_lost_caller_number_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = SipCall.from_attributes.__func__  # type: ignore[attr-defined]

    def without_caller(cls: type[SipCall], attributes: Any) -> SipCall:
        return real(cls, attributes).model_copy(update={"caller_number": None})

    monkeypatch.setattr(SipCall, "from_attributes", classmethod(without_caller))
    result = await run_scenario(SCENARIOS / "phone_inbound_by_number.yaml")
    assert not result.passed
    assert _failed_at(result, "sessions", 0, "turns", 0, "llm_received")
    assert _failed_at(result, "sessions", 0, "record", "call")


async def test_a_keypad_that_keeps_the_hash_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dtmf, "TERMINATOR", "none")  # '#' is then buffered like any key
    result = await run_scenario(SCENARIOS / "phone_keypad.yaml")
    assert not result.passed
    assert _failed_at(result, "sessions", 0, "record", "turns")  # the stored input was "(keypad) 1 2 3 4 #"
