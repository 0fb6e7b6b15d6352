"""The voice mode of the harness: scenario validation, fixtures, failures reported at
the right line, and the latency metrics readable through the admin API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sim.harness import SimEnvironment, run_scenario, run_session
from sim.report import Checks
from sim.scenario import Scenario, ScenarioError, load_scenario
from sim.voice import make_fixtures
from sim.voice.spec import fixture_name

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
FIRST_LINE = "Hi, this is Ada Lovelace. My order AB1234567 hasn't arrived."
FIRST_SAY = "Hi, this is Ada Lovelace. My order A B 1 2 3 4 5 6 7 hasn't arrived."
"""A turn of voice_support_call.yaml, whose fixture is committed."""


def voice_doc(**turn_voice: Any) -> dict[str, Any]:
    return {
        "name": "one voice turn",
        "io": "voice",
        "voice": {"realtime_tail": True},
        "sessions": [{
            "job_metadata": {"purpose": "support", "user_id": "t-1"},
            "turns": [{
                "user": FIRST_LINE,
                "voice": {"say": FIRST_SAY, **turn_voice},
                "llm": [{"text": "Sorry to hear that. How urgent is it?"}],
                "expect": [{"message": {"text": "Sorry to hear that. How urgent is it?"}}],
            }],
            "voice": {"metrics": 2},
        }],
    }


def test_voice_blocks_need_io_voice(tmp_path: Path) -> None:
    doc = voice_doc()
    del doc["io"]
    with pytest.raises(ValueError, match="need `io: voice`"):
        Scenario.model_validate(doc)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nio: voice\nsessions:\n  - turns:\n      - user: hi\n        voice: {barge_in_s: 1, before: [{silence_s: 1}]}\n")
    with pytest.raises(ScenarioError, match="barge-in turn .* no `before`"):
        load_scenario(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: x\nio: voice\nsessions:\n  - turns:\n      - user: hi\n        voice: {speech_segment: 1}\n")
    with pytest.raises(ScenarioError, match=r"typo.yaml:6: .*speech_segment"):
        load_scenario(typo)


def test_every_voice_scenario_has_its_fixtures_committed() -> None:
    assert make_fixtures.main(["--check"]) == 0
    voice = [p for p in SCENARIOS.glob("voice_*.yaml") if load_scenario(p).scenario.io == "voice"]
    assert len(voice) >= 6
    assert fixture_name(FIRST_SAY) in make_fixtures.wanted()


async def test_metrics_reach_the_record_and_the_api() -> None:
    """One spoken turn, end to end: LiveKit's per-turn figures are stored on the record
    and `GET /api/v1/sessions/{id}` returns them."""
    scenario = Scenario.model_validate(voice_doc(speech_segments=1, interrupted=False))
    checks = Checks()
    async with SimEnvironment(scenario) as env:
        outcome = await run_session(env, scenario.sessions[0], checks=checks)
        api = await env.api()
        r = await api.get(f"/api/v1/sessions/{outcome.session_id}")
    assert not checks.failures, "\n".join(f.render() for f in checks.failures)
    assert r.status_code == 200, r.text
    metrics = r.json()["metrics"]
    assert [m["user_seq"] for m in metrics] == [None, 1]  # the greeting, then the answer to turn 1
    answer = metrics[1]
    for key in ("eou_delay_ms", "transcription_delay_ms", "llm_ttft_ms", "tts_ttfb_ms", "total_ms", "speech_ms"):
        assert isinstance(answer[key], float) and answer[key] >= 0, (key, answer)
    assert answer["total_ms"] >= answer["llm_ttft_ms"] and answer["interrupted"] is False
    # the speaker recorded what the agent said, with timestamps
    spoken = outcome.voice.output.segments
    assert len(spoken) == 2 and all(s.played_s > 0 and s.finished is not None for s in spoken)
    assert spoken[0].started < spoken[1].started


@pytest.mark.parametrize(
    ("turn_voice", "anchor", "message"),
    [
        ({"speech_segments": 2}, "speech_segments", "number of VAD speech segments"),
        ({"interrupted": True}, "interrupted", "no agent reply of this step was interrupted"),
    ],
)
async def test_a_wrong_voice_expectation_fails_at_its_line(turn_voice: dict[str, Any], anchor: str, message: str) -> None:
    doc = voice_doc(**turn_voice)
    doc["voice"] = {"realtime_tail": False}
    doc["sessions"][0]["voice"] = {"metrics": 2}
    result = await run_scenario(Scenario.model_validate(doc))
    assert not result.passed
    locs = [f.loc for f in result.failures]
    assert ("sessions", 0, "turns", 0, "voice", anchor) in locs, result.report()
    assert any(message in f.message for f in result.failures)
    assert len(result.failures) == 1, result.report()
