"""Live mode for real: the live subset against the local model server (the `local`
extra: SmolLM2-135M through llama.cpp), in every `uv run pytest` where the extra is
installed (.ci/run installs it; elsewhere this module is not collected).

The subset (greeting, routing by purpose and by agent id, one record tool whose
arguments the grammar constrains, end of session) runs with live mode's structural
checks. The model is told which tool a turn needs (`tool_choice:`): a 135M model rarely
picks one by itself (see sim/bench/local_models.py), so what is proven is the path (a
tool call from a real model, valid arguments by construction, the record, the close),
not the model's judgement. `intent:` checks are reported as not judged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.harness import run_scenario
from sim.llm import LiveConfig

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
SUBSET = ["live_subset_support_call.yaml"]


@pytest.mark.parametrize("name", SUBSET)
async def test_the_live_subset_holds_against_the_local_model(name: str) -> None:
    result = await run_scenario(SCENARIOS / name, live=True, live_config=LiveConfig.local())
    assert result.passed, result.report()
    print(result.report())  # the intents not judged, with their lines (pytest -s / -rP shows them)
    assert result.live and result.notes and all("not judged" in n.message for n in result.notes)
    support = result.sessions[0]
    assert support.closed_by_agent and support.record is not None
    assert isinstance(support.record.collected.get("caller_name"), str) and support.record.collected["caller_name"]
    def calls(user: str) -> list[str]:
        (step,) = [s for s in support.steps if s.user == user]
        return [e.split("(")[0].removeprefix("function_call ") for e in step.events if e.startswith("function_call")]

    # the named tools ran first where the turns named them; any other call is the model's
    # own choice in a step left to it (see the scenario), made through the same grammar
    assert calls("My name is Ada Lovelace.")[0] == "record_caller_name"
    assert calls("That's all for now, thanks. Bye!")[0] == "end_session"
