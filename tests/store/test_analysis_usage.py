"""The `ConfigStore` contract for a session's usage and post-call analysis, on every
backend (conftest.BACKENDS): the record fields go through the session rules (stored
and read back as written, hostile keys included), the analysis queue hands a pending
analysis to exactly one holder at a time, a lease that ran out can be taken over and
fences its former holder out, and the usage report sums what the records hold.

Readings of the contract where the docstrings leave room (each is asserted below):
- writing `analysis` (through `update_session` or a batch) makes it claimable afresh
  when pending: no lease, claims counted from zero;
- `finish_analysis` keeps the claim count, so a record shows how many runs it took;
- the usage report counts every session in the filter, with or without usage.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.domain import InvalidInput, SessionStatus, Turn
from app.domain.analysis import (
    AnalysisConfig,
    AnalysisRequest,
    AnalysisStatus,
    SessionAnalysis,
    SuccessVerdict,
)
from app.domain.usage import ModelUsage, ServedBy, SessionUsage, UsageGroup
from app.domain.values import utcnow
from app.store.base import FinishSession, UpdateSession
from tests.store.test_contract import now_ms, session

SETTINGS = AnalysisConfig(
    summary_prompt="Two sentences.",
    success_criteria="The caller's order number was taken.",
    extraction_schema={"type": "object", "properties": {"refund": {"type": "boolean"}}},
)


def pending(agent_id: str = "support-agent", **kw: Any) -> SessionAnalysis:
    return SessionAnalysis(
        status=AnalysisStatus.pending, requested_at=kw.pop("requested_at", now_ms()),
        request=AnalysisRequest(agent_id=agent_id, config_version=2, settings=SETTINGS, model="gpt-4.1-mini"),
        **kw,
    )


def usage(prompt: int = 100, cached: int = 20, completion: int = 30, *, unpriced: bool = False) -> SessionUsage:
    lines = [
        ModelUsage(kind="llm", provider="openai", model="gpt-4.1-mini", input_tokens=prompt,
                   cached_tokens=cached, output_tokens=completion, cost_usd=0.25),
        ModelUsage(kind="stt", provider="openai", model="gpt-4o-mini-transcribe", audio_s=12.5, cost_usd=0.5),
        ModelUsage(kind="tts", provider="openai", model="tts-odd" if unpriced else "tts-1", characters=40,
                   audio_s=3.25, cost_usd=None if unpriced else 0.25),
    ]
    served = [ServedBy(kind="llm", provider="api.openai.com", model="gpt-4.1-mini", turns=2)]
    return SessionUsage(served_by=served).with_models(lines)


async def ended_with_analysis(store, sid: str, **kw: Any) -> None:
    await store.start_session(session(sid, **kw))
    await store.append_turn(sid, Turn(seq=0, role="user", text="Hi"))
    # as the session writer does: the request and the end in one batch
    await store.apply_session_writes(sid, [
        UpdateSession({"usage": usage(), "analysis": pending()}),
        FinishSession(SessionStatus.completed, "caller hung up"),
    ])


# ------------------------------------------------------------------- the record


async def test_usage_and_analysis_round_trip_with_hostile_keys(store):
    await store.start_session(session("s-1"))
    u = usage(unpriced=True)
    done = pending().finished(
        "done", now_ms(), attempts=2, summary="Ada asked about a refund. Resolved.",
        success=SuccessVerdict(passed=True, reason="order number taken"),
        extracted={"refund": True, "$where": "1", "a.b": {"%24x": [1, {"$gt": None}]}, "ünï": "çödé"},
        input_tokens=812, output_tokens=95, cost_usd=0.00048,
    )
    await store.update_session("s-1", usage=u, analysis=done)
    got = await store.get_session("s-1")
    assert got.usage == u and got.analysis == done
    assert got.usage.unpriced_models == ["tts-odd"] and got.usage.cost_usd == 0.75
    listed, _ = await store.list_sessions()
    assert listed[0].usage == u and listed[0].analysis == done


async def test_a_session_starts_without_usage_or_analysis_and_takes_them_as_plain_json(store):
    await store.start_session(session("s-1"))
    got = await store.get_session("s-1")
    assert got.usage == SessionUsage() and got.analysis is None
    # the fields' own types are the rule: a mapping is validated like the model
    await store.update_session("s-1", usage=usage().model_dump(mode="json"))
    assert (await store.get_session("s-1")).usage == usage()
    with pytest.raises(InvalidInput, match="usage"):
        await store.update_session("s-1", usage={"llm_input_tokens": "many"})
    with pytest.raises(InvalidInput, match="analysis"):
        await store.update_session("s-1", analysis={"status": "maybe"})


async def test_start_session_with_a_pending_analysis_is_claimable(store):
    await store.start_session(session("s-1", usage=usage(), analysis=pending()))
    got = await store.get_session("s-1")
    assert got.usage == usage() and got.analysis == pending(requested_at=got.analysis.requested_at)
    [claim] = await store.claim_analyses("me", lease_s=30, limit=5)
    assert claim.record.session_id == "s-1"


# ---------------------------------------------------------------- the queue


async def test_claim_takes_pending_analyses_oldest_first_with_their_transcript(store):
    base = now_ms()
    for i, sid in enumerate(["s-late", "s-early", "s-mid"]):
        await ended_with_analysis(store, sid, started_at=base - timedelta(minutes=[1, 30, 10][i]))
    await store.start_session(session("s-none"))  # no analysis asked: never claimed
    await store.finish_session("s-none", SessionStatus.completed)
    first = await store.claim_analyses("me", lease_s=30, limit=2)
    assert [c.record.session_id for c in first] == ["s-early", "s-mid"]
    assert all(c.claims == 1 and c.record.analysis and c.record.analysis.status == AnalysisStatus.pending
               for c in first)
    assert [t.text for t in first[0].record.turns] == ["Hi"]
    assert first[0].record.status == SessionStatus.completed
    rest = await store.claim_analyses("me", lease_s=30, limit=5)
    assert [c.record.session_id for c in rest] == ["s-late"]
    assert await store.claim_analyses("me", lease_s=30, limit=5) == []  # all leased
    assert await store.claim_analyses("me", lease_s=30, limit=0) == []


async def test_two_processes_claiming_at_once_never_share_an_analysis(store, open_another):
    for i in range(12):
        await ended_with_analysis(store, f"s-{i:02d}")
    others = [await open_another() for _ in range(3)]
    results = await asyncio.gather(*(
        s.claim_analyses(f"p{i}", lease_s=30, limit=3) for i, s in enumerate([store, *others, store, *others])
    ))
    ids = [c.record.session_id for claims in results for c in claims]
    assert sorted(ids) == [f"s-{i:02d}" for i in range(12)], "each pending analysis claimed exactly once"
    assert {c.claims for claims in results for c in claims} == {1}


async def test_an_expired_lease_is_taken_over_and_fences_out_its_former_holder(store, open_another):
    await ended_with_analysis(store, "s-1")
    other = await open_another()
    [old] = await store.claim_analyses("dead", lease_s=1.0, limit=1)  # long enough on a busy machine
    assert await other.claim_analyses("live", lease_s=30, limit=1) == []  # still held
    await asyncio.sleep(1.1)
    [new] = await other.claim_analyses("live", lease_s=30, limit=1)
    assert new.claims == 2 and new.token != old.token
    # the stalled holder wakes up: it can neither extend nor finish
    assert await store.renew_analysis(old, 30) is False
    late = old.record.analysis.finished("done", now_ms(), summary="stale")
    assert await store.finish_analysis(old, late) is False
    assert (await store.get_session("s-1")).analysis.status == AnalysisStatus.pending
    done = new.record.analysis.finished("done", now_ms(), summary="fresh", attempts=1)
    assert await other.finish_analysis(new, done) is True
    assert (await store.get_session("s-1")).analysis == done
    await asyncio.sleep(0.1)
    assert await store.claim_analyses("x", lease_s=30, limit=5) == []  # finished: never again
    assert await other.finish_analysis(new, done) is False  # a lease ends with the finish


async def test_renew_keeps_a_lease_and_release_frees_it_at_once(store):
    await ended_with_analysis(store, "s-1")
    [c] = await store.claim_analyses("me", lease_s=0.3, limit=1)
    assert await store.renew_analysis(c, 30) is True
    await asyncio.sleep(0.4)
    assert await store.claim_analyses("other", lease_s=30, limit=1) == []  # renewed past the first lease
    await store.release_analysis(c)
    [again] = await store.claim_analyses("other", lease_s=30, limit=1)
    assert again.claims == 2
    await store.release_analysis(c)  # a stale token's release changes nothing
    assert await store.claim_analyses("third", lease_s=30, limit=1) == []


async def test_a_failed_analysis_is_stored_and_not_claimed_again(store):
    await ended_with_analysis(store, "s-1")
    [c] = await store.claim_analyses("me", lease_s=30, limit=1)
    failed = c.record.analysis.finished("failed", now_ms(), attempts=3, error="the model answered invalid JSON 3 times")
    assert await store.finish_analysis(c, failed)
    got = (await store.get_session("s-1")).analysis
    assert got.status == AnalysisStatus.failed and got.error == failed.error and got.attempts == 3
    assert await store.claim_analyses("me", lease_s=30, limit=1) == []
    with pytest.raises(InvalidInput):
        await store.finish_analysis(c, pending())


async def test_writing_a_new_request_makes_it_claimable_afresh(store):
    await ended_with_analysis(store, "s-1")
    [c] = await store.claim_analyses("me", lease_s=30, limit=1)
    await store.finish_analysis(c, c.record.analysis.finished("failed", now_ms(), error="timed out"))
    await store.update_session("s-1", analysis=pending())  # asked again (a re-run)
    [again] = await store.claim_analyses("me", lease_s=30, limit=1)
    assert again.claims == 1 and again.record.session_id == "s-1"


# ---------------------------------------------------------------- usage report


async def test_usage_report_sums_by_agent_version_and_day(store):
    d1 = datetime(2031, 3, 1, 23, 30, tzinfo=UTC)
    d2 = d1 + timedelta(hours=1)  # the next UTC day
    specs = [  # id, agent, version, started, usage, analysis cost
        ("s-1", "agent-a", 1, d1, usage(100, 20, 30), 0.01),
        ("s-2", "agent-a", 1, d2, usage(200, 0, 10), None),
        ("s-3", "agent-a", 2, d2, usage(50, 5, 5, unpriced=True), 0.02),
        ("s-4", "agent-b", 1, d1, None, None),
        ("s-5", "agent-b", 1, d2 + timedelta(days=3), usage(1, 0, 1), None),
    ]
    for sid, aid, version, started, u, analysis_cost in specs:
        await store.start_session(session(sid, aid, config_version=version, started_at=started))
        fields: dict[str, Any] = {}
        if u is not None:
            fields["usage"] = u
        if analysis_cost is not None:
            fields["analysis"] = pending().finished("done", utcnow(), cost_usd=analysis_cost)
        if fields:
            await store.update_session(sid, **fields)

    report = await store.usage_report(group_by=[])
    [row] = report.rows
    assert row.sessions == 5 and row.sessions_with_usage == 4 and row.sessions_unpriced == 1
    assert row.llm_input_tokens == 351 and row.llm_cached_tokens == 25 and row.llm_output_tokens == 46
    assert row.stt_audio_s == 50.0 and row.tts_characters == 160 and row.tts_audio_s == 13.0
    assert row.cost_usd == pytest.approx(1.0 + 1.0 + 0.75 + 1.0)  # s-3 leaves out its unpriced TTS
    assert row.analysis_cost_usd == pytest.approx(0.03)
    assert report.total.model_dump() == pytest.approx(
        {k: v for k, v in row.model_dump().items() if k in report.total.model_dump()})

    by_agent = await store.usage_report(group_by=[UsageGroup.agent])
    assert [(r.agent_id, r.sessions, r.llm_input_tokens, r.config_version, r.day) for r in by_agent.rows] == [
        ("agent-a", 3, 350, None, None), ("agent-b", 2, 1, None, None)]

    full = await store.usage_report(group_by=[UsageGroup.day, UsageGroup.version, UsageGroup.agent])
    keys = [(r.agent_id, r.config_version, r.day.isoformat() if r.day else None, r.sessions) for r in full.rows]
    assert sorted(keys) == [
        ("agent-a", 1, "2031-03-01", 1), ("agent-a", 1, "2031-03-02", 1), ("agent-a", 2, "2031-03-02", 1),
        ("agent-b", 1, "2031-03-01", 1), ("agent-b", 1, "2031-03-05", 1)]
    assert full.total.sessions == 5 and full.total.cost_usd == pytest.approx(row.cost_usd)

    by_day = await store.usage_report(group_by=[UsageGroup.day], agent_id="agent-a")
    assert [(r.day.isoformat(), r.sessions, r.llm_input_tokens) for r in by_day.rows] == [
        ("2031-03-01", 1, 100), ("2031-03-02", 2, 250)]

    window = await store.usage_report(group_by=[UsageGroup.version], since=d2, until=d2 + timedelta(days=1))
    assert [(r.config_version, r.sessions) for r in window.rows] == [(1, 1), (2, 1)]
    assert window.total.sessions == 2

    empty = await store.usage_report(group_by=[UsageGroup.agent], agent_id="nobody")
    assert empty.rows == [] and empty.total.sessions == 0 and empty.total.cost_usd == 0


async def test_usage_report_with_no_sessions(store):
    report = await store.usage_report(group_by=[])
    assert report.rows == [] and report.total.sessions == 0


# ------------------------------------------------------------------ the journal


async def test_a_finished_analysis_commits_its_session_analyzed_event(store):
    await ended_with_analysis(store, "s-1")
    [claim] = await store.claim_analyses("me", lease_s=30, limit=5)
    done = pending().finished("done", now_ms(), attempts=1, summary="Ada asked about a refund.",
                              success=SuccessVerdict(passed=True, reason="noted"), extracted={"a.b": 1})
    assert await store.finish_analysis(claim, done) is True
    events, total = await store.list_events(types=["session.analyzed"])
    assert total == 1
    data = events[0].data
    assert (data["session_id"], data["status"], data["summary"]) == ("s-1", "done", "Ada asked about a refund.")
    assert data["extracted"] == {"a.b": 1} and data["success"] == {"passed": True, "reason": "noted"}
    assert events[0].agent_id == "support-agent"
    assert (await store.get_event(events[0].id)).rendered  # complete at commit: nothing to render later


async def test_a_lost_lease_stores_neither_the_result_nor_its_event(store):
    await ended_with_analysis(store, "s-1")
    [old] = await store.claim_analyses("a", lease_s=0.05, limit=5)
    await asyncio.sleep(0.1)
    [new] = await store.claim_analyses("b", lease_s=30, limit=5)
    failed = pending().finished("failed", now_ms(), attempts=3, error="3 attempt(s) failed; last: not JSON")
    assert await store.finish_analysis(old, failed) is False
    assert (await store.list_events(types=["session.analyzed"]))[1] == 0
    assert await store.finish_analysis(new, failed) is True
    [event], _ = await store.list_events(types=["session.analyzed"])
    assert event.data["status"] == "failed" and "not JSON" in event.data["error"]
