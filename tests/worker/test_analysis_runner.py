"""The post-call analysis runner against a real SQLite store and the scripted
OpenAI-compatible endpoint (the real LiveKit OpenAI plugin builds every request):
structured output asked for and validated, invalid answers retried then failed with a
reason, timeouts and endpoint errors bounded, leases shared fairly between runners, and
results stored only by the lease holder."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from app.domain import SessionRecord, SessionStatus, Turn
from app.domain.analysis import AnalysisConfig, AnalysisRequest, AnalysisStatus, SessionAnalysis
from app.domain.pricing import PriceTable
from app.domain.values import utcnow
from app.settings import Settings
from app.store.base import FinishSession, UpdateSession
from app.store.sql import SQLStore
from app.worker.analysis import MAX_CLAIMS, AnalysisRunner
from sim.fake_openai import CapturedRequest, FakeOpenAI, ScriptedText, Usage

SETTINGS = AnalysisConfig(
    summary_prompt="One sentence: why they called and how it ended.",
    success_criteria="The caller's order number was recorded.",
    extraction_schema={
        "type": "object",
        "$defs": {"reason": {"type": "string", "enum": ["late", "damaged", "other"]}},
        "properties": {"refund_requested": {"type": "boolean"}, "reason": {"$ref": "#/$defs/reason"}},
        "required": ["refund_requested"],
        "additionalProperties": False,
    },
    timeout_s=5,
    max_attempts=3,
)
GOOD = {
    "summary": "Ada called about a late order and was promised a refund.",
    "success": {"passed": True, "reason": "The order number AB123456 was recorded."},
    "extracted": {"refund_requested": True, "reason": "late"},
}


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/a.db")
    await s.start()
    yield s
    await s.aclose()


def settings() -> Settings:
    return Settings(_env_file=None, analysis_poll_interval=0.2)  # type: ignore[call-arg]


async def ended_session(
    store: SQLStore, sid: str, *, config: AnalysisConfig = SETTINGS, turns: bool = True, model: str = "gpt-4.1-mini"
) -> None:
    await store.start_session(SessionRecord(session_id=sid, room="r", agent_id="support-agent-v1", config_version=4))
    if turns:
        for seq, (role, text) in enumerate([
            ("assistant", "Acme support, how can I help?"),
            ("user", f"Hi, this is Ada ({sid}). My order AB123456 is late, I want a refund."),
            ("assistant", "Sorry about that, Ada. I've noted AB123456 and asked for a refund."),
        ]):
            await store.append_turn(sid, Turn(seq=seq, role=role, text=text, agent_id="support-agent-v1"))
        await store.record_data(sid, {"order_id": "AB123456"})
    request = AnalysisRequest(agent_id="support-agent-v1", config_version=4, settings=config, model=model)
    await store.apply_session_writes(sid, [
        UpdateSession({"analysis": SessionAnalysis(status=AnalysisStatus.pending, request=request,
                                                   requested_at=utcnow())}),
        FinishSession(SessionStatus.completed, "caller hung up"),
    ])


def runner(store: SQLStore, fake: FakeOpenAI, **kw: Any) -> AnalysisRunner:
    s = settings()
    return AnalysisRunner(s, store, owner=kw.pop("owner", "test-owner"), prices=PriceTable.from_settings(s),
                          llm_client=fake.client(), **kw)


async def analysed(store: SQLStore, fake: FakeOpenAI, sid: str, **kw: Any) -> SessionAnalysis:
    r = runner(store, fake, **kw)
    r.start()
    try:
        result = await r.wait_for(sid, 30)
    finally:
        await r.aclose()
    assert result is not None
    assert (await store.get_session(sid)).analysis == result  # what the runner returns is what is stored
    return result


async def test_a_valid_answer_is_stored_with_its_tokens_and_cost(store: SQLStore) -> None:
    await ended_session(store, "s-1")
    fake = FakeOpenAI().text(json.dumps(GOOD), usage=Usage(prompt_tokens=1200, completion_tokens=80, cached_tokens=200))
    result = await analysed(store, fake, "s-1")
    assert result.status == AnalysisStatus.done and result.attempts == 1
    assert result.summary == GOOD["summary"]
    assert result.success is not None and result.success.passed and "AB123456" in result.success.reason
    assert result.extracted == GOOD["extracted"]
    assert (result.input_tokens, result.output_tokens) == (1200, 80)
    assert result.cost_usd == pytest.approx((1200 * 0.40 + 80 * 1.60) / 1e6)  # gpt-4.1-mini's list price
    assert result.request.config_version == 4 and result.finished_at is not None
    # what the model was asked: structured output with the schema, the transcript and the data
    [req] = fake.requests
    fmt = req.body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is False
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["summary", "success", "extracted"]
    assert schema["properties"]["extracted"]["properties"]["reason"] == {"$ref": "#/properties/extracted/$defs/reason"}
    assert req.body["model"] == "gpt-4.1-mini"
    text = json.dumps(req.messages)
    assert "Caller: Hi, this is Ada (s-1)" in text and "Agent: Acme support" in text
    assert "AB123456" in text and SETTINGS.success_criteria in text and "caller hung up" in text


async def test_garbage_is_retried_with_the_reason_then_accepted(store: SQLStore) -> None:
    await ended_session(store, "s-1")
    fake = FakeOpenAI().text("Sure! Here is the analysis you asked for.").text(json.dumps(GOOD))
    result = await analysed(store, fake, "s-1")
    assert result.status == AnalysisStatus.done and result.attempts == 2
    retry = fake.requests[1].messages
    assert retry[-2] == {"role": "assistant", "content": "Sure! Here is the analysis you asked for."}
    assert "invalid (not JSON" in retry[-1]["content"]


@pytest.mark.parametrize(("answers", "reason"), [
    (["not json at all"] * 3, "not JSON"),
    (['["a", "list"]'] * 3, "not a JSON object"),
    ([json.dumps({"summary": "x"})] * 3, "missing extracted, success"),
    ([json.dumps({**GOOD, "extracted": {"refund_requested": "yes"}})] * 3, "extracted does not match its schema"),
    ([json.dumps({**GOOD, "extracted": {"refund_requested": True, "reason": "bored"}})] * 3, "'bored' is not one of"),
    ([json.dumps({**GOOD, "success": {"passed": "maybe", "reason": "?"}})] * 3, "success must be"),
    ([json.dumps({**GOOD, "mood": "happy"})] * 3, "unexpected mood"),
])
async def test_a_model_answering_garbage_is_failed_with_the_reason(
    store: SQLStore, answers: list[str], reason: str
) -> None:
    await ended_session(store, "s-1")
    fake = FakeOpenAI()
    for a in answers:
        fake.text(a)
    result = await analysed(store, fake, "s-1")
    assert result.status == AnalysisStatus.failed and result.attempts == 3
    assert result.error is not None and reason in result.error and result.error.startswith("3 attempt(s) failed")
    assert result.summary is None and result.extracted is None
    assert len(fake.requests) == 3 and fake.pending == 0


async def test_timeouts_and_endpoint_errors_are_bounded_and_failed(store: SQLStore) -> None:
    quick = SETTINGS.model_copy(update={"timeout_s": 0.3, "max_attempts": 2})
    await ended_session(store, "s-slow", config=quick)
    slow = FakeOpenAI(delays={"chat": 2.0}).text(json.dumps(GOOD)).text(json.dumps(GOOD))
    t0 = asyncio.get_running_loop().time()
    result = await analysed(store, slow, "s-slow")
    assert asyncio.get_running_loop().time() - t0 < 3.0  # 2 × 0.3 s, not 2 × 2 s
    assert result.status == AnalysisStatus.failed and "no answer within 0.3 s" in (result.error or "")

    await ended_session(store, "s-500", config=quick)
    broken = FakeOpenAI().error(500, "upstream exploded").error(503, "busy")
    result = await analysed(store, broken, "s-500")
    assert result.status == AnalysisStatus.failed and result.attempts == 2
    assert "the model endpoint failed" in (result.error or "")


async def test_a_call_where_the_caller_said_nothing_is_not_sent_to_the_model(store: SQLStore) -> None:
    await ended_session(store, "s-1", turns=False)
    fake = FakeOpenAI()
    result = await analysed(store, fake, "s-1")
    assert result.status == AnalysisStatus.failed and "the caller said nothing" in (result.error or "")
    assert fake.requests == []


async def test_only_the_asked_parts_are_asked_and_an_unpriced_model_has_no_cost(store: SQLStore) -> None:
    await ended_session(store, "s-1", config=AnalysisConfig(summary_prompt="Short."), model="house-model")
    fake = FakeOpenAI().text('{"summary": "Ada asked about an order."}')
    result = await analysed(store, fake, "s-1")
    assert result.status == AnalysisStatus.done and result.summary == "Ada asked about an order."
    assert result.success is None and result.extracted is None and result.cost_usd is None
    assert fake.requests[0].body["response_format"]["json_schema"]["schema"]["required"] == ["summary"]
    assert fake.requests[0].body["model"] == "house-model"


async def test_two_runners_on_one_store_analyse_each_session_exactly_once(store: SQLStore, tmp_path: Path) -> None:
    n = 12
    for i in range(n):
        await ended_session(store, f"s-{i:02d}")
    seen: list[str] = []

    def answer(req: CapturedRequest) -> ScriptedText:
        sid = json.dumps(req.messages).split("this is Ada (")[1].split(")")[0]
        seen.append(sid)
        return ScriptedText(json.dumps(GOOD))

    fake = FakeOpenAI([answer] * (2 * n), delays={"chat": 0.05})
    other = SQLStore(store.url)  # a second process on the same database
    await other.start()
    a, b = runner(store, fake, owner="a"), runner(other, fake, owner="b")
    a.start()
    b.start()
    try:
        for i in range(n):
            assert await a.wait_for(f"s-{i:02d}", 30) is not None
    finally:
        await a.aclose()
        await b.aclose()
        await other.aclose()
    assert sorted(seen) == [f"s-{i:02d}" for i in range(n)], "every session analysed exactly once"
    assert a.completed + b.completed == n and a.completed > 0 and b.completed > 0
    records, _ = await store.list_sessions(limit=50)
    assert {r.analysis.status for r in records if r.analysis} == {AnalysisStatus.done}


async def test_a_lease_left_by_a_dead_process_is_taken_over(store: SQLStore) -> None:
    await ended_session(store, "s-1")
    [dead] = await store.claim_analyses("crashed-process", lease_s=0.3, limit=1)  # claimed, never finished
    fake = FakeOpenAI().text(json.dumps(GOOD))
    result = await analysed(store, fake, "s-1")
    assert result.status == AnalysisStatus.done
    assert await store.finish_analysis(dead, result) is False  # the dead claim can no longer write


async def test_an_analysis_interrupted_too_often_is_failed_without_a_model_call(store: SQLStore) -> None:
    await ended_session(store, "s-1")
    for _ in range(MAX_CLAIMS):
        await store.claim_analyses("crashing", lease_s=0.01, limit=1)
        await asyncio.sleep(0.02)
    fake = FakeOpenAI()
    result = await analysed(store, fake, "s-1")
    assert result.status == AnalysisStatus.failed and f"interrupted {MAX_CLAIMS} times" in (result.error or "")
    assert fake.requests == []


async def test_shutdown_gives_the_lease_back_at_once(store: SQLStore) -> None:
    await ended_session(store, "s-1")
    slow = FakeOpenAI(delays={"chat": 10.0}).text(json.dumps(GOOD))
    r = runner(store, slow, lease_s=60)
    r.start()
    r.nudge()
    for _ in range(100):
        if r.running:
            break
        await asyncio.sleep(0.05)
    assert r.running == ["s-1"], "the analysis started"
    assert await store.claim_analyses("next", lease_s=30, limit=1) == []  # leased while it runs
    await r.aclose()
    # not 60 s later: another process can take it now
    [claim] = await store.claim_analyses("next", lease_s=30, limit=1)
    assert claim.record.session_id == "s-1" and claim.claims == 2
    assert (await store.get_session("s-1")).analysis.status == AnalysisStatus.pending


async def test_a_hook_hears_of_each_stored_result(store: SQLStore) -> None:
    await ended_session(store, "s-1")
    heard: list[tuple[str, AnalysisStatus]] = []

    async def hook(record: SessionRecord, analysis: SessionAnalysis) -> None:
        heard.append((record.session_id, analysis.status))

    r = runner(store, FakeOpenAI().text(json.dumps(GOOD)))
    r.finished_hooks.append(hook)
    r.start()
    try:
        await r.wait_for("s-1", 30)
    finally:
        await r.aclose()
    assert heard == [("s-1", AnalysisStatus.done)]


async def test_close_is_bounded_when_a_claim_swallows_the_cancel(tmp_path: Path) -> None:
    """A driver may catch the runner's cancellation mid-claim and carry on (pymongo on
    Python 3.11 does: `app.background`): `aclose` still returns, and the loop stops
    instead of claiming forever."""

    class Swallowing(SQLStore):
        claims = 0
        swallow = asyncio.Event()
        inside = asyncio.Event()

        async def claim_analyses(self, owner: str, *, lease_s: float, limit: int) -> list[Any]:
            self.claims += 1
            if self.swallow.is_set():
                self.swallow.clear()
                self.inside.set()
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    pass  # ... and the claim goes on as if nothing happened
            return await super().claim_analyses(owner, lease_s=lease_s, limit=limit)

    store = Swallowing(f"sqlite+aiosqlite:///{tmp_path}/a.db")
    await store.start()
    r = AnalysisRunner(settings(), store, owner="o", prices=PriceTable.defaults(), poll_interval=0.01)
    r.start()
    loop_task = r._task
    assert loop_task is not None
    try:
        store.swallow.set()
        await asyncio.wait_for(store.inside.wait(), 5)
        closer = asyncio.ensure_future(r.aclose())
        done, _ = await asyncio.wait({closer}, timeout=10)
        assert done, "aclose() waited for a loop that swallowed its cancellation"
        claims = store.claims
        await asyncio.sleep(0.2)
        assert store.claims == claims, "the loop went on claiming after aclose()"
    finally:
        loop_task.cancel()  # without the fix: stop it for good
        await store.aclose()
