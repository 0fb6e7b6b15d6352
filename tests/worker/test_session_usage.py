"""What a session consumed and which providers served it, as the `SessionManager` stores
it from LiveKit's events: `session_usage_updated` totals, each message's `*_metadata`
(the chain member that actually answered), and the events agents record."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from livekit.agents import llm
from livekit.agents.metrics import AgentSessionUsage, LLMModelUsage, STTModelUsage, TTSModelUsage
from livekit.agents.voice.events import SessionUsageUpdatedEvent

from app.domain import SessionRecord
from app.store.sql import SQLStore
from app.worker.sessions import SessionManager


@pytest.fixture
async def store(tmp_path):  # type: ignore[no-untyped-def]
    s = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/u.db")
    await s.start()
    yield s
    await s.aclose()


def message(role: str, text: str, **metrics: Any) -> Any:
    msg = llm.ChatMessage(role=role, content=[text])  # type: ignore[arg-type]
    msg.metrics = metrics  # type: ignore[assignment]
    return SimpleNamespace(item=msg)


def meta(provider: str, model: str) -> dict[str, str]:
    return {"model_provider": provider, "model_name": model}


async def test_providers_that_served_are_counted_per_turn(store: SQLStore) -> None:
    m = SessionManager(store, SessionRecord(session_id="s", room="r", agent_id="a"))
    await m.start()
    m._on_item(message("user", "hi", stt_metadata=meta("api.openai.com", "gpt-4o-mini-transcribe")))
    m._on_item(message("assistant", "hello", llm_metadata=meta("api.openai.com", "gpt-4.1-mini"),
                       tts_metadata=meta("api.openai.com", "gpt-4o-mini-tts")))
    m._on_item(message("user", "and?", stt_metadata=meta("api.openai.com", "gpt-4o-mini-transcribe")))
    m._on_item(message("assistant", "backup", llm_metadata=meta("127.0.0.1:8080", "local")))
    m._on_item(message("assistant", "backup again", llm_metadata=meta("127.0.0.1:8080", "local")))
    await m.aclose()
    rec = await store.get_session("s")
    served = {(s.kind, s.provider, s.model): s.turns for s in rec.usage.served_by}
    assert served == {
        ("stt", "api.openai.com", "gpt-4o-mini-transcribe"): 2,
        ("llm", "api.openai.com", "gpt-4.1-mini"): 1,
        ("tts", "api.openai.com", "gpt-4o-mini-tts"): 1,
        ("llm", "127.0.0.1:8080", "local"): 2,
    }


async def test_usage_totals_follow_livekits_running_count(store: SQLStore) -> None:
    m = SessionManager(store, SessionRecord(session_id="s", room="r", agent_id="a"))
    await m.start()

    def usage(*items: Any) -> SessionUsageUpdatedEvent:
        return SessionUsageUpdatedEvent(usage=AgentSessionUsage(model_usage=list(items)))

    m._on_usage(usage(LLMModelUsage(provider="p", model="m", input_tokens=100, output_tokens=10)))
    m._on_usage(usage(
        LLMModelUsage(provider="p", model="m", input_tokens=300, output_tokens=25),
        LLMModelUsage(provider="q", model="n", input_tokens=50, output_tokens=5),
        TTSModelUsage(provider="p", model="t", characters_count=140, audio_duration=9.5),
        STTModelUsage(provider="p", model="s", audio_duration=4.25),
    ))
    await m.aclose()
    u = (await store.get_session("s")).usage
    assert (u.llm_input_tokens, u.llm_output_tokens, u.llm_tokens) == (350, 30, 380)
    assert (u.tts_characters, u.stt_audio_s) == (140, 4.25)


async def test_events_are_stored_in_order_with_the_agent_that_ran(store: SQLStore) -> None:
    m = SessionManager(store, SessionRecord(session_id="s", room="r", agent_id="a"))
    await m.start()
    m.record_event("provider_unavailable", "llm api.openai.com/gpt-4.1-mini")
    m.set_agent("b", 1)
    m.record_event("repetition_stopped", "x" * 900)
    await m.aclose()
    events = (await store.get_session("s")).events
    assert [(e.kind, e.agent_id) for e in events] == [("provider_unavailable", "a"), ("repetition_stopped", "b")]
    assert len(events[1].detail) == 500


async def test_a_voice_turns_metrics_name_the_models_that_served(store: SQLStore) -> None:
    m = SessionManager(store, SessionRecord(session_id="s", room="r", agent_id="a"))
    await m.start()
    m._on_item(message("user", "hi", end_of_turn_delay=0.5))
    m._on_item(message("assistant", "hello", started_speaking_at=1.0, stopped_speaking_at=2.0, e2e_latency=0.8,
                       llm_metadata=meta("backup.example", "b-1"), tts_metadata=meta("api.openai.com", "tts-1")))
    await m.aclose()
    entry = (await store.get_session("s")).metrics[0]
    assert (entry["llm"], entry["tts"]) == ("backup.example/b-1", "api.openai.com/tts-1")


async def test_usage_keeps_livekits_lines_with_cached_tokens_audio_and_their_cost(store: SQLStore) -> None:
    """One usage model: the totals budgets read, the per-model lines, the price table's cost
    (at the list price of each model), and the providers that served, all on one record."""
    m = SessionManager(store, SessionRecord(session_id="s", room="r", agent_id="a"))
    await m.start()
    m._on_item(message("assistant", "hello", llm_metadata=meta("api.openai.com", "gpt-4.1-mini")))
    m._on_usage(SessionUsageUpdatedEvent(usage=AgentSessionUsage(model_usage=[
        LLMModelUsage(provider="api.openai.com", model="gpt-4.1-mini", input_tokens=1000, input_cached_tokens=400,
                      output_tokens=100),
        STTModelUsage(provider="api.openai.com", model="gpt-4o-mini-transcribe", audio_duration=30.0),
        TTSModelUsage(provider="api.openai.com", model="tts-1", characters_count=200, audio_duration=12.0),
        TTSModelUsage(provider="local", model="piper", characters_count=50, audio_duration=3.0),
    ])))
    await m.aclose()
    u = (await store.get_session("s")).usage
    assert (u.llm_input_tokens, u.llm_cached_tokens, u.llm_output_tokens) == (1000, 400, 100)
    assert (u.stt_audio_s, u.tts_characters, u.tts_audio_s) == (30.0, 250, 15.0)
    llm = (600 * 0.40 + 400 * 0.10 + 100 * 1.60) / 1e6
    stt = 0.5 * 0.003
    tts = 200 * 15.00 / 1e6
    assert u.cost_usd == pytest.approx(llm + stt + tts)
    assert u.unpriced_models == ["piper"]
    assert {(x.kind, x.model): x.cost_usd is not None for x in u.models} == {
        ("llm", "gpt-4.1-mini"): True, ("stt", "gpt-4o-mini-transcribe"): True, ("tts", "tts-1"): True,
        ("tts", "piper"): False}
    assert [(s.kind, s.model, s.turns) for s in u.served_by] == [("llm", "gpt-4.1-mini", 1)]
