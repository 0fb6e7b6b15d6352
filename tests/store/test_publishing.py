"""Publishing, drafts and canaries in the store contract: every test runs on SQLite,
PostgreSQL and MongoDB (SecantusDB), through `StoreService`.

Readings of the contract asserted here:
- a new agent's version 1 is published; a write whose config says `auto_publish` is
  published with it, one that says `auto_publish: false` is a draft (routing keeps the
  published version), and so is any write while a canary runs;
- `get_agent_config(id)` is the newest version (drafts included), `list_published` what
  routing hands out;
- publish of an unknown version is `NotFound`; while a canary runs publish, a second
  canary and rollback are `RolloutConflict`; promote/abort without one too;
- `expected_rev` is a compare-and-swap: of two publishers racing with the same
  revision exactly one wins, the other gets `ReleaseConflict`;
- publishes, canary starts, promotes and aborts are journal events with the actor;
- a pre-publish check refuses a publish (nothing changes) and leaves an auto-published
  write a draft.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pymongo
import pytest

from app.domain import (
    InvalidInput,
    NotFound,
    PublishRefused,
    ReleaseConflict,
    RolloutConflict,
    SessionRecord,
    SessionStatus,
)
from app.domain.events import ChangeContext
from app.domain.rollout import GuardPolicy
from app.store import ConfigStore
from tests.store.conftest import MakeAgent, OpenStore, StoreTarget

ALICE = ChangeContext(actor="alice", note="ship it")


async def _published(store: ConfigStore) -> dict[str, tuple[int, int | None]]:
    items, _ = await store.list_published()
    return {p.config.agent_id: (p.config.version, p.canary.version if p.canary else None) for p in items}


async def test_auto_publish_and_drafts(store: ConfigStore, make_agent: MakeAgent) -> None:
    await store.create_agent_config(make_agent("agent-a"))
    assert (await store.get_release("agent-a")).published_version == 1
    await store.update_agent_config("agent-a", {"description": "two"})  # auto_publish (default): live
    assert await _published(store) == {"agent-a": (2, None)}
    await store.update_agent_config("agent-a", {"auto_publish": False, "description": "three"})
    await store.update_agent_config("agent-a", {"description": "four"})
    release = await store.get_release("agent-a")
    assert (release.current_version, release.published_version, release.drafts) == (4, 2, [3, 4])
    assert (await store.get_agent_config("agent-a")).version == 4  # the newest, drafts included
    assert await _published(store) == {"agent-a": (2, None)}
    # publish a draft: routing hands it out
    release = await store.publish("agent-a", 4, ctx=ALICE)
    assert (release.published_version, release.rev, release.drafts) == (4, 2, [])  # v2 auto-published: 1
    assert await _published(store) == {"agent-a": (4, None)}
    # an older version can be published too (no new version is written)
    assert (await store.publish("agent-a", 1)).published_version == 1
    assert (await store.get_agent_config("agent-a")).version == 4
    # rollback publishes whatever auto_publish says
    rolled = await store.rollback("agent-a", 3)
    assert rolled.version == 5 and (await store.get_release("agent-a")).published_version == 5
    events, _ = await store.list_events(types=["agent.published"])
    assert [(e.data["version"], e.data["previous_version"], e.actor) for e in events] == [(1, 4, None), (4, 2, "alice")]


async def test_publish_refuses_unknown_versions_and_agents(store: ConfigStore, make_agent: MakeAgent) -> None:
    await store.create_agent_config(make_agent("agent-a"))
    for version in (2, 99):
        with pytest.raises(NotFound):
            await store.publish("agent-a", version)
        with pytest.raises(NotFound):
            await store.publish("agent-a", version, canary_percent=10)
    with pytest.raises(NotFound):
        await store.publish("nobody", 1)
    with pytest.raises(NotFound):
        await store.get_release("nobody")
    for bad in (0, 100, -5):
        with pytest.raises(InvalidInput):
            await store.publish("agent-a", 1, canary_percent=bad)
    with pytest.raises(InvalidInput):  # a canary of what is already published
        await store.publish("agent-a", 1, canary_percent=10)
    assert (await store.get_release("agent-a")).rev == 0  # nothing changed


async def test_canary_lifecycle(store: ConfigStore, make_agent: MakeAgent) -> None:
    await store.create_agent_config(make_agent("agent-a", auto_publish=False))
    await store.update_agent_config("agent-a", {"description": "v2"})
    release = await store.publish("agent-a", 2, canary_percent=20, ctx=ALICE)
    canary = release.canary
    assert canary is not None and (canary.version, canary.stable_version, canary.percent) == (2, 1, 20)
    assert canary.started_by == "alice" and release.published_version == 1
    assert await _published(store) == {"agent-a": (1, 2)}
    [listed], _ = await store.list_published()
    assert listed.rollout is not None and listed.rollout.id == canary.id

    # while it runs: no publish, no second canary, no rollback; writes are drafts
    for attempt in (store.publish("agent-a", 1), store.publish("agent-a", 2, canary_percent=50),
                    store.rollback("agent-a", 1)):
        with pytest.raises(RolloutConflict):
            await attempt
    await store.update_agent_config("agent-a", {"auto_publish": True, "description": "v3"})
    assert (await store.get_release("agent-a")).published_version == 1
    assert await _published(store) == {"agent-a": (1, 2)}

    promoted = await store.promote_canary("agent-a", ctx=ALICE)
    assert promoted.published_version == 2 and promoted.canary is None
    assert promoted.rollout is not None and promoted.rollout.status == "promoted"
    assert await _published(store) == {"agent-a": (2, None)}
    with pytest.raises(RolloutConflict):
        await store.promote_canary("agent-a")
    with pytest.raises(RolloutConflict):
        await store.abort_canary("agent-a")

    second = await store.publish("agent-a", 3, canary_percent=5)
    aborted = await store.abort_canary("agent-a", reason="sounded rude", ctx=ALICE)
    assert aborted.published_version == 2 and aborted.canary is None
    assert aborted.rollout is not None and aborted.rollout.id == second.rollout.id  # type: ignore[union-attr]
    assert (aborted.rollout.status, aborted.rollout.reason, aborted.rollout.ended_by) == ("aborted", "sounded rude", "alice")
    assert await _published(store) == {"agent-a": (2, None)}

    events, _ = await store.list_events(types=["rollout.started", "rollout.promoted", "rollout.aborted"])
    assert [e.type for e in reversed(events)] == ["rollout.started", "rollout.promoted", "rollout.started",
                                                  "rollout.aborted"]
    assert events[0].data["reason"] == "sounded rude" and events[0].actor == "alice"
    assert events[0].data["automatic"] is False


async def test_racing_publishers_one_wins(store: ConfigStore, open_another: OpenStore, make_agent: MakeAgent) -> None:
    await store.create_agent_config(make_agent("agent-a", auto_publish=False))
    await store.update_agent_config("agent-a", {"description": "v2"})
    await store.update_agent_config("agent-a", {"description": "v3"})
    other = await open_another()
    rev = (await store.get_release("agent-a")).rev
    results = await asyncio.gather(
        store.publish("agent-a", 2, canary_percent=10, expected_rev=rev),
        other.publish("agent-a", 3, expected_rev=rev),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert len(wins) == 1 and len(losses) == 1
    assert isinstance(losses[0], ReleaseConflict)
    release = await store.get_release("agent-a")
    assert release.rev == rev + 1
    assert (release.published_version, release.canary) in ((1, release.canary), (3, None))
    with pytest.raises(ReleaseConflict):  # a stale revision is refused
        await store.publish("agent-a", 1, expected_rev=rev)


async def test_publish_checks(store: ConfigStore, make_agent: MakeAgent) -> None:
    asked: list[tuple[str, int]] = []

    async def only_even(agent_id: str, version: int) -> None:
        asked.append((agent_id, version))
        if version % 2:
            raise PublishRefused(f"version {version} has failing tests", ["greets", "collects order"])

    await store.create_agent_config(make_agent("agent-a"))
    store.add_publish_check(only_even)
    await store.update_agent_config("agent-a", {"description": "v2"})
    await store.update_agent_config("agent-a", {"description": "v3"})  # refused: stays a draft
    assert (await store.get_release("agent-a")).published_version == 2
    with pytest.raises(PublishRefused) as refused:
        await store.publish("agent-a", 3)
    assert refused.value.failing == ["greets", "collects order"]
    with pytest.raises(PublishRefused):
        await store.publish("agent-a", 3, canary_percent=10)
    assert (await store.get_release("agent-a")).rev == 1  # only v2's auto-publish moved it
    assert asked == [("agent-a", 2), ("agent-a", 3), ("agent-a", 3), ("agent-a", 3)]


async def test_rollout_figures_per_arm(store: ConfigStore, make_agent: MakeAgent) -> None:
    await store.create_agent_config(make_agent("agent-a", auto_publish=False))  # requires order_id
    await store.update_agent_config("agent-a", {"description": "v2"})
    release = await store.publish("agent-a", 2, canary_percent=50)
    assert release.canary is not None
    before = SessionRecord(session_id="old", room="r", agent_id="agent-a", config_version=1, arm="stable",
                           started_at=release.canary.started_at - timedelta(seconds=5))
    await store.start_session(before)  # before the canary: not counted

    async def session(sid: str, arm: str, version: int, *, collected: bool, status: SessionStatus,
                      reason: str | None = None, tool_error: bool = False, handoff: bool = False) -> None:
        await store.start_session(SessionRecord(session_id=sid, room="r", agent_id="agent-a",
                                                config_version=version, arm=arm))  # type: ignore[arg-type]
        if collected:
            await store.record_data(sid, {"order_id": "A-1"})
        if tool_error:
            await store.update_session(sid, events=[{"kind": "tool_error", "detail": "lookup_order"}])
        if handoff:
            from app.domain import Handoff

            await store.record_handoff(sid, Handoff(from_agent="agent-a", to_agent="agent-b"))
        await store.update_session(sid, metrics=[{"total_ms": 100.0 + len(sid)}, {"total_ms": 300.0}])
        if status != SessionStatus.active:
            await store.finish_session(sid, status, reason)

    for i in range(4):
        await session(f"s{i}", "stable", 1, collected=True, status=SessionStatus.completed)
    await session("c0", "canary", 2, collected=True, status=SessionStatus.completed, tool_error=True)
    await session("c1", "canary", 2, collected=False, status=SessionStatus.completed, handoff=True)
    await session("c2", "canary", 2, collected=False, status=SessionStatus.failed, reason="llm_unavailable")
    await session("c3", "canary", 2, collected=False, status=SessionStatus.active)  # still running

    report = await store.rollout_report("agent-a", GuardPolicy(min_sessions=3, margin=0.0))
    stable, canary = report.stable, report.canary
    assert stable is not None and canary is not None
    assert (stable.sessions, stable.finished, stable.completed, stable.required_complete) == (4, 4, 4, 4)
    assert (canary.sessions, canary.finished, canary.completed, canary.required_complete) == (4, 3, 2, 1)
    assert (canary.tool_errors, canary.handoffs, canary.llm_failures) == (1, 1, 1)
    assert (stable.tool_errors, stable.handoffs, stable.llm_failures) == (0, 0, 0)
    assert stable.turns == 8 and stable.turn_p50_ms == 102.0 and stable.turn_p95_ms == 300.0
    assert report.verdict is not None and report.verdict.ready
    assert not report.truncated
    # too few sessions for the default policy: no verdict yet
    default = await store.rollout_report("agent-a")
    assert default.verdict is not None and not default.verdict.ready and not default.verdict.worse


async def test_an_agent_from_before_publishing_is_published_at_its_current_version(
    store: ConfigStore, store_target: StoreTarget, make_agent: MakeAgent
) -> None:
    """A head written by a build without publishing has no release fields (SQL: NULL and
    the column default; Mongo: absent): its current version is what is published."""
    await store.create_agent_config(make_agent("agent-a"))
    await store.update_agent_config("agent-a", {"description": "v2"})
    if store_target.backend == "mongo":
        client: pymongo.AsyncMongoClient[dict[str, Any]] = pymongo.AsyncMongoClient(store_target.url)
        try:
            await client.get_default_database().agent_heads.update_one(
                {"_id": "agent-a"}, {"$unset": {"published_version": "", "release_rev": "", "rollout": ""}})
        finally:
            await client.close()
    else:
        from sqlalchemy.ext.asyncio import create_async_engine

        from app.store.sql.tables import heads_t

        engine = create_async_engine(store_target.url)
        try:
            async with engine.begin() as conn:
                await conn.execute(heads_t.update().values(published_version=None, release_rev=0, rollout=None))
        finally:
            await engine.dispose()
    fresh = store_target.new_store()  # another process: nothing memoised
    await fresh.start()
    try:
        release = await fresh.get_release("agent-a")
        assert (release.published_version, release.current_version, release.rev, release.rollout) == (2, 2, 0, None)
        assert await _published(fresh) == {"agent-a": (2, None)}
        await fresh.update_agent_config("agent-a", {"description": "v3"})  # auto-publish works on it
        assert (await fresh.get_release("agent-a")).published_version == 3
        assert (await fresh.publish("agent-a", 1, canary_percent=10)).canary is not None
    finally:
        await fresh.aclose()
