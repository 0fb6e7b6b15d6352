"""Session budgets in real text sessions: the agent (real OpenAI plugin against a scripted
server that reports usage) is warned once near its limit and the session ends politely at
it, with end_reason `budget_exhausted`."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from livekit.agents import AgentSession

from app.agents.context import NullRecorder, SessionContext
from app.agents.factory import AgentFactory
from app.agents.providers import session_connect_options
from app.domain import AgentConfig, NotFound, SessionStatus
from app.settings import Settings
from app.worker.budget import END_REASON, GOODBYE_INSTRUCTIONS, WRAP_UP_INSTRUCTIONS, attach_budget_guard
from sim.fake_openai import FakeOpenAI, ScriptedText


def sent(req: Any) -> str:
    """Every message text of a request (instructions LiveKit adds for one reply come as a
    later system message)."""
    return "\n".join(str(m.get("content")) for m in req.messages)


class NoConfigs:
    async def get_agent_config(self, agent_id: str) -> AgentConfig:
        raise NotFound(agent_id)


def agent_with(budget: dict[str, Any], fake: FakeOpenAI, recorder: NullRecorder) -> Any:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    cfg = AgentConfig.model_validate({
        "agent_id": "budgeted", "name": "Budgeted", "prompt_config": {"instructions": "You help."},
        "budget": budget, "version": 1, "created_at": now, "updated_at": now,
    })
    settings = Settings(_env_file=None, openai_api_key=None, openai_base_url=None)  # type: ignore[call-arg]
    ctx = SessionContext(session_id="s", room="r", recorder=recorder, audio=False)
    return AgentFactory(settings, NoConfigs(), llm_client=fake.client()).create_agent(cfg, ctx)


async def test_llm_tokens_warn_once_then_end_the_session_with_a_goodbye() -> None:
    fake = FakeOpenAI()
    for text in ("One.", "Two.", "Three.", "Sorry, I have to end the call now. Goodbye!"):
        fake.add(ScriptedText(text, usage=(400, 20)))  # 420 tokens a request
    recorder = NullRecorder()
    closed = asyncio.Event()
    async with AgentSession(conn_options=session_connect_options()) as session:
        session.on("close", lambda _ev: closed.set())
        attach_budget_guard(session, recorder)
        await session.start(agent_with({"llm_tokens": 1000, "wrap_up_at": 0.8}, fake, recorder), capture_run=True)
        await session.run(user_input="a")  # 420
        assert recorder.events == []
        await session.run(user_input="b")  # 840: past 80 %
        assert [k for k, _ in recorder.events] == ["budget_warning"]
        result = await session.run(user_input="c")  # 1260: over
        texts = [e.item.text_content for e in result.events if e.type == "message"]
        assert texts == ["Three.", "Sorry, I have to end the call now. Goodbye!"]
        await asyncio.wait_for(closed.wait(), 5)
    assert [k for k, _ in recorder.events] == ["budget_warning", "budget_exhausted"]
    assert recorder.events[1][1] == "LLM tokens: 1260 of 1000 used; the session ends"
    assert recorder.finished == (SessionStatus.completed, END_REASON)
    systems = [r.system or "" for r in fake.requests]
    assert [WRAP_UP_INSTRUCTIONS in s for s in systems] == [False, False, True, True]  # told once, from then on
    goodbye = fake.requests[3]
    assert GOODBYE_INSTRUCTIONS in sent(goodbye) and goodbye.body.get("tool_choice") in (None, "none")
    assert len(fake.requests) == 4


async def test_call_duration_ends_a_silent_session() -> None:
    fake = FakeOpenAI().add(ScriptedText("We are out of time, goodbye.", usage=(10, 5)))
    recorder = NullRecorder()
    closed = asyncio.Event()
    async with AgentSession(conn_options=session_connect_options()) as session:
        session.on("close", lambda _ev: closed.set())
        attach_budget_guard(session, recorder, tick_s=0.05)
        t0 = time.monotonic()
        await session.start(agent_with({"duration_s": 0.6, "wrap_up_at": 0.5}, fake, recorder), capture_run=True)
        await asyncio.wait_for(closed.wait(), 5)
        took = time.monotonic() - t0
    assert 0.6 <= took < 3.0
    assert [k for k, _ in recorder.events] == ["budget_warning", "budget_exhausted"]
    assert recorder.finished == (SessionStatus.completed, END_REASON)
    assert [GOODBYE_INSTRUCTIONS in sent(r) for r in fake.requests] == [True]


async def test_no_budget_no_checks() -> None:
    fake = FakeOpenAI()
    for _ in range(3):
        fake.add(ScriptedText("ok.", usage=(100_000, 100)))
    recorder = NullRecorder()
    async with AgentSession(conn_options=session_connect_options()) as session:
        guard = attach_budget_guard(session, recorder, tick_s=0.05)
        await session.start(agent_with({}, fake, recorder), capture_run=True)
        for text in ("a", "b", "c"):
            await session.run(user_input=text)
        await asyncio.sleep(0.2)
        assert not guard.ended
    assert recorder.events == [] and recorder.finished is None
