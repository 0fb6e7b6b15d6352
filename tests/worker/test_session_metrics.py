"""Per-turn voice latency metrics: taken from LiveKit's `ChatMessage.metrics`, stored on
`SessionRecord.metrics` by the `SessionManager`, and served by `GET /api/v1/sessions/{id}`.

The end-to-end path (real VAD/STT/TTS plugins producing those metrics) is covered by the
voice sim scenarios (sim/scenarios/voice_*.yaml) and sim/voice/tests.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from livekit.agents import llm

from app.api import create_app
from app.domain import SessionRecord
from app.settings import Settings
from app.store.sql import SQLStore
from app.worker.sessions import SessionManager

ADMIN_KEY = "metrics-test-key"

USER_METRICS = {
    "started_speaking_at": 1000.0,
    "stopped_speaking_at": 1002.0,
    "transcription_delay": 0.31,
    "end_of_turn_delay": 0.62,
    "on_user_turn_completed_delay": 0.0001,
}
ASSISTANT_METRICS = {
    "started_speaking_at": 1002.9,
    "stopped_speaking_at": 1005.4,
    "llm_node_ttft": 0.18,
    "tts_node_ttfb": 0.07,
    "e2e_latency": 0.9,
    "playback_latency": 0.0,
}


@pytest.fixture
async def store(tmp_path):  # type: ignore[no-untyped-def]
    s = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/m.db")
    await s.start()
    yield s
    await s.aclose()


def item_added(role: str, text: str, metrics: dict[str, Any] | None = None, *, interrupted: bool = False) -> Any:
    """A `conversation_item_added` event as LiveKit emits it."""
    msg = llm.ChatMessage(role=role, content=[text], interrupted=interrupted)  # type: ignore[arg-type]
    if metrics is not None:
        msg.metrics = metrics  # type: ignore[assignment]
    return SimpleNamespace(item=msg)


async def manager(store: SQLStore, sid: str = "voice-1") -> SessionManager:
    m = SessionManager(store, SessionRecord(session_id=sid, room="r", agent_id="support-agent-v1", config_version=1))
    await m.start()
    return m


async def test_a_voice_turn_stores_eou_ttft_ttfb_and_total(store: SQLStore) -> None:
    m = await manager(store)
    m._on_item(item_added("user", "My order is late.", USER_METRICS))
    m._on_item(item_added("assistant", "Sorry to hear that.", ASSISTANT_METRICS))
    await m.aclose()
    rec = await store.get_session("voice-1")
    assert [t.role for t in rec.turns] == ["user", "assistant"]
    assert len(rec.metrics) == 1
    entry = rec.metrics[0]
    assert entry["seq"] == 1 and entry["user_seq"] == 0 and entry["agent_id"] == "support-agent-v1"
    assert entry["eou_delay_ms"] == 620.0
    assert entry["transcription_delay_ms"] == 310.0
    assert entry["llm_ttft_ms"] == 180.0
    assert entry["tts_ttfb_ms"] == 70.0
    assert entry["total_ms"] == 900.0
    assert entry["speech_ms"] == pytest.approx(2500.0)
    assert entry["interrupted"] is False
    assert m.record.metrics == rec.metrics


async def test_greeting_interruption_and_later_turns_accumulate(store: SQLStore) -> None:
    m = await manager(store)
    greeting = {"started_speaking_at": 1.0, "stopped_speaking_at": 3.0, "tts_node_ttfb": 0.05}
    m._on_item(item_added("assistant", "Hello, how can I help?", greeting))
    m._on_item(item_added("user", "Tell me everything.", USER_METRICS))
    m._on_item(item_added("assistant", "Well, there is a lot to say...", ASSISTANT_METRICS, interrupted=True))
    m._on_item(item_added("user", "Stop, just the price.", USER_METRICS))
    m._on_item(item_added("assistant", "Ten dollars.", ASSISTANT_METRICS))
    await m.aclose()
    rec = await store.get_session("voice-1")
    assert [(e["seq"], e["user_seq"], e["interrupted"]) for e in rec.metrics] == [
        (0, None, False), (2, 1, True), (4, 3, False)
    ]
    # a greeting answers no user turn: the end-of-turn figures are null, not invented
    assert rec.metrics[0]["eou_delay_ms"] is None and rec.metrics[0]["total_ms"] is None
    assert rec.metrics[0]["tts_ttfb_ms"] == 50.0


async def test_an_agent_message_with_no_audio_stores_no_metrics(store: SQLStore) -> None:
    """Text sessions (and replies cut before their first frame) add no entry, so text
    mode's writes are unchanged."""
    m = await manager(store)
    m._on_item(item_added("user", "hi"))
    m._on_item(item_added("assistant", "hello", {"llm_node_ttft": 0.01}))
    await m.aclose()
    rec = await store.get_session("voice-1")
    assert len(rec.turns) == 2
    assert rec.metrics == []


async def test_the_api_returns_the_stored_metrics(store: SQLStore) -> None:
    m = await manager(store, "voice-api")
    m._on_item(item_added("user", "Where is my parcel?", USER_METRICS))
    m._on_item(item_added("assistant", "Let me check.", ASSISTANT_METRICS))
    await m.aclose()
    settings = Settings(_env_file=None, admin_api_key=ADMIN_KEY)  # type: ignore[call-arg,arg-type]
    app = create_app(settings, store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as client:
        r = await client.get("/api/v1/sessions/voice-api")
    assert r.status_code == 200, r.text
    metrics = r.json()["metrics"]
    assert len(metrics) == 1
    assert {k: metrics[0][k] for k in ("eou_delay_ms", "llm_ttft_ms", "tts_ttfb_ms", "total_ms", "user_seq")} == {
        "eou_delay_ms": 620.0, "llm_ttft_ms": 180.0, "tts_ttfb_ms": 70.0, "total_ms": 900.0, "user_seq": 0
    }
