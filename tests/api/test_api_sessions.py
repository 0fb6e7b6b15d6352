"""Session records over HTTP: filters, paging, newest first, transcripts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.domain import SessionRecord, SessionStatus, Turn

Client = AsyncTestClient[Litestar]
SESSIONS = "/api/v1/sessions"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def sessions(store: Any) -> list[str]:
    """Five sessions an hour apart (s0 oldest); s1 has a transcript; s0/s2 completed."""
    ids = []
    for i in range(5):
        sid = f"s{i}"
        await store.start_session(
            SessionRecord(  # type: ignore[call-arg]
                session_id=sid,
                room=f"room-{i}",
                agent_id="sales-agent" if i % 2 else "support-agent",
                config_version=1,
                user_id=f"user-{i}",
                started_at=T0 + timedelta(hours=i),
            )
        )
        ids.append(sid)
    transcript = [
        Turn(seq=0, role="assistant", text="Hello!"),
        Turn(seq=1, role="user", text="My email is a@b.c"),
    ]
    for turn in transcript:
        await store.append_turn("s1", turn)
    await store.record_data("s1", {"email": "a@b.c"})
    for sid in ("s0", "s2"):
        await store.finish_session(sid, SessionStatus.completed, reason="done")
    return ids


def _ids(r: Any) -> list[str]:
    return [s["session_id"] for s in r.json()["items"]]


async def test_list_newest_first_with_paging(client: Client, sessions: list[str]) -> None:
    r = await client.get(SESSIONS)
    assert r.status_code == 200
    assert _ids(r) == ["s4", "s3", "s2", "s1", "s0"]
    assert r.json()["total"] == 5
    page = await client.get(SESSIONS, params={"limit": 2, "offset": 2})
    assert _ids(page) == ["s2", "s1"]
    assert (page.json()["limit"], page.json()["offset"], page.json()["total"]) == (2, 2, 5)
    assert all(s["turns"] == [] for s in r.json()["items"])  # list omits transcripts


async def test_filters(client: Client, sessions: list[str]) -> None:
    r = await client.get(SESSIONS, params={"agent_id": "sales-agent"})
    assert _ids(r) == ["s3", "s1"] and r.json()["total"] == 2
    r = await client.get(SESSIONS, params={"status": "completed"})
    assert _ids(r) == ["s2", "s0"]
    window = {"since": (T0 + timedelta(hours=1)).isoformat(), "until": (T0 + timedelta(hours=3)).isoformat()}
    r = await client.get(SESSIONS, params=window)
    assert _ids(r) == ["s2", "s1"]
    r = await client.get(SESSIONS, params={"status": "active", "agent_id": "support-agent"})
    assert _ids(r) == ["s4"]


async def test_slowest_turn_first(client: Client, store: Any, sessions: list[str]) -> None:
    await store.update_session("s1", metrics=[{"turn": 0, "total_ms": 900.0}, {"turn": 1, "total_ms": 1500.0}])
    await store.update_session("s3", metrics=[{"turn": 0, "total_ms": 700.0}])
    r = await client.get(SESSIONS, params={"order": "worst_turn"})
    assert r.status_code == 200
    assert _ids(r) == ["s1", "s3", "s4", "s2", "s0"]  # then the ones without a spoken turn, newest first
    assert [s["worst_turn_ms"] for s in r.json()["items"][:3]] == [1500.0, 700.0, None]
    r = await client.get(SESSIONS, params={"order": "worst_turn", "agent_id": "sales-agent", "limit": 1, "offset": 1})
    assert _ids(r) == ["s3"] and r.json()["total"] == 2


async def test_bad_filters_are_422(client: Client, sessions: list[str]) -> None:
    for params, key in (
        ({"status": "exploded"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"limit": 1000}, "limit"),
        ({"order": "slowest"}, "order"),
    ):
        r = await client.get(SESSIONS, params=params)
        assert r.status_code == 422, params
        assert r.json()["extra"][0]["key"] == key


async def test_get_one_with_transcript_and_data(client: Client, sessions: list[str]) -> None:
    r = await client.get(f"{SESSIONS}/s1")
    assert r.status_code == 200
    rec = r.json()
    assert rec["room"] == "room-1" and rec["user_id"] == "user-1"
    assert [(t["seq"], t["role"], t["text"]) for t in rec["turns"]] == [
        (0, "assistant", "Hello!"),
        (1, "user", "My email is a@b.c"),
    ]
    assert rec["collected"] == {"email": "a@b.c"}
    done = (await client.get(f"{SESSIONS}/s0")).json()
    assert (done["status"], done["end_reason"]) == ("completed", "done")
    assert done["ended_at"] is not None


async def test_unknown_session_is_404(client: Client) -> None:
    r = await client.get(f"{SESSIONS}/nope")
    assert r.status_code == 404
    assert r.json()["status_code"] == 404
