"""The `ConfigStore` contract (app/store/base.py), run against every backend in conftest.BACKENDS.

Readings of the contract where the docstrings leave room (each is asserted below):

- `created_at` is when the agent was first created and is carried over to every later
  version; `updated_at` is when that version was written.
- `list_versions`, `delete_agent_config`, `rollback`, `update_agent_config` on an unknown
  agent, `get_route`/`delete_route` on an unknown purpose, and every session call on an
  unknown session id raise `NotFound`.
- A change listener is called exactly once per successful agent/route write, never for a
  failed write and never for session writes (it exists to invalidate the config cache).
- Changing `agent_id` through a patch or a replacement is rejected with `ValueError`
  (pydantic's `ValidationError` is one) or a `DomainError`.
- After a delete, re-creating the id starts a fresh history at version 1.
- `start_session` with an id that already exists raises `AlreadyExists`.
- `abandon_active_sessions(reason)` sets `status=abandoned`, `end_reason=reason` and
  `ended_at`; `finish_session` without `ended_at` stamps the current time.
- `apply_session_writes(id, ops)` leaves the same record as the per-op calls in order
  (of several `metrics` snapshots the last wins), ignores retried turns, and raises the
  per-op errors (`NotFound`, `AlreadyExists`, `InvalidInput`) without a partial write
  for the cases tested here.
- A session started with an `owner` gets `heartbeat_at` of at least the insert time;
  `heartbeat(owner)` stamps only that owner's active sessions; `abandon_stale_sessions`
  abandons active sessions whose `heartbeat_at` (else `started_at`) is before the cutoff.
- Datetimes are compared at millisecond precision (what BSON dates keep); values written
  with any UTC offset come back as the same instant, timezone-aware, in UTC.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from app.domain import (
    AgentConfig,
    AgentConfigInput,
    AlreadyExists,
    DomainError,
    Handoff,
    InUse,
    InvalidInput,
    InvalidReference,
    NotFound,
    NumberTaken,
    Route,
    ServedBy,
    SessionEvent,
    SessionOrder,
    SessionRecord,
    SessionStatus,
    SessionUsage,
    Turn,
    VersionConflict,
)
from app.domain.phone import CallInfo, VoicemailOutcome
from app.store import ConfigStore
from app.store.base import (
    AppendTurn,
    FinishSession,
    RecordData,
    RecordHandoff,
    SessionWrite,
    StartSession,
    UpdateSession,
)

# --------------------------------------------------------------------------- helpers


def ms(dt: datetime) -> datetime:
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def now_ms() -> datetime:
    return ms(datetime.now(UTC))


def assert_utc(dt: datetime | None) -> None:
    assert dt is not None
    assert dt.tzinfo is not None, f"{dt!r} is naive"
    offset = dt.utcoffset()
    assert offset is not None and offset.total_seconds() == 0, f"{dt!r} is not UTC"


def session(session_id: str, agent_id: str = "support-agent", **kw: Any) -> SessionRecord:
    kw.setdefault("room", f"room-{session_id}")
    kw.setdefault("started_at", now_ms())
    return SessionRecord(session_id=session_id, agent_id=agent_id, **kw)


def routes_key(routes: list[Route]) -> list[tuple[str, str, bool]]:
    return sorted((r.purpose, r.agent_id, r.is_default) for r in routes)


async def history(store: ConfigStore, agent_id: str) -> list[AgentConfig]:
    return await store.list_versions(agent_id)


# ----------------------------------------------------------------------- lifecycle


async def test_start_is_idempotent_and_ping_answers(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    await store.start()  # again: must neither fail nor wipe data
    await store.ping()
    assert (await store.get_agent_config("agent-a")).version == 1


async def test_store_satisfies_protocol(store):
    assert isinstance(store, ConfigStore)


# ------------------------------------------------------------------------ create / get


async def test_create_returns_version_1_with_timestamps(store, make_agent):
    before = now_ms() - timedelta(seconds=1)
    data = make_agent("support-agent")
    created = await store.create_agent_config(data)
    after = datetime.now(UTC) + timedelta(seconds=1)

    assert isinstance(created, AgentConfig)
    assert created.version == 1
    assert created.input() == data
    for ts in (created.created_at, created.updated_at):
        assert_utc(ts)
        assert before <= ts <= after
    assert created.created_at <= created.updated_at

    fetched = await store.get_agent_config("support-agent")
    assert fetched == created
    assert await store.get_agent_config("support-agent", version=1) == created


async def test_duplicate_create_raises_already_exists_and_keeps_original(store, make_agent):
    original = await store.create_agent_config(make_agent("agent-a", name="first"))
    with pytest.raises(AlreadyExists):
        await store.create_agent_config(make_agent("agent-a", name="second"))
    assert await store.get_agent_config("agent-a") == original
    assert [v.version for v in await history(store, "agent-a")] == [1]


async def test_get_unknown_agent_or_version_raises_not_found(store, make_agent):
    with pytest.raises(NotFound):
        await store.get_agent_config("no-such-agent")
    await store.create_agent_config(make_agent("agent-a"))
    with pytest.raises(NotFound):
        await store.get_agent_config("agent-a", version=2)
    with pytest.raises(NotFound):
        await store.get_agent_config("agent-a", version=0)


async def test_get_by_version_returns_that_version(store, make_agent):
    v1 = await store.create_agent_config(make_agent("agent-a", description="one"))
    v2 = await store.update_agent_config("agent-a", {"description": "two"})
    v3 = await store.update_agent_config("agent-a", {"description": "three"})
    assert await store.get_agent_config("agent-a", version=1) == v1
    assert await store.get_agent_config("agent-a", version=2) == v2
    assert await store.get_agent_config("agent-a", version=3) == v3
    assert await store.get_agent_config("agent-a") == v3


# ------------------------------------------------------------------------------ list


async def test_list_orders_by_id_filters_pages_and_counts(store, make_agent):
    for aid, enabled in [
        ("agent-d", True),
        ("agent-b", False),
        ("agent-e", True),
        ("agent-a", True),
        ("agent-c", False),
    ]:
        await store.create_agent_config(make_agent(aid, enabled=enabled))
    await store.update_agent_config("agent-a", {"description": "v2"})

    items, total = await store.list_agent_configs()
    assert total == 5
    assert [c.agent_id for c in items] == ["agent-a", "agent-b", "agent-c", "agent-d", "agent-e"]
    assert items[0].version == 2 and items[0].description == "v2"  # current versions only
    assert all(isinstance(c, AgentConfig) for c in items)

    items, total = await store.list_agent_configs(enabled=True)
    assert total == 3
    assert [c.agent_id for c in items] == ["agent-a", "agent-d", "agent-e"]

    items, total = await store.list_agent_configs(enabled=False)
    assert total == 2
    assert [c.agent_id for c in items] == ["agent-b", "agent-c"]

    items, total = await store.list_agent_configs(offset=1, limit=2)
    assert total == 5
    assert [c.agent_id for c in items] == ["agent-b", "agent-c"]

    items, total = await store.list_agent_configs(enabled=True, offset=2, limit=10)
    assert total == 3
    assert [c.agent_id for c in items] == ["agent-e"]

    items, total = await store.list_agent_configs(offset=10)
    assert (items, total) == ([], 5)


async def test_list_empty_store(store):
    assert await store.list_agent_configs() == ([], 0)


# ---------------------------------------------------------------------------- update


async def test_merge_patch_merges_nested_and_null_removes(store, make_agent):
    v1 = await store.create_agent_config(make_agent("agent-a"))
    patch = {
        "description": None,  # removed -> back to the default ""
        "llm": {"temperature": 0.2},  # nested merge: model stays
        "prompt_config": {
            "greeting": None,
            "variables": {"extra": None, "city": {"description": "Where", "default": "Paris"}},
        },
        "tts": {"voice": "nova"},
    }
    v2 = await store.update_agent_config("agent-a", patch)

    assert v2.version == 2
    assert v2.description == ""
    assert v2.llm.temperature == 0.2
    assert v2.llm.model == v1.llm.model == "gpt-4o-mini"
    assert v2.prompt_config.greeting is None
    assert v2.prompt_config.instructions == v1.prompt_config.instructions
    assert set(v2.prompt_config.variables) == {"customer_name", "city"}
    assert v2.prompt_config.variables["customer_name"] == v1.prompt_config.variables["customer_name"]
    assert v2.prompt_config.variables["city"].default == "Paris"
    assert v2.tts.voice == "nova" and v2.tts.speed == v1.tts.speed
    assert v2.tools == v1.tools and v2.schema_config == v1.schema_config
    assert v2.created_at == v1.created_at
    assert v2.updated_at >= v1.updated_at
    assert_utc(v2.updated_at)

    # the old version is immutable
    assert await store.get_agent_config("agent-a", version=1) == v1
    assert await store.get_agent_config("agent-a") == v2
    assert await history(store, "agent-a") == [v1, v2]


async def test_update_with_full_replacement(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    replacement = AgentConfigInput(
        agent_id="agent-a",
        name="Replaced",
        prompt_config={"instructions": "Just be nice."},
    )
    v2 = await store.update_agent_config("agent-a", replacement)
    assert v2.version == 2
    assert v2.input() == replacement
    # everything not in the replacement went back to the defaults
    assert v2.tools == [] and v2.prompt_config.variables == {} and v2.llm.model is None
    assert (await store.get_agent_config("agent-a")).input() == replacement


async def test_update_with_matching_expected_version(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    v2 = await store.update_agent_config("agent-a", {"name": "N2"}, expected_version=1)
    v3 = await store.update_agent_config("agent-a", make_agent("agent-a", name="N3"), expected_version=2)
    assert (v2.version, v2.name, v3.version, v3.name) == (2, "N2", 3, "N3")


async def test_expected_version_mismatch_conflicts_and_writes_nothing(store, make_agent):
    v1 = await store.create_agent_config(make_agent("agent-a"))
    with pytest.raises(VersionConflict) as exc:
        await store.update_agent_config("agent-a", {"name": "x"}, expected_version=5)
    assert exc.value.expected == 5
    assert exc.value.actual == 1
    with pytest.raises(VersionConflict) as exc:
        await store.update_agent_config("agent-a", make_agent("agent-a", name="y"), expected_version=0)
    assert (exc.value.expected, exc.value.actual) == (0, 1)
    assert await history(store, "agent-a") == [v1]


@pytest.mark.parametrize(
    "patch",
    [
        {"prompt_config": {"instructions": "Hi {undeclared}"}},  # template uses unknown var
        {"name": ""},
        {"bogus_field": 1},  # unknown fields are errors
        {"schema_config": {"type": "array"}},
        {"llm": {"temperature": 7}},
        {"prompt_config": None},  # removes a required section
        {"tools": [{"type": "builtin", "name": "transfer"}]},  # transfer without handoffs
    ],
)
async def test_invalid_patch_raises_validation_error_and_writes_nothing(store, make_agent, patch):
    v1 = await store.create_agent_config(make_agent("agent-a"))
    with pytest.raises(ValidationError):
        await store.update_agent_config("agent-a", patch)
    assert await history(store, "agent-a") == [v1]
    assert await store.get_agent_config("agent-a") == v1


async def test_patch_cannot_change_agent_id(store, make_agent):
    v1 = await store.create_agent_config(make_agent("agent-a"))
    with pytest.raises((ValueError, DomainError)):
        await store.update_agent_config("agent-a", {"agent_id": "agent-b"})
    with pytest.raises((ValueError, DomainError)):
        await store.update_agent_config("agent-a", make_agent("agent-b"))
    assert await history(store, "agent-a") == [v1]
    with pytest.raises(NotFound):
        await store.get_agent_config("agent-b")
    # naming the same id is fine
    v2 = await store.update_agent_config("agent-a", {"agent_id": "agent-a", "name": "same id"})
    assert v2.version == 2


async def test_update_unknown_agent_raises_not_found(store, make_agent):
    with pytest.raises(NotFound):
        await store.update_agent_config("ghost-agent", {"name": "x"})
    with pytest.raises(NotFound):
        await store.update_agent_config("ghost-agent", make_agent("ghost-agent"))
    with pytest.raises(NotFound):
        await store.get_agent_config("ghost-agent")


# ------------------------------------------------------------------------ concurrency


def _outcomes(results: list[Any]) -> tuple[list[AgentConfig], list[VersionConflict]]:
    unexpected = [r for r in results if not isinstance(r, AgentConfig | VersionConflict)]
    assert not unexpected, f"only successes or VersionConflict allowed, got {unexpected!r}"
    ok = [r for r in results if isinstance(r, AgentConfig)]
    conflicts = [r for r in results if isinstance(r, VersionConflict)]
    return ok, conflicts


async def test_concurrent_updates_same_expected_version_exactly_one_wins(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    results = await asyncio.gather(
        *(
            store.update_agent_config("agent-a", {"description": f"writer {i}"}, expected_version=1)
            for i in range(10)
        ),
        return_exceptions=True,
    )
    ok, conflicts = _outcomes(results)
    assert len(ok) == 1, results
    assert len(conflicts) == 9
    assert ok[0].version == 2
    for c in conflicts:
        assert c.expected == 1
        assert c.actual is None or c.actual >= 2
    versions = await history(store, "agent-a")
    assert [v.version for v in versions] == [1, 2]
    assert versions[1] == ok[0]
    assert await store.get_agent_config("agent-a") == ok[0]


def _check_chain(base_vars: set[str], ok: list[tuple[int, AgentConfig]], versions: list[AgentConfig]):
    """Each writer i added variable v{i}; a version must hold exactly the variables of the
    writers up to it: no duplicate version, no gap, no lost update."""
    assert [v.version for v in versions] == list(range(1, len(versions) + 1))
    assert len(versions) == 1 + len(ok)
    got = sorted(r.version for _, r in ok)
    assert len(set(got)) == len(got), f"two writers were given the same version: {got}"
    assert got == list(range(2, len(versions) + 1))
    by_version = {r.version: i for i, r in ok}
    expected = set(base_vars)
    for v in versions[1:]:
        expected = expected | {f"v{by_version[v.version]}"}
        assert set(v.prompt_config.variables) == expected, f"version {v.version} lost an update"
    for _, r in ok:
        assert versions[r.version - 1] == r


async def test_concurrent_updates_without_expected_version_never_lose_or_duplicate(store, make_agent):
    v1 = await store.create_agent_config(make_agent("agent-a"))
    n = 10

    async def writer(i: int) -> AgentConfig:
        return await store.update_agent_config(
            "agent-a", {"prompt_config": {"variables": {f"v{i}": {"description": str(i)}}}}
        )

    results = await asyncio.gather(*(writer(i) for i in range(n)), return_exceptions=True)
    ok_results, _ = _outcomes(results)
    assert ok_results, "at least one unconditional update must succeed"
    ok = [(i, r) for i, r in enumerate(results) if isinstance(r, AgentConfig)]
    _check_chain(set(v1.prompt_config.variables), ok, await history(store, "agent-a"))


async def test_concurrent_updates_from_two_instances(store, open_another, make_agent):
    """Two store instances on one database behave like two processes."""
    other = await open_another()
    v1 = await store.create_agent_config(make_agent("agent-a"))
    n = 10

    async def writer(i: int) -> AgentConfig:
        s = store if i % 2 else other
        return await s.update_agent_config(
            "agent-a", {"prompt_config": {"variables": {f"v{i}": {"description": str(i)}}}}
        )

    results = await asyncio.gather(*(writer(i) for i in range(n)), return_exceptions=True)
    ok_results, _ = _outcomes(results)
    assert ok_results
    ok = [(i, r) for i, r in enumerate(results) if isinstance(r, AgentConfig)]
    _check_chain(set(v1.prompt_config.variables), ok, await history(store, "agent-a"))
    assert await other.get_agent_config("agent-a") == await store.get_agent_config("agent-a")

    # and with expected_version across instances: exactly one winner
    current = (await store.get_agent_config("agent-a")).version
    results = await asyncio.gather(
        *(
            (store if i % 2 else other).update_agent_config(
                "agent-a", {"description": f"cas {i}"}, expected_version=current
            )
            for i in range(6)
        ),
        return_exceptions=True,
    )
    ok_results, conflicts = _outcomes(results)
    assert len(ok_results) == 1 and len(conflicts) == 5, results
    assert ok_results[0].version == current + 1
    assert [v.version for v in await history(store, "agent-a")] == list(range(1, current + 2))


async def test_concurrent_creates_of_same_id_one_wins(store, make_agent):
    results = await asyncio.gather(
        *(store.create_agent_config(make_agent("agent-a", name=f"n{i}")) for i in range(8)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, AgentConfig)]
    assert len(ok) == 1, results
    assert all(isinstance(r, AlreadyExists) for r in results if r is not ok[0]), results
    assert await history(store, "agent-a") == ok


# ------------------------------------------------------------------ versions / rollback


async def test_list_versions_oldest_first(store, make_agent):
    v1 = await store.create_agent_config(make_agent("agent-a"))
    v2 = await store.update_agent_config("agent-a", {"name": "two"})
    v3 = await store.update_agent_config("agent-a", {"name": "three"})
    assert await history(store, "agent-a") == [v1, v2, v3]
    with pytest.raises(NotFound):
        await store.list_versions("ghost-agent")


async def test_rollback_writes_old_content_as_new_version(store, make_agent):
    v1 = await store.create_agent_config(make_agent("agent-a", description="one"))
    v2 = await store.update_agent_config("agent-a", {"description": "two", "tools": []})
    v3 = await store.update_agent_config("agent-a", {"description": "three", "enabled": False})

    v4 = await store.rollback("agent-a", 1)
    assert v4.version == 4
    assert v4.input() == v1.input()
    assert v4.created_at == v1.created_at
    assert v4.updated_at >= v3.updated_at
    assert await store.get_agent_config("agent-a") == v4
    assert await history(store, "agent-a") == [v1, v2, v3, v4]

    with pytest.raises(VersionConflict) as exc:
        await store.rollback("agent-a", 2, expected_version=3)
    assert (exc.value.expected, exc.value.actual) == (3, 4)
    assert [v.version for v in await history(store, "agent-a")] == [1, 2, 3, 4]

    v5 = await store.rollback("agent-a", 2, expected_version=4)
    assert v5.version == 5 and v5.input() == v2.input()

    with pytest.raises(NotFound):
        await store.rollback("agent-a", 99)
    with pytest.raises(NotFound):
        await store.rollback("ghost-agent", 1)
    assert [v.version for v in await history(store, "agent-a")] == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------- delete


async def test_delete_removes_every_version(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    await store.update_agent_config("agent-a", {"name": "two"})
    other = await store.create_agent_config(make_agent("agent-b"))

    await store.delete_agent_config("agent-a")

    for call in (
        lambda: store.get_agent_config("agent-a"),
        lambda: store.get_agent_config("agent-a", version=1),
        lambda: store.list_versions("agent-a"),
        lambda: store.update_agent_config("agent-a", {"name": "x"}),
        lambda: store.rollback("agent-a", 1),
        lambda: store.delete_agent_config("agent-a"),
    ):
        with pytest.raises(NotFound):
            await call()
    assert await store.list_agent_configs() == ([other], 1)


async def test_delete_with_expected_version(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    await store.update_agent_config("agent-a", {"name": "two"})
    with pytest.raises(VersionConflict) as err:
        await store.delete_agent_config("agent-a", expected_version=1)
    assert err.value.actual == 2
    assert (await store.get_agent_config("agent-a")).version == 2  # nothing deleted
    with pytest.raises(NotFound):
        await store.delete_agent_config("nobody", expected_version=1)
    await store.delete_agent_config("agent-a", expected_version=2)
    with pytest.raises(NotFound):
        await store.get_agent_config("agent-a")


async def test_delete_racing_an_update_never_deletes_the_unseen_version(store, open_another, make_agent):
    """A delete that saw version N and an update to N+1 from another process: either the
    update lands first and the delete conflicts, or the delete lands and the update finds
    nothing; never an N+1 deleted by a client that only saw N."""
    other = await open_another()
    for rnd in range(6):
        aid = f"race-{rnd}"
        await store.create_agent_config(make_agent(aid))
        upd, dele = await asyncio.gather(
            other.update_agent_config(aid, {"name": f"v2 {rnd}"}),
            store.delete_agent_config(aid, expected_version=1),
            return_exceptions=True,
        )
        if isinstance(dele, VersionConflict):
            assert isinstance(upd, AgentConfig) and upd.version == 2
            assert (await store.get_agent_config(aid)).version == 2
        else:
            assert dele is None, dele
            assert isinstance(upd, NotFound | VersionConflict), upd
            with pytest.raises(NotFound):
                await store.get_agent_config(aid)


async def test_recreate_after_delete_starts_at_version_1(store, make_agent):
    old = await store.create_agent_config(make_agent("agent-a", name="old"))
    await store.update_agent_config("agent-a", {"name": "old two"})
    await store.delete_agent_config("agent-a")

    new = await store.create_agent_config(make_agent("agent-a", name="new"))
    assert new.version == 1
    assert new.name == "new"
    assert new.created_at >= old.created_at
    assert await history(store, "agent-a") == [new]
    with pytest.raises(NotFound):
        await store.get_agent_config("agent-a", version=2)


async def test_delete_agent_used_by_route_raises_in_use(store, make_agent):
    v1 = await store.create_agent_config(make_agent("agent-a"))
    await store.put_route(Route(purpose="billing_line", agent_id="agent-a"))
    with pytest.raises(InUse) as exc:
        await store.delete_agent_config("agent-a")
    assert "billing_line" in exc.value.message
    assert await store.get_agent_config("agent-a") == v1
    assert await history(store, "agent-a") == [v1]

    await store.delete_route("billing_line")
    await store.delete_agent_config("agent-a")
    with pytest.raises(NotFound):
        await store.get_agent_config("agent-a")


async def test_delete_agent_keeps_its_sessions(store, make_agent):
    """Deleting an agent leaves running sessions (and their records) alone."""
    await store.create_agent_config(make_agent("agent-a"))
    await store.start_session(session("s-1", "agent-a", config_version=1))
    await store.append_turn("s-1", Turn(seq=0, role="user", text="hi"))
    await store.delete_agent_config("agent-a")
    rec = await store.get_session("s-1")
    assert rec.agent_id == "agent-a" and [t.text for t in rec.turns] == ["hi"]
    await store.append_turn("s-1", Turn(seq=1, role="assistant", text="hello"))
    await store.finish_session("s-1", SessionStatus.completed, reason="done")
    assert (await store.get_session("s-1")).status == SessionStatus.completed


# ----------------------------------------------------------------- epoch / listeners


async def test_config_epoch_bumps_on_every_agent_and_route_write(store, make_agent):
    async def bumps(coro) -> None:
        before = await store.config_epoch()
        await coro
        after = await store.config_epoch()
        assert isinstance(after, int)
        assert after > before, f"epoch did not increase ({before} -> {after})"

    await bumps(store.create_agent_config(make_agent("agent-a")))
    await bumps(store.create_agent_config(make_agent("agent-b")))
    await bumps(store.update_agent_config("agent-a", {"name": "two"}))
    await bumps(store.update_agent_config("agent-a", make_agent("agent-a", name="three")))
    await bumps(store.rollback("agent-a", 1))
    await bumps(store.put_route(Route(purpose="support", agent_id="agent-a", is_default=True)))
    await bumps(store.put_route(Route(purpose="support", agent_id="agent-b", is_default=True)))
    await bumps(store.replace_routes([Route(purpose="sales", agent_id="agent-a")]))
    await bumps(store.delete_route("sales"))
    await bumps(store.delete_agent_config("agent-b"))


async def test_config_epoch_does_not_move_on_session_writes(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    before = await store.config_epoch()
    await store.start_session(session("s-1", "agent-a"))
    await store.append_turn("s-1", Turn(seq=0, role="user", text="hi"))
    await store.record_data("s-1", {"order_id": "A1"})
    await store.record_handoff("s-1", Handoff(from_agent="agent-a", to_agent="agent-b"))
    await store.update_session("s-1", config_version=1, degraded="stale")
    await store.finish_session("s-1", SessionStatus.completed, reason="done")
    await store.start_session(session("s-2", "agent-a"))
    assert await store.abandon_active_sessions("restart") == 1
    await store.list_sessions()
    await store.get_session("s-1")
    assert await store.config_epoch() == before


async def test_config_epoch_is_visible_from_another_instance(store, open_another, make_agent):
    other = await open_another()
    before = await other.config_epoch()
    await store.create_agent_config(make_agent("agent-a"))
    mid = await other.config_epoch()
    assert mid > before
    await store.put_route(Route(purpose="support", agent_id="agent-a"))
    assert await other.config_epoch() > mid
    # and the other way round
    e = await store.config_epoch()
    await other.update_agent_config("agent-a", {"name": "from other"})
    assert await store.config_epoch() > e


async def test_change_listeners_called_once_per_agent_or_route_write(store, make_agent):
    calls: list[str] = []
    store.add_change_listener(lambda: calls.append("one"))
    store.add_change_listener(lambda: calls.append("two"))

    async def notifies(coro) -> None:
        calls.clear()
        await coro
        assert sorted(calls) == ["one", "two"], calls

    async def silent(coro, exc: type[BaseException] | tuple[type[BaseException], ...] | None = None):
        calls.clear()
        if exc is None:
            await coro
        else:
            with pytest.raises(exc):
                await coro
        assert calls == [], calls

    await notifies(store.create_agent_config(make_agent("agent-a")))
    await notifies(store.update_agent_config("agent-a", {"name": "two"}))
    await notifies(store.update_agent_config("agent-a", make_agent("agent-a")))
    await notifies(store.rollback("agent-a", 1))
    await notifies(store.put_route(Route(purpose="support", agent_id="agent-a")))
    await notifies(store.replace_routes([Route(purpose="sales", agent_id="agent-a", is_default=True)]))
    await notifies(store.delete_route("sales"))
    await notifies(store.create_agent_config(make_agent("agent-b")))
    await notifies(store.delete_agent_config("agent-b"))

    # failed writes commit nothing, so nothing to announce
    await silent(store.update_agent_config("agent-a", {"name": "x"}, expected_version=1), VersionConflict)
    await silent(store.create_agent_config(make_agent("agent-a")), AlreadyExists)
    await silent(store.put_route(Route(purpose="x1", agent_id="ghost-agent")), InvalidReference)
    await silent(store.update_agent_config("agent-a", {"name": ""}), ValidationError)

    # session writes are not config writes
    await silent(store.start_session(session("s-1", "agent-a")))
    await silent(store.append_turn("s-1", Turn(seq=0, role="user", text="hi")))
    await silent(store.record_data("s-1", {"order_id": "A1"}))
    await silent(store.finish_session("s-1", SessionStatus.completed))


# ---------------------------------------------------------------------------- routes


async def test_route_put_get_list_delete(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    await store.create_agent_config(make_agent("agent-b"))
    assert await store.list_routes() == []

    r = await store.put_route(Route(purpose="support", agent_id="agent-a"))
    assert (r.purpose, r.agent_id, r.is_default) == ("support", "agent-a", False)
    if r.updated_at is not None:
        assert_utc(r.updated_at)
    got = await store.get_route("support")
    assert (got.purpose, got.agent_id, got.is_default) == ("support", "agent-a", False)

    await store.put_route(Route(purpose="sales", agent_id="agent-b", is_default=True))
    # replace an existing route
    await store.put_route(Route(purpose="support", agent_id="agent-b"))
    assert (await store.get_route("support")).agent_id == "agent-b"
    assert routes_key(await store.list_routes()) == [
        ("sales", "agent-b", True),
        ("support", "agent-b", False),
    ]

    await store.delete_route("support")
    with pytest.raises(NotFound):
        await store.get_route("support")
    with pytest.raises(NotFound):
        await store.delete_route("support")
    assert routes_key(await store.list_routes()) == [("sales", "agent-b", True)]


async def test_route_phone_numbers_round_trip_and_belong_to_one_route(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    await store.create_agent_config(make_agent("agent-b"))
    await store.put_route(Route(purpose="support", agent_id="agent-a", phone_numbers=["+15550001111", "+442071234567"]))
    await store.put_route(Route(purpose="sales", agent_id="agent-b"))
    assert (await store.get_route("support")).phone_numbers == ["+15550001111", "+442071234567"]
    assert (await store.get_route("sales")).phone_numbers == []

    # another route taking a number already answered: refused, naming the number and its route
    with pytest.raises(NumberTaken) as e:
        await store.put_route(Route(purpose="sales", agent_id="agent-b", phone_numbers=["+442071234567"]))
    assert e.value.extra == {"number": "+442071234567", "route": "support", "purpose": "sales"}
    with pytest.raises(NumberTaken):
        await store.replace_routes([
            Route(purpose="support", agent_id="agent-a", phone_numbers=["+15550001111"]),
            Route(purpose="sales", agent_id="agent-b", phone_numbers=["+15550001111"]),
        ])
    assert (await store.get_route("sales")).phone_numbers == []  # nothing written

    # the holder itself may rewrite its numbers; a freed number can move
    await store.put_route(Route(purpose="support", agent_id="agent-a", phone_numbers=["+15550001111"]))
    await store.put_route(Route(purpose="sales", agent_id="agent-b", phone_numbers=["+442071234567"]))
    by_purpose = {r.purpose: r.phone_numbers for r in await store.list_routes()}
    assert by_purpose == {"sales": ["+442071234567"], "support": ["+15550001111"]}


async def test_get_unknown_route_raises_not_found(store):
    with pytest.raises(NotFound):
        await store.get_route("nothing")


async def test_put_route_to_unknown_agent_is_invalid_reference(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    await store.put_route(Route(purpose="support", agent_id="agent-a"))
    with pytest.raises(InvalidReference):
        await store.put_route(Route(purpose="sales", agent_id="ghost-agent"))
    with pytest.raises(InvalidReference):
        await store.put_route(Route(purpose="support", agent_id="ghost-agent"))
    assert routes_key(await store.list_routes()) == [("support", "agent-a", False)]


async def test_put_route_default_clears_other_defaults(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    await store.put_route(Route(purpose="one", agent_id="agent-a", is_default=True))
    await store.put_route(Route(purpose="two", agent_id="agent-a"))
    await store.put_route(Route(purpose="three", agent_id="agent-a", is_default=True))
    assert routes_key(await store.list_routes()) == [
        ("one", "agent-a", False),
        ("three", "agent-a", True),
        ("two", "agent-a", False),
    ]
    # re-putting the default keeps it the only default
    await store.put_route(Route(purpose="three", agent_id="agent-a", is_default=True))
    assert [r.purpose for r in await store.list_routes() if r.is_default] == ["three"]
    # putting a non-default route does not clear the default
    await store.put_route(Route(purpose="one", agent_id="agent-a", is_default=False))
    assert [r.purpose for r in await store.list_routes() if r.is_default] == ["three"]


async def test_replace_routes_replaces_whole_table(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    await store.create_agent_config(make_agent("agent-b"))
    await store.put_route(Route(purpose="old", agent_id="agent-a", is_default=True))
    await store.put_route(Route(purpose="keep", agent_id="agent-a"))

    new = [
        Route(purpose="keep", agent_id="agent-b"),
        Route(purpose="fresh", agent_id="agent-a", is_default=True),
    ]
    result = await store.replace_routes(new)
    assert routes_key(result) == routes_key(new)
    assert routes_key(await store.list_routes()) == routes_key(new)
    with pytest.raises(NotFound):
        await store.get_route("old")

    assert await store.replace_routes([]) == []
    assert await store.list_routes() == []


async def test_replace_routes_with_unknown_agent_changes_nothing(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    before = [
        Route(purpose="one", agent_id="agent-a", is_default=True),
        Route(purpose="two", agent_id="agent-a"),
    ]
    await store.replace_routes(before)
    with pytest.raises(InvalidReference):
        await store.replace_routes(
            [
                Route(purpose="one", agent_id="agent-a"),
                Route(purpose="three", agent_id="agent-a", is_default=True),
                Route(purpose="four", agent_id="ghost-agent"),
            ]
        )
    assert routes_key(await store.list_routes()) == routes_key(before)


async def test_replace_routes_with_two_defaults_is_rejected(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    before = [Route(purpose="one", agent_id="agent-a", is_default=True)]
    await store.replace_routes(before)
    with pytest.raises((ValueError, InvalidInput)):  # InvalidReference is an InvalidInput
        await store.replace_routes(
            [
                Route(purpose="two", agent_id="agent-a", is_default=True),
                Route(purpose="three", agent_id="agent-a", is_default=True),
            ]
        )
    assert routes_key(await store.list_routes()) == routes_key(before)


# -------------------------------------------------------------------------- sessions


async def test_start_and_get_session(store):
    rec = session("s-1", "agent-a", config_version=3, user_id="user-7", route_reason="purpose")
    started = await store.start_session(rec)
    assert started.session_id == "s-1"
    assert started.status == SessionStatus.active
    got = await store.get_session("s-1")
    assert got == rec
    assert got.turns == [] and got.collected == {} and got.handoffs == []
    assert got.ended_at is None and got.end_reason is None and got.error is None


async def test_append_turns_in_order_and_idempotent(store):
    await store.start_session(session("s-1"))
    t0 = now_ms()
    turns = [
        Turn(seq=0, role="assistant", text="Hello!", at=t0, agent_id="support-agent"),
        Turn(seq=1, role="user", text="My order is late", at=t0 + timedelta(seconds=1)),
        Turn(seq=2, role="tool", text='{"status": "shipped"}', at=t0 + timedelta(seconds=2)),
        Turn(seq=3, role="assistant", text="It shipped.", at=t0 + timedelta(seconds=3)),
    ]
    for t in turns[:2]:
        await store.append_turn("s-1", t)
    await store.append_turn("s-1", turns[1])  # a retry
    await store.append_turn("s-1", turns[3])  # out of order on the wire
    await store.append_turn("s-1", turns[2])
    await store.append_turn("s-1", turns[3])  # another retry

    got = await store.get_session("s-1")
    assert got.turns == turns


async def test_concurrent_turn_appends(store):
    await store.start_session(session("s-1"))
    turns = [Turn(seq=i, role="user" if i % 2 else "assistant", text=f"t{i}", at=now_ms()) for i in range(20)]
    await asyncio.gather(*(store.append_turn("s-1", t) for t in turns))
    # retries of the same turn racing each other still store it once
    dup = Turn(seq=20, role="user", text="again", at=now_ms())
    await asyncio.gather(*(store.append_turn("s-1", dup) for _ in range(5)), return_exceptions=False)
    got = await store.get_session("s-1")
    assert [t.seq for t in got.turns] == list(range(21))
    assert got.turns == [*turns, dup]


async def test_record_data_merges_and_returns_merged(store):
    await store.start_session(session("s-1"))
    assert await store.record_data("s-1", {"order_id": "A1"}) == {"order_id": "A1"}
    merged = await store.record_data("s-1", {"rating": 4, "tags": ["late", "ünïcode"]})
    assert merged == {"order_id": "A1", "rating": 4, "tags": ["late", "ünïcode"]}
    merged = await store.record_data("s-1", {"rating": 5})
    assert merged == {"order_id": "A1", "rating": 5, "tags": ["late", "ünïcode"]}
    assert (await store.get_session("s-1")).collected == merged


async def test_concurrent_record_data_loses_nothing(store):
    await store.start_session(session("s-1"))
    await asyncio.gather(*(store.record_data("s-1", {f"f{i}": i}) for i in range(10)))
    assert (await store.get_session("s-1")).collected == {f"f{i}": i for i in range(10)}


async def test_record_handoff(store):
    await store.start_session(session("s-1", "agent-a"))
    h1 = Handoff(from_agent="agent-a", to_agent="agent-b", at=now_ms(), reason="billing question")
    h2 = Handoff(from_agent="agent-b", to_agent="agent-a", at=now_ms() + timedelta(seconds=5))
    await store.record_handoff("s-1", h1)
    await store.record_handoff("s-1", h2)
    assert (await store.get_session("s-1")).handoffs == [h1, h2]


async def test_update_session_sets_fields(store):
    await store.start_session(session("s-1", "agent-a", config_version=1))
    metrics = [{"kind": "llm", "ttft": 0.42, "tokens": 120}, {"kind": "tts", "ttfb": 0.1}]
    await store.update_session(
        "s-1", agent_id="agent-b", config_version=7, degraded="stale cache", metrics=metrics
    )
    got = await store.get_session("s-1")
    assert got.agent_id == "agent-b"
    assert got.config_version == 7
    assert got.degraded == "stale cache"
    assert got.metrics == metrics
    assert got.status == SessionStatus.active  # untouched fields stay
    await store.update_session("s-1", route_reason="explicit agent_id", user_id="u-9")
    got = await store.get_session("s-1")
    assert (got.route_reason, got.user_id, got.agent_id) == ("explicit agent_id", "u-9", "agent-b")


async def test_usage_and_events_round_trip(store):
    """What a call consumed and what happened to it (fail-overs, cut replies, budgets):
    set at start and replaced by `update_session`, times kept exactly."""
    at = now_ms()
    start = session("s-1", "agent-a").model_copy(update={
        "usage": SessionUsage(llm_input_tokens=3),
        "events": [SessionEvent(kind="provider_unavailable", at=at, agent_id="agent-a", detail="api.openai.com")],
    })
    await store.start_session(start)
    got = await store.get_session("s-1")
    assert got.usage == SessionUsage(llm_input_tokens=3)
    assert got.events == start.events
    usage = SessionUsage(
        llm_input_tokens=1200, llm_output_tokens=80, tts_characters=311, stt_audio_s=12.5,
        served_by=[ServedBy(kind="llm", provider="backup.example:8080", model="m.1", turns=2)],
    )
    events = [*start.events, SessionEvent(kind="budget_warning", at=at + timedelta(seconds=1), detail="llm_tokens 80%")]
    await store.update_session("s-1", usage=usage.model_dump(mode="json"),
                               events=[e.model_dump(mode="json") for e in events])
    got = await store.get_session("s-1")
    assert got.usage == usage and got.usage.llm_tokens == 1280
    assert got.events == events
    with pytest.raises(InvalidInput):
        await store.update_session("s-1", events=[{"kind": "not-a-kind"}])


async def test_session_call_info_round_trips(store):
    call = CallInfo(direction="inbound", called_number="+15550001111", caller_number="+15557654321", call_id="SCL_1")
    await store.start_session(session("s-1", "agent-a").model_copy(update={"call": call}))
    assert (await store.get_session("s-1")).call == call
    await store.start_session(session("s-2", "agent-a"))
    assert (await store.get_session("s-2")).call is None
    outbound = CallInfo(direction="outbound", called_number="+15557654321", voicemail=VoicemailOutcome(
        answered_by="machine", category="machine-vm", action="leave_message", message="Call us back"))
    await store.update_session("s-2", call=outbound.model_dump(mode="json"))
    assert (await store.get_session("s-2")).call == outbound
    with pytest.raises(InvalidInput):
        await store.update_session("s-2", call={"direction": "sideways"})


async def test_finish_session(store):
    await store.start_session(session("s-1"))
    await store.start_session(session("s-2"))
    ended = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    await store.finish_session("s-1", SessionStatus.completed, reason="user hung up", ended_at=ended)
    got = await store.get_session("s-1")
    assert got.status == SessionStatus.completed
    assert got.end_reason == "user hung up"
    assert got.ended_at == ended
    assert_utc(got.ended_at)
    assert got.error is None

    before = now_ms() - timedelta(seconds=1)
    await store.finish_session("s-2", SessionStatus.failed, reason="error", error="LLM timeout")
    got = await store.get_session("s-2")
    assert got.status == SessionStatus.failed
    assert (got.end_reason, got.error) == ("error", "LLM timeout")
    assert_utc(got.ended_at)
    assert before <= got.ended_at <= datetime.now(UTC) + timedelta(seconds=1)


async def test_get_session_full_record(store):
    t0 = now_ms()
    await store.start_session(session("s-1", "agent-a", config_version=2, user_id="u", started_at=t0))
    turns = [Turn(seq=i, role="user", text=f"turn {i}", at=t0 + timedelta(seconds=i)) for i in range(3)]
    for t in turns:
        await store.append_turn("s-1", t)
    await store.record_data("s-1", {"order_id": "Z9"})
    h = Handoff(from_agent="agent-a", to_agent="agent-b", at=t0 + timedelta(seconds=10))
    await store.record_handoff("s-1", h)
    await store.finish_session("s-1", SessionStatus.completed, reason="done", ended_at=t0 + timedelta(minutes=1))
    got = await store.get_session("s-1")
    assert got == SessionRecord(
        session_id="s-1",
        room="room-s-1",
        agent_id="agent-a",
        config_version=2,
        user_id="u",
        status=SessionStatus.completed,
        started_at=t0,
        ended_at=t0 + timedelta(minutes=1),
        end_reason="done",
        turns=turns,
        collected={"order_id": "Z9"},
        handoffs=[h],
    )


async def test_list_sessions_newest_first_filters_and_total(store):
    base = datetime(2031, 5, 1, 12, 0, 0, tzinfo=UTC)
    specs = [  # id, agent, minutes after base, final status
        ("s-0", "agent-a", 0, SessionStatus.completed),
        ("s-1", "agent-b", 10, SessionStatus.failed),
        ("s-2", "agent-a", 20, SessionStatus.active),
        ("s-3", "agent-a", 30, SessionStatus.completed),
        ("s-4", "agent-b", 40, SessionStatus.active),
    ]
    for sid, aid, minutes, status in specs:
        await store.start_session(session(sid, aid, started_at=base + timedelta(minutes=minutes)))
        await store.append_turn(sid, Turn(seq=0, role="user", text=f"hello from {sid}"))
        await store.record_data(sid, {"n": minutes})
        if status != SessionStatus.active:
            await store.finish_session(sid, status, reason="x")

    items, total = await store.list_sessions()
    assert total == 5
    assert [s.session_id for s in items] == ["s-4", "s-3", "s-2", "s-1", "s-0"]
    assert all(s.turns == [] for s in items), "list_sessions must not carry transcripts"
    assert all(isinstance(s, SessionRecord) for s in items)
    assert items[1].status == SessionStatus.completed and items[1].agent_id == "agent-a"

    items, total = await store.list_sessions(agent_id="agent-a")
    assert total == 3 and [s.session_id for s in items] == ["s-3", "s-2", "s-0"]

    items, total = await store.list_sessions(status=SessionStatus.active)
    assert total == 2 and [s.session_id for s in items] == ["s-4", "s-2"]

    items, total = await store.list_sessions(agent_id="agent-a", status=SessionStatus.completed)
    assert total == 2 and [s.session_id for s in items] == ["s-3", "s-0"]

    items, total = await store.list_sessions(since=base + timedelta(minutes=15))
    assert total == 3 and [s.session_id for s in items] == ["s-4", "s-3", "s-2"]

    items, total = await store.list_sessions(until=base + timedelta(minutes=25))
    assert total == 3 and [s.session_id for s in items] == ["s-2", "s-1", "s-0"]

    # since/until given in another offset mean the same instants
    plus2 = timezone(timedelta(hours=2))
    items, total = await store.list_sessions(
        since=(base + timedelta(minutes=5)).astimezone(plus2),
        until=(base + timedelta(minutes=35)).astimezone(plus2),
    )
    assert total == 3 and [s.session_id for s in items] == ["s-3", "s-2", "s-1"]

    items, total = await store.list_sessions(offset=1, limit=2)
    assert total == 5 and [s.session_id for s in items] == ["s-3", "s-2"]

    items, total = await store.list_sessions(agent_id="agent-b", offset=1, limit=5)
    assert total == 2 and [s.session_id for s in items] == ["s-1"]

    items, total = await store.list_sessions(agent_id="nobody")
    assert (items, total) == ([], 0)


async def test_list_sessions_slowest_worst_turn_first(store):
    base = datetime(2031, 6, 1, 12, 0, 0, tzinfo=UTC)
    totals = {  # session: its turns' end-to-end figures (None: a turn LiveKit measured nothing for)
        "quick": [300.0, 420.5], "slow": [250.0, 2100.0, 900.0], "silent": [],
        "middle": [None, 1200.0], "newer-silent": [],
    }
    for i, (sid, figures) in enumerate(totals.items()):
        await store.start_session(session(sid, "agent-a", started_at=base + timedelta(minutes=i)))
        if figures:
            await store.update_session(sid, metrics=[{"turn": n, "total_ms": ms} for n, ms in enumerate(figures)])
    await store.update_session("quick", metrics=[{"turn": 0, "total_ms": 300.0}, {"turn": 1, "total_ms": 420.5}])

    items, total = await store.list_sessions(order=SessionOrder.worst_turn)
    assert total == 5
    # slowest first; sessions without a spoken turn last, newest first among them
    assert [s.session_id for s in items] == ["slow", "middle", "quick", "newer-silent", "silent"]
    assert [s.worst_turn_ms for s in items] == [2100.0, 1200.0, 420.5, None, None]
    items, _ = await store.list_sessions(order=SessionOrder.worst_turn, offset=1, limit=2)
    assert [s.session_id for s in items] == ["middle", "quick"]
    # a later snapshot replaces the figure (the worst of what is stored now, not of all time)
    await store.update_session("slow", metrics=[{"turn": 0, "total_ms": 250.0}])
    items, _ = await store.list_sessions(order=SessionOrder.worst_turn, limit=2)
    assert [(s.session_id, s.worst_turn_ms) for s in items] == [("middle", 1200.0), ("quick", 420.5)]
    items, _ = await store.list_sessions()
    assert items[0].session_id == "newer-silent"  # the default order is unchanged


async def test_abandon_active_sessions(store):
    for sid in ("s-1", "s-2", "s-3", "s-4"):
        await store.start_session(session(sid))
    await store.finish_session("s-3", SessionStatus.completed, reason="done")
    await store.finish_session("s-4", SessionStatus.failed, reason="crash", error="boom")
    done = await store.get_session("s-3")
    failed = await store.get_session("s-4")

    assert await store.abandon_active_sessions("worker restarted") == 2
    for sid in ("s-1", "s-2"):
        got = await store.get_session(sid)
        assert got.status == SessionStatus.abandoned
        assert got.end_reason == "worker restarted"
        assert_utc(got.ended_at)
    assert await store.get_session("s-3") == done
    assert await store.get_session("s-4") == failed

    assert await store.abandon_active_sessions("again") == 0
    assert (await store.get_session("s-1")).end_reason == "worker restarted"


async def test_unknown_session_raises_not_found(store):
    await store.start_session(session("s-1"))
    calls = [
        lambda: store.get_session("nope"),
        lambda: store.append_turn("nope", Turn(seq=0, role="user", text="x")),
        lambda: store.record_data("nope", {"a": 1}),
        lambda: store.record_handoff("nope", Handoff(from_agent="a", to_agent="b")),
        lambda: store.update_session("nope", degraded="x"),
        lambda: store.finish_session("nope", SessionStatus.completed),
    ]
    for call in calls:
        with pytest.raises(NotFound):
            await call()
    # nothing leaked into the known session or created the unknown one
    got = await store.get_session("s-1")
    assert got.turns == [] and got.collected == {} and got.handoffs == []
    assert (await store.list_sessions())[1] == 1


# ------------------------------------------------------------ durability / encoding


async def test_data_survives_reopen(store_target, make_agent):
    first = store_target.new_store()
    await first.start()
    try:
        v1 = await first.create_agent_config(make_agent("agent-a"))
        v2 = await first.update_agent_config("agent-a", {"name": "two"})
        b1 = await first.create_agent_config(make_agent("agent-b", enabled=False))
        await first.put_route(Route(purpose="support", agent_id="agent-a", is_default=True))
        await first.put_route(Route(purpose="billing", agent_id="agent-b"))
        await first.start_session(session("s-1", "agent-a", config_version=2))
        turns = [Turn(seq=i, role="user", text=f"t{i}", at=now_ms()) for i in range(3)]
        for t in turns:
            await first.append_turn("s-1", t)
        await first.record_data("s-1", {"order_id": "A1"})
        await first.finish_session("s-1", SessionStatus.completed, reason="done")
        await first.start_session(session("s-2", "agent-b"))
        epoch = await first.config_epoch()
        s1 = await first.get_session("s-1")
        routes = await first.list_routes()
    finally:
        await first.aclose()

    second = store_target.new_store()
    await second.start()
    try:
        assert await second.list_versions("agent-a") == [v1, v2]
        assert await second.get_agent_config("agent-b") == b1
        assert await second.list_agent_configs() == ([v2, b1], 2)
        assert routes_key(await second.list_routes()) == routes_key(routes)
        assert await second.get_session("s-1") == s1
        assert s1.turns == turns
        assert (await second.get_session("s-2")).status == SessionStatus.active
        assert await second.config_epoch() >= epoch
        # history continues where it left off
        assert (await second.update_agent_config("agent-a", {"name": "three"})).version == 3
    finally:
        await second.aclose()


UNICODE = "Grüße, 你好, こんにちは, مرحبا, שלום, 🎙️🤖👩🏽‍💻, e\u0301, ∑∫√, \t tab \"quotes\" 'single' \\ backslash"


async def test_unicode_and_large_text_roundtrip(store, make_agent):
    # as close to the 32 KiB instructions cap as multibyte text gets
    chunk = f"{UNICODE} {{customer_name}} {{{{literal braces}}}}\n"
    instructions = ""
    while len((instructions + chunk).encode()) <= 32 * 1024:
        instructions += chunk
    data = make_agent(
        "agent-a",
        name="Ünïcødé 🤖 agent",
        description=UNICODE * 10,
        prompt_config={
            "instructions": instructions,
            "greeting": "¡Hola {customer_name}! 👋",
            "variables": {"customer_name": {"description": UNICODE[:400], "default": "señor"}},
        },
        schema_config={
            "type": "object",
            "properties": {"naam": {"type": "string", "description": UNICODE}},
        },
    )
    created = await store.create_agent_config(data)
    assert (await store.get_agent_config("agent-a")).input() == data
    assert created.input() == data

    big = (UNICODE + "\n") * 5000  # ~0.5 MB of text in one turn
    await store.start_session(session("s-ü", "agent-a", room="raum-🎙️", user_id="用户"))
    await store.append_turn("s-ü", Turn(seq=0, role="user", text=big))
    await store.append_turn("s-ü", Turn(seq=1, role="assistant", text=""))
    collected = {"naam": UNICODE, "nested": {"list": [1, 2.5, True, None, "ö"], "emoji": "🎉"}}
    await store.record_data("s-ü", collected)
    got = await store.get_session("s-ü")
    assert got.room == "raum-🎙️" and got.user_id == "用户"
    assert got.turns[0].text == big
    assert got.turns[1].text == ""
    assert got.collected == collected


async def test_datetimes_come_back_utc_aware(store, make_agent):
    created = await store.create_agent_config(make_agent("agent-a"))
    assert_utc(created.created_at)
    assert_utc(created.updated_at)
    fetched = await store.get_agent_config("agent-a")
    assert_utc(fetched.created_at)
    assert_utc(fetched.updated_at)
    for v in await store.list_versions("agent-a"):
        assert_utc(v.created_at)
    for c in (await store.list_agent_configs())[0]:
        assert_utc(c.updated_at)

    await store.put_route(Route(purpose="support", agent_id="agent-a"))
    for r in await store.list_routes():
        if r.updated_at is not None:
            assert_utc(r.updated_at)

    plus2 = timezone(timedelta(hours=2))
    minus5 = timezone(timedelta(hours=-5))
    started = datetime(2030, 6, 1, 10, 0, 0, 123000, tzinfo=plus2)
    turn_at = datetime(2030, 6, 1, 3, 0, 1, 456000, tzinfo=minus5)
    handoff_at = datetime(2030, 6, 1, 13, 30, 2, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    ended = datetime(2030, 6, 1, 10, 5, 0, tzinfo=plus2)

    await store.start_session(session("s-1", started_at=started))
    await store.append_turn("s-1", Turn(seq=0, role="user", text="hi", at=turn_at))
    await store.append_turn("s-1", Turn(seq=1, role="assistant", text="default time"))
    await store.record_handoff("s-1", Handoff(from_agent="a1", to_agent="b1", at=handoff_at))
    await store.finish_session("s-1", SessionStatus.completed, ended_at=ended)

    got = await store.get_session("s-1")
    assert got.started_at == started
    assert got.turns[0].at == turn_at
    assert got.handoffs[0].at == handoff_at
    assert got.ended_at == ended
    for dt in (got.started_at, got.ended_at, got.turns[0].at, got.turns[1].at, got.handoffs[0].at):
        assert_utc(dt)
    listed = (await store.list_sessions())[0][0]
    assert listed.started_at == started
    assert_utc(listed.started_at)
    assert_utc(listed.ended_at)


async def test_replace_routes_with_duplicate_purpose_is_rejected(store, make_agent):
    await store.create_agent_config(make_agent("agent-a"))
    await store.create_agent_config(make_agent("agent-b"))
    before = [Route(purpose="one", agent_id="agent-a")]
    await store.replace_routes(before)
    with pytest.raises((ValueError, InvalidInput)):
        await store.replace_routes(
            [Route(purpose="two", agent_id="agent-a"), Route(purpose="two", agent_id="agent-b")]
        )
    assert routes_key(await store.list_routes()) == routes_key(before)


async def test_delete_then_create_other_agent_reads_the_new_one(store, open_another, make_agent):
    """A deleted agent's content must never be served for a later, different write,
    in this instance or one that read it before the delete."""
    other = await open_another()
    await store.create_agent_config(make_agent("agent-a", name="A"))
    assert (await other.get_agent_config("agent-a")).name == "A"  # warm whatever `other` caches
    await store.delete_agent_config("agent-a")
    created = await store.create_agent_config(make_agent("agent-b", name="B"))
    for s in (store, other):
        got = await s.get_agent_config("agent-b")
        assert (got.agent_id, got.name) == ("agent-b", "B")
        assert got == created
        assert await s.list_versions("agent-b") == [created]
        assert await s.list_agent_configs() == ([created], 1)
        with pytest.raises(NotFound):
            await s.get_agent_config("agent-a")


async def test_duplicate_session_id_raises_already_exists(store):
    original = await store.start_session(session("s-1", "agent-a"))
    await store.append_turn("s-1", Turn(seq=0, role="user", text="hi", at=now_ms()))
    with pytest.raises(AlreadyExists):
        await store.start_session(session("s-1", "agent-b"))
    got = await store.get_session("s-1")
    assert got.agent_id == original.agent_id and len(got.turns) == 1


# ------------------------------------------------------------ session write batches


def _batch_ops(sid: str, t0: datetime) -> list[SessionWrite]:
    return [
        StartSession(session(sid, "agent-a", config_version=1, started_at=t0)),
        AppendTurn(Turn(seq=0, role="assistant", text="hello", at=t0)),
        AppendTurn(Turn(seq=1, role="user", text="hi", at=t0)),
        RecordData({"order_id": "A1", "nested": {"a": 1}}),
        UpdateSession({"metrics": [{"seq": 0, "total_ms": 10.0}]}),
        RecordHandoff(Handoff(from_agent="agent-a", to_agent="agent-b", reason="sales", at=t0)),
        RecordData({"nested": {"b": 2}}),
        AppendTurn(Turn(seq=2, role="assistant", text="bye", at=t0)),
        UpdateSession({"metrics": [{"seq": 0, "total_ms": 10.0}, {"seq": 2, "total_ms": 20.0}],
                       "degraded": "x"}),
        FinishSession(SessionStatus.completed, "done", ended_at=t0 + timedelta(seconds=5)),
    ]


async def _apply_one_by_one(store: ConfigStore, sid: str, ops: list[SessionWrite]) -> None:
    for op in ops:
        match op:
            case StartSession(record=r):
                await store.start_session(r)
            case AppendTurn(turn=t):
                await store.append_turn(sid, t)
            case RecordData(data=d):
                await store.record_data(sid, d)
            case RecordHandoff(handoff=h):
                await store.record_handoff(sid, h)
            case UpdateSession(fields=f):
                await store.update_session(sid, **f)
            case FinishSession(status=st, reason=rs, error=er, ended_at=at):
                await store.finish_session(sid, st, rs, er, at)


def _same(rec: SessionRecord) -> dict[str, Any]:
    return rec.model_dump(exclude={"session_id", "room"})


@pytest.mark.parametrize("split", [None, 1, 3, 5])
async def test_apply_session_writes_equals_the_calls_one_by_one(store, split):
    t0 = now_ms()
    ops = _batch_ops("s-batch", t0)
    if split is None:
        await store.apply_session_writes("s-batch", ops)
    else:  # the session already started: later batches find it without a start
        for i in range(0, len(ops), split):
            await store.apply_session_writes("s-batch", ops[i:i + split])
    ref = _batch_ops("s-ref", t0)
    await _apply_one_by_one(store, "s-ref", ref)
    got, want = await store.get_session("s-batch"), await store.get_session("s-ref")
    assert _same(got) == _same(want)
    assert [t.text for t in got.turns] == ["hello", "hi", "bye"]
    assert got.collected == {"order_id": "A1", "nested": {"a": 1, "b": 2}}
    assert [m["seq"] for m in got.metrics] == [0, 2]  # the last snapshot wins
    assert got.status == SessionStatus.completed and got.degraded == "x"
    assert [(h.from_agent, h.to_agent) for h in got.handoffs] == [("agent-a", "agent-b")]


async def test_apply_session_writes_is_idempotent_for_retried_turns(store):
    await store.apply_session_writes("s-1", [StartSession(session("s-1"))])
    turns = [AppendTurn(Turn(seq=i, role="user", text=f"t{i}", at=now_ms())) for i in range(3)]
    await store.apply_session_writes("s-1", turns[:2])
    await store.apply_session_writes("s-1", turns)  # a retry carrying two stored turns
    await store.apply_session_writes("s-1", turns[:1])  # a turns-only batch, all stored
    assert [t.seq for t in (await store.get_session("s-1")).turns] == [0, 1, 2]


@pytest.mark.parametrize("ops", [
    [AppendTurn(Turn(seq=0, role="user", text="x"))],
    [AppendTurn(Turn(seq=0, role="user", text="x")), RecordData({"a": 1})],
    [RecordHandoff(Handoff(from_agent="a", to_agent="b")), UpdateSession({"degraded": "x"})],
    [UpdateSession({"degraded": "x"}), AppendTurn(Turn(seq=0, role="user", text="x"))],
    [FinishSession(SessionStatus.completed)],
], ids=["turn", "turn+data", "handoff+update", "update+turn", "finish"])
async def test_apply_session_writes_to_an_unknown_session_is_not_found(store, ops):
    await store.start_session(session("s-1"))
    with pytest.raises(NotFound):
        await store.apply_session_writes("nope", ops)
    with pytest.raises(NotFound):
        await store.get_session("nope")
    got = await store.get_session("s-1")
    assert got.turns == [] and got.collected == {} and got.handoffs == []


async def test_apply_session_writes_rejects_a_bad_op_before_writing(store):
    await store.start_session(session("s-1"))
    with pytest.raises(InvalidInput):
        await store.apply_session_writes("s-1", [
            AppendTurn(Turn(seq=0, role="user", text="x")), UpdateSession({"status": "completed"}),
        ])
    got = await store.get_session("s-1")
    assert got.turns == [] and got.status == SessionStatus.active


async def test_apply_session_writes_start_of_an_existing_session(store):
    await store.start_session(session("s-1", "agent-a"))
    with pytest.raises(AlreadyExists):
        await store.apply_session_writes("s-1", [StartSession(session("s-1", "agent-b"))])
    assert (await store.get_session("s-1")).agent_id == "agent-a"


# ------------------------------------------------------------- owner / heartbeat


async def test_owner_and_heartbeat_are_stored_and_the_insert_counts_as_a_heartbeat(store):
    old = now_ms() - timedelta(minutes=10)
    before = now_ms()
    await store.start_session(session("s-1", owner="host:1:ab", heartbeat_at=old))
    await store.start_session(session("s-2"))
    got = await store.get_session("s-1")
    assert got.owner == "host:1:ab"
    assert got.heartbeat_at is not None and got.heartbeat_at >= before  # written now: alive now
    assert_utc(got.heartbeat_at)
    plain = await store.get_session("s-2")
    assert plain.owner is None and plain.heartbeat_at is None
    listed = {s.session_id: s for s in (await store.list_sessions())[0]}
    assert listed["s-1"].owner == "host:1:ab"


async def test_heartbeat_stamps_the_owners_active_sessions_only(store):
    t0 = now_ms()
    await store.start_session(session("a-1", owner="A"))
    await store.start_session(session("a-2", owner="A"))
    await store.start_session(session("a-done", owner="A"))
    await store.finish_session("a-done", SessionStatus.completed)
    await store.start_session(session("b-1", owner="B"))
    done = await store.get_session("a-done")
    b1 = await store.get_session("b-1")
    await asyncio.sleep(0.01)

    assert await store.heartbeat("A") == 2
    for sid in ("a-1", "a-2"):
        hb = (await store.get_session(sid)).heartbeat_at
        assert hb is not None and hb > t0
    assert await store.get_session("a-done") == done
    assert await store.get_session("b-1") == b1
    assert await store.heartbeat("nobody") == 0


async def test_abandon_stale_sessions(store):
    now = now_ms()
    # fresh: a recent heartbeat; stale: an old one; never beat: falls back to started_at
    await store.start_session(session("fresh", owner="A"))
    await store.start_session(session("old-start-fresh-beat", owner="A", started_at=now - timedelta(hours=1)))
    await store.start_session(session("stale", owner="B"))
    await store.start_session(session("legacy-old", started_at=now - timedelta(minutes=5)))
    await store.start_session(session("legacy-new", started_at=now))
    await store.start_session(session("finished-old", started_at=now - timedelta(hours=1)))
    await store.finish_session("finished-old", SessionStatus.completed, reason="done")
    finished = await store.get_session("finished-old")
    # B's process died 2 minutes ago: its last heartbeat is old
    await store.apply_session_writes("stale", [])  # a no-op batch is fine
    await _set_heartbeat(store, "stale", now - timedelta(minutes=2))

    cutoff = now - timedelta(seconds=60)
    assert await store.abandon_stale_sessions(cutoff, "owner stopped heartbeating") == 2
    for sid in ("stale", "legacy-old"):
        got = await store.get_session(sid)
        assert got.status == SessionStatus.abandoned
        assert got.end_reason == "owner stopped heartbeating"
        assert_utc(got.ended_at)
    for sid in ("fresh", "old-start-fresh-beat", "legacy-new"):
        assert (await store.get_session(sid)).status == SessionStatus.active
    assert await store.get_session("finished-old") == finished
    assert await store.abandon_stale_sessions(cutoff, "again") == 0


async def _set_heartbeat(store: ConfigStore, sid: str, at: datetime) -> None:
    """Backdate a heartbeat (what a dead owner leaves behind) through the backend itself."""
    backend = store.backend  # type: ignore[attr-defined]
    if hasattr(backend, "write"):  # SQL
        from app.store.sql.tables import sessions_t

        await backend.write(
            lambda conn: conn.execute(sessions_t.update().where(sessions_t.c.session_id == sid).values(heartbeat_at=at))
        )
    else:  # Mongo
        db = await backend.ready()
        await db.sessions.update_one({"_id": sid}, {"$set": {"heartbeat_at": at}})
