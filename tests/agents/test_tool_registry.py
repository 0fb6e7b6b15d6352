"""Built-in tools are found by name in a registry that configs reference."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.agents.context import NullRecorder, SessionContext
from app.agents.factory import AgentFactory
from app.agents.pte import RECORD_SCORE_TOOL
from app.agents.tool_registry import builtin_tools, register_builtin
from app.domain import AgentConfigInput
from app.domain.models import BUILTIN_TOOL_NAMES
from sim.fake_openai import FakeOpenAI
from tests.agents.conftest import MakeConfig


def test_every_builtin_name_the_domain_accepts_is_implemented() -> None:
    assert set(builtin_tools()) == set(BUILTIN_TOOL_NAMES)
    assert "record_score" in BUILTIN_TOOL_NAMES


def test_only_names_the_domain_accepts_can_be_registered() -> None:
    with pytest.raises(ValueError, match="not a built-in tool name"):
        register_builtin("launch_rockets", lambda t: None)  # type: ignore[arg-type,return-value]
    assert "launch_rockets" not in builtin_tools()
    with pytest.raises(ValidationError):
        AgentConfigInput.model_validate({
            "agent_id": "a-agent", "name": "A", "prompt_config": {"instructions": "x"},
            "tools": [{"type": "builtin", "name": "launch_rockets"}],
        })


async def test_a_config_naming_record_score_gets_the_scoring_tool(
    factory: AgentFactory, config: MakeConfig, fake: FakeOpenAI, run_agent: Any
) -> None:
    """By name, for any agent: no branch on which agent is running."""
    recorder = NullRecorder()
    ctx = SessionContext(session_id="s", room="r", recorder=recorder, audio=False)
    agent = factory.create_agent(
        config("speaking-coach", tools=[{"type": "builtin", "name": "record_score"}]), ctx
    )
    args = {"task": "retell_lecture", "content": 4, "oral_fluency": 3, "pronunciation": 5, "note": "Clear."}
    fake.tool_call(RECORD_SCORE_TOOL, args).text("Thanks.")
    async with run_agent(agent) as (session, _):
        result = await session.run(user_input="done")
    result.expect.next_event().is_function_call(name=RECORD_SCORE_TOOL)
    assert "Saved the scores for retell_lecture" in result.expect.next_event().is_function_call_output().event().item.output
    assert recorder.collected["scores"]["retell_lecture"]["content"] == 4
    assert fake.requests[0].tool_names == [RECORD_SCORE_TOOL]
    # an agent that does not name it does not get it
    plain = factory.create_agent(config("plain-agent", tools=[{"type": "builtin", "name": "end_session"}]), ctx)
    assert [t.info.name for t in plain.tools] == ["end_session"]
