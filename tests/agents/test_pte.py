"""The hardcoded PTE speaking practice examiner: its config, band estimate and record_score."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st
from livekit.agents.llm import RawFunctionTool

from app.agents.context import NullRecorder, SessionContext
from app.agents.factory import AgentFactory, render_prompt
from app.agents.pte import (
    PTE_TASK_SPECS,
    PTE_TASKS,
    RECORD_SCORE_TOOL,
    estimate_band,
    record_score_tool,
    validate_score,
)
from app.domain import AgentConfig
from app.store.sources import PTE_AGENT_ID, load_pte_config
from sim.fake_openai import FakeOpenAI

TASKS = [
    "personal_introduction",
    "repeat_sentence",
    "answer_short_question",
    "retell_lecture",
    "respond_to_situation",
]


def score(task: str, content: int | None = None, fluency: int = 4, pron: int = 4, note: str = "Good.") -> dict[str, Any]:
    return {
        "task": task,
        "content": PTE_TASK_SPECS[task].content_max if content is None else content,
        "oral_fluency": fluency,
        "pronunciation": pron,
        "note": note,
    }


def traits(content: int, fluency: int, pron: int) -> dict[str, int]:
    return {"content": content, "oral_fluency": fluency, "pronunciation": pron}


class StubContext:
    """Stands in for RunContext: the handler never touches it."""


async def call(tool: Any, args: dict[str, Any]) -> str:
    result = await tool(raw_arguments=args, context=StubContext())
    assert isinstance(result, str)
    return result


@pytest.fixture
def tool(recorder: NullRecorder) -> RawFunctionTool:
    return record_score_tool(recorder)


# ---------------------------------------------------------------------- config


def test_task_order() -> None:
    assert PTE_TASKS == TASKS
    assert [PTE_TASK_SPECS[t].content_max for t in TASKS] == [5, 3, 3, 5, 5]


def test_load_pte_config() -> None:
    cfg = load_pte_config()
    assert isinstance(cfg, AgentConfig)
    assert (cfg.agent_id, cfg.version) == (PTE_AGENT_ID, 1)
    assert cfg.created_at == cfg.updated_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert cfg == load_pte_config()
    cfg.name = "mutated"
    assert load_pte_config().name != "mutated", "callers get a copy"
    assert [t.name for t in cfg.tools] == ["end_session", "record_score"]  # record_score: a registered built-in
    assert cfg.schema_config["properties"] == {}


def test_pte_prompt_has_the_real_test_content() -> None:
    text = render_prompt(load_pte_config(), {}).instructions
    for phrase in (
        "You will have 25 seconds to prepare, and then 30 seconds to speak",
        "You will hear each sentence only once",
        "The university library extends its opening hours during the examination period.",
        "Photosynthesis converts light energy into chemical energy that plants store as glucose.",
        "Students who miss the enrolment deadline must apply directly to the faculty office.",
        "Accept geologist",
        "Accept microscope",
        "Accept abstract",
        "you will have 10 seconds to prepare, and then 40 seconds",
        "urban heat island effect",
        "You will have 20 seconds to think about your answer, and then 40 seconds to respond",
        "record_score",
        "not an official PTE score",
    ):
        assert phrase in text, phrase
    # the tasks are introduced in the order the tool expects
    positions = [text.index(f"Task {n}, ") for n in ("one", "two", "three", "four", "five")]
    assert positions == sorted(positions)
    lecture = text.split("The lecture is:\n")[1].split("\n")[0].strip().strip('"')
    assert 80 <= len(lecture.split()) <= 100


# ------------------------------------------------------------------------ band


def test_band_extremes_and_known_values() -> None:
    zeros = {t: traits(0, 0, 0) for t in TASKS}
    tops = {t: traits(PTE_TASK_SPECS[t].content_max, 5, 5) for t in TASKS}
    assert estimate_band(zeros) == 10
    assert estimate_band(tops) == 90
    # only content at maximum: every task is 1/3 -> 10 + 80/3 = 36.67 -> 37
    assert estimate_band({t: traits(PTE_TASK_SPECS[t].content_max, 0, 0) for t in TASKS}) == 37
    # partial: one task alone decides
    assert estimate_band({"repeat_sentence": traits(3, 5, 5)}) == 90
    assert estimate_band({"repeat_sentence": traits(0, 0, 0)}) == 10
    # weighted: repeat_sentence (w3) perfect, answer_short_question (w1) zero -> 10 + 80*3/4
    assert estimate_band({"repeat_sentence": traits(3, 5, 5), "answer_short_question": traits(0, 0, 0)}) == 70
    # answer_short_question alone: s = (3/3 + 0/5 + 5/5) / 3 = 2/3 -> 10 + 53.33 -> 63
    assert estimate_band({"answer_short_question": traits(3, 0, 5)}) == 63


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"speaking_test": traits(1, 1, 1)},
        {"repeat_sentence": traits(4, 1, 1)},
        {"retell_lecture": traits(1, 6, 1)},
        {"retell_lecture": traits(1, 1, -1)},
        {"retell_lecture": {"content": 1, "oral_fluency": 1}},
        {"retell_lecture": traits(True, 1, 1)},  # type: ignore[arg-type]
    ],
)
def test_band_rejects_bad_input(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        estimate_band(bad)


@st.composite
def score_sets(draw: st.DrawFn) -> dict[str, dict[str, int]]:
    tasks = draw(st.lists(st.sampled_from(TASKS), min_size=1, max_size=5, unique=True))
    return {
        t: traits(
            draw(st.integers(0, PTE_TASK_SPECS[t].content_max)),
            draw(st.integers(0, 5)),
            draw(st.integers(0, 5)),
        )
        for t in tasks
    }


@hypothesis_settings(max_examples=300, deadline=None)
@given(scores=score_sets(), data=st.data())
def test_band_is_bounded_and_monotonic(scores: dict[str, dict[str, int]], data: st.DataObject) -> None:
    band = estimate_band(scores)
    assert 10 <= band <= 90
    assert estimate_band(scores) == band  # deterministic
    task = data.draw(st.sampled_from(sorted(scores)))
    trait = data.draw(st.sampled_from(["content", "oral_fluency", "pronunciation"]))
    top = PTE_TASK_SPECS[task].content_max if trait == "content" else 5
    if scores[task][trait] < top:
        better = {t: dict(v) for t, v in scores.items()}
        better[task][trait] += 1
        assert estimate_band(better) >= band


# ---------------------------------------------------------------- record_score


def test_tool_schema() -> None:
    t = record_score_tool(NullRecorder())
    assert isinstance(t, RawFunctionTool)
    schema = t.info.raw_schema
    assert schema["name"] == RECORD_SCORE_TOOL
    params = schema["parameters"]
    assert params["properties"]["task"]["enum"] == TASKS
    assert set(params["required"]) == {"task", "content", "oral_fluency", "pronunciation", "note"}


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (score("speaking_test", content=3), "task"),
        (score("repeat_sentence", content=4), "repeat_sentence is scored 0 to 3"),
        (score("answer_short_question", content=5), "answer_short_question is scored 0 to 3"),
        (score("retell_lecture", content=6), "content"),
        (score("retell_lecture", fluency=6), "oral_fluency"),
        (score("retell_lecture", pron=-1), "pronunciation"),
        (score("retell_lecture", content=2.5), "content"),  # type: ignore[arg-type]
        ({**score("retell_lecture"), "content": "3"}, "content"),
        ({**score("retell_lecture"), "content": True}, "content"),
        ({k: v for k, v in score("retell_lecture").items() if k != "note"}, "note"),
        (score("retell_lecture", note="   "), "note"),
        ({**score("retell_lecture"), "band": 80}, "band"),
    ],
)
async def test_record_score_rejects_bad_arguments(
    tool: Any, recorder: NullRecorder, args: dict[str, Any], problem: str
) -> None:
    reply = await call(tool, args)
    assert reply.startswith("Not saved:")
    assert problem in reply
    assert "again" in reply
    assert recorder.collected == {}


async def test_record_score_accumulates_and_reports_band(tool: Any, recorder: NullRecorder) -> None:
    replies = []
    for i, task in enumerate(TASKS):
        replies.append(await call(tool, score(task, fluency=3, pron=4, note=f"note {i}")))
        scores = recorder.collected["scores"]
        assert list(scores) == TASKS[: i + 1], "every earlier task is kept"
        if i < len(TASKS) - 1:
            assert "estimated_band" not in recorder.collected
            assert f"Next task: {TASKS[i + 1]}" in replies[-1]
            assert ", ".join(TASKS[i + 1 :]) in replies[-1]
    assert recorder.collected["scores"]["repeat_sentence"] == {
        "content": 3, "oral_fluency": 3, "pronunciation": 4, "note": "note 1",
    }
    band = estimate_band(recorder.collected["scores"])
    assert recorder.collected["estimated_band"] == band
    assert f"Estimated practice band: {band} out of 90" in replies[-1]
    assert "not an official PTE score" in replies[-1]
    json.dumps(recorder.collected)  # what the store persists must be plain JSON


async def test_record_score_rescoring_updates(tool: Any, recorder: NullRecorder) -> None:
    await call(tool, score("personal_introduction", content=1))
    reply = await call(tool, score("personal_introduction", content=4))
    assert reply.startswith("Updated")
    assert recorder.collected["scores"]["personal_introduction"]["content"] == 4
    # an invalid call after valid ones leaves them as they were
    before = json.dumps(recorder.collected, sort_keys=True)
    await call(tool, score("repeat_sentence", content=5))
    assert json.dumps(recorder.collected, sort_keys=True) == before


async def test_record_score_out_of_order_still_completes(tool: Any, recorder: NullRecorder) -> None:
    for task in reversed(TASKS):
        reply = await call(tool, score(task, content=0, fluency=0, pron=0))
    assert recorder.collected["estimated_band"] == 10
    assert "Estimated practice band: 10 out of 90" in reply


def test_validate_score_coerces_whole_floats() -> None:
    clean, problem = validate_score({**score("retell_lecture"), "content": 4.0})
    assert problem is None and clean == {"content": 4, "oral_fluency": 4, "pronunciation": 4, "note": "Good."}
    assert isinstance(clean["content"], int)


# ------------------------------------------------ a real text-mode AgentSession


async def test_examiner_in_a_real_session(
    factory: AgentFactory, fake: FakeOpenAI, recorder: NullRecorder, ctx: SessionContext, run_agent: Any
) -> None:
    agent = factory.create_agent(load_pte_config(), ctx)
    fake.text("Task one: personal introduction. ... Your preparation time starts now.")
    fake.tool_call(RECORD_SCORE_TOOL, score("personal_introduction", content=7))  # invalid
    fake.tool_call(RECORD_SCORE_TOOL, score("personal_introduction", content=4, fluency=3, pron=4))
    fake.text("Thank you. Task two: repeat sentence.")
    async with run_agent(agent) as (session, started):
        started.expect.skip_next_event_if(type="agent_handoff")
        greeting = started.expect.next_event().is_message(role="assistant")
        assert "PTE Academic speaking practice" in str(greeting.event().item.content)
        result = await session.run(user_input="Yes, I'm ready.")
        result.expect.next_event().is_message(role="assistant")
        result.expect.no_more_events()
        result = await session.run(user_input="My name is Mei. I study engineering and love hiking.")
        result.expect.next_event().is_function_call(name=RECORD_SCORE_TOOL)
        out = result.expect.next_event().is_function_call_output()
        assert "Not saved" in out.event().item.output
        result.expect.next_event().is_function_call(name=RECORD_SCORE_TOOL)
        out = result.expect.next_event().is_function_call_output()
        assert "Next task: repeat_sentence" in out.event().item.output
        result.expect.next_event().is_message(role="assistant")
        result.expect.no_more_events()

    assert recorder.collected == {
        "scores": {
            "personal_introduction": {
                "content": 4, "oral_fluency": 3, "pronunciation": 4, "note": "Good.",
            }
        }
    }
    first = fake.requests[0]
    assert "PTE Academic" in (first.system or "")
    assert {RECORD_SCORE_TOOL, "end_session"} <= set(first.tool_names)
    assert first.tool(RECORD_SCORE_TOOL)["parameters"]["properties"]["task"]["enum"] == TASKS
    assert fake.pending == 0


async def test_all_tasks_scored_in_one_step_store_the_band(
    factory: AgentFactory, fake: FakeOpenAI, recorder: NullRecorder, ctx: SessionContext, run_agent: Any
) -> None:
    """Parallel record_score calls (which LiveKit runs concurrently) lose no task."""
    from sim.fake_openai import ToolCall

    agent = factory.create_agent(load_pte_config(), ctx)
    fake.tool_calls(*(ToolCall(RECORD_SCORE_TOOL, score(t, fluency=5, pron=5)) for t in TASKS))
    fake.text("That's the end of the practice test. Your estimated practice score is 90 out of 90.")
    async with run_agent(agent) as (session, _):
        result = await session.run(user_input="I'd like my result please.")
        outputs = [
            e.item.output for e in result.events if e.type == "function_call_output"  # type: ignore[union-attr]
        ]
    assert len(outputs) == 5
    assert sum("Estimated practice band: 90 out of 90" in o for o in outputs) == 1
    assert set(recorder.collected["scores"]) == set(TASKS)
    assert recorder.collected["estimated_band"] == 90
    # the model saw the band in the tool output before its closing summary
    assert any("Estimated practice band: 90" in o for o in fake.last_request.tool_outputs())
