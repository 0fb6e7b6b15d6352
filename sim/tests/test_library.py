"""The harness as a library: concurrent sessions in one environment, hooks, reports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.domain import StoreUnavailable
from sim.harness import SessionHandle, SessionHooks, SimEnvironment, run_scenario, run_session
from sim.outage import SwitchableStore
from sim.report import Checks
from sim.scenario import Scenario, SessionSpec


def chat_session(i: int) -> SessionSpec:
    return SessionSpec.model_validate(
        {
            "job_metadata": {"purpose": "support", "user_id": f"u-{i}"},
            "turns": [
                {"user": f"hello {i}", "llm": [{"text": f"hi {i}"}], "expect": [{"message": {"text": f"hi {i}"}}]},
                {"user": f"bye {i}", "llm": [{"text": f"bye {i}"}], "expect": [{"message": {"text": f"bye {i}"}}]},
            ],
            "record": {"status": "completed", "user_id": f"u-{i}", "turn_count": 5},
        }
    )


async def test_concurrent_sessions_share_one_environment_and_hooks_run_while_open() -> None:
    scenario = Scenario.model_validate({"name": "lib", "sessions": [{}]})
    seen: list[tuple[str, int]] = []
    open_now = 0
    peak = 0
    barrier = asyncio.Event()

    async def after_turn(handle: SessionHandle, index: int) -> None:
        seen.append((handle.prepared.record.user_id or "", index))

    async def before_close(handle: SessionHandle) -> None:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        if open_now == 6:
            barrier.set()
        await asyncio.wait_for(barrier.wait(), 10)  # every session is open at once
        open_now -= 1

    checks = Checks()
    async with SimEnvironment(scenario) as env:
        hooks = SessionHooks(after_turn=after_turn, before_close=before_close)
        outcomes = await asyncio.gather(
            *(run_session(env, chat_session(i), checks=checks, loc=("sessions", i), hooks=hooks) for i in range(6))
        )
    assert not checks.failures, "\n".join(f.render() for f in checks.failures)
    assert peak == 6
    assert sorted(seen) == sorted((f"u-{i}", t) for i in range(6) for t in (0, 1))
    assert len({o.session_id for o in outcomes}) == 6
    assert all(o.record is not None and o.record.turns[-1].text == f"bye {i}" for i, o in enumerate(outcomes))
    assert all(o.turns == 2 for o in outcomes)


async def test_a_failing_scenario_reports_expected_actual_and_line(tmp_path: Path) -> None:
    path = tmp_path / "fails.yaml"
    path.write_text(
        "name: fails\n"
        "sessions:\n"
        "  - job_metadata: {purpose: sales}\n"
        "    route: {agent_id: support-agent-v1}\n"
        "    turns:\n"
        "      - user: hi\n"
        "        llm: [{text: hello}, {text: never requested}]\n"
        "        expect: [{message: {text: goodbye}}]\n"
    )
    result = await run_scenario(path)
    assert not result.passed
    report = result.report()
    assert f"{path}:4: sessions[0].route.agent_id: route agent_id differs" in report
    assert "expected: 'support-agent-v1'" in report and "actual:   'sales-agent-v1'" in report
    assert f"{path}:7: sessions[0].turns[0].llm: 1 scripted LLM repl(ies) were never requested" in report
    assert f"{path}:8: sessions[0].turns[0].expect[0]: text differs" in report
    assert "expected: message assistant: text == 'goodbye'" in report
    assert "actual:   message assistant: 'hello'" in report


async def test_an_under_scripted_turn_fails_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "short.yaml"
    path.write_text(
        "name: short\n"
        "sessions:\n"
        "  - job_metadata: {purpose: support}\n"
        "    turns:\n"
        "      - user: hi\n"
        "        llm: [{tool: record_caller_name, args: {value: Ada}}]\n"
        "      - user: are you there?\n"
        "        llm: [{text: never reached}]\n"
    )
    result = await run_scenario(path)
    assert not result.passed
    assert len(result.failures) == 1, result.report()
    failure = result.failures[0]
    assert failure.loc == ("sessions", 0, "turns", 0)
    assert "asked 2 time(s) but only 1 repl(ies) were scripted" in failure.message


async def test_switchable_store_refuses_every_call_while_down(tmp_path: Path) -> None:
    from app.store.sql import SQLStore

    inner = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    await inner.start()
    store = SwitchableStore(inner)
    try:
        await store.list_routes()
        store.down = True
        for call in (store.list_routes(), store.config_epoch(), store.get_session("x")):
            with pytest.raises(StoreUnavailable):
                await call
        assert store.refused == 3
        store.add_change_listener(lambda: None)  # sync members pass through while down
        store.down = False
        assert await store.list_routes() == []
    finally:
        await inner.aclose()
