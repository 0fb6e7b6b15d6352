"""One answer to "which agent runs?": the snapshot's routing table, the resolver, and the
three callers that use it (session start, GET /api/v1/resolve, POST /api/v1/token)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from pydantic import SecretStr

from app.api.app import create_app
from app.api.tokens import token_controller
from app.domain import AgentConfig, AgentConfigInput, Route, SessionRecord, StoreUnavailable
from app.domain.fallback import FALLBACK_CONFIG
from app.domain.routing import MetadataSource, RoutingTable
from app.settings import Settings
from app.store import resolver as resolver_module
from app.store.cache import ConfigCache, ConfigSnapshot
from app.store.resolver import resolve, resolve_current
from app.store.sql import SQLStore
from app.worker.services import WorkerServices
from app.worker.session_start import prepare_session
from sim.fake_openai import FakeOpenAI

ADMIN = "admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
T0 = "2026-01-01T00:00:00Z"


def cfg(agent_id: str, *, enabled: bool = True, version: int = 1, variables: dict[str, Any] | None = None) -> AgentConfig:
    instructions = "Hi {who}." if variables else "Hi."
    return AgentConfig.model_validate({
        "agent_id": agent_id, "name": agent_id, "enabled": enabled, "version": version,
        "created_at": T0, "updated_at": T0,
        "prompt_config": {"instructions": instructions, "variables": variables or {}},
    })


def snapshot(*configs: AgentConfig, routes: list[Route]) -> ConfigSnapshot:
    return ConfigSnapshot.build(epoch=7, configs={c.agent_id: c for c in configs}, routes=routes)


def job(meta: dict[str, Any]) -> list[MetadataSource]:
    return [MetadataSource("job", json.dumps(meta))]


SNAP = snapshot(
    cfg("support-a"), cfg("sales-a", version=3), cfg("old-a", enabled=False),
    routes=[Route(purpose="support", agent_id="support-a", is_default=True),
            Route(purpose="sales", agent_id="sales-a"), Route(purpose="old", agent_id="old-a")],
)


# ------------------------------------------------------------------ the snapshot


def test_the_snapshot_carries_its_routing_table() -> None:
    table = SNAP.routing
    assert dict(table.routes) == {"old": "old-a", "sales": "sales-a", "support": "support-a"}
    assert table.default_agent_id == "support-a"
    assert table.enabled == {"support-a", "sales-a"} and table.known == {"support-a", "sales-a", "old-a"}
    # serving a snapshot as stale keeps its table: nothing is rebuilt per reader
    assert replace(SNAP, stale=True).routing is table


async def test_the_cache_builds_the_table_once_per_reload(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    builds = 0
    original = RoutingTable.build.__func__  # type: ignore[attr-defined]

    def counting(cls: type[RoutingTable], *a: Any, **kw: Any) -> RoutingTable:
        nonlocal builds
        builds += 1
        return original(cls, *a, **kw)

    monkeypatch.setattr(RoutingTable, "build", classmethod(counting))
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/r.db")
    await store.start()
    try:
        await store.create_agent_config(AgentConfigInput(agent_id="support-a", name="S", prompt_config={"instructions": "x"}))
        await store.put_route(Route(purpose="support", agent_id="support-a", is_default=True))
        cache = ConfigCache(store)
        first = await cache.current()
        builds_after_load = builds
        for _ in range(50):
            snap = await cache.current()
            resolve(snap, job({"purpose": "support"}), room="r")
        assert builds == builds_after_load == 1  # the load built it; 50 resolutions reused it
        assert (await cache.current()).routing is first.routing
        await store.put_route(Route(purpose="sales", agent_id="support-a"))
        assert "sales" in (await cache.current()).routing.routes  # a write: a new snapshot, a new table
        assert builds == 2
    finally:
        await store.aclose()


# ------------------------------------------------------------------ resolve


@pytest.mark.parametrize(
    ("meta", "agent", "reason"),
    [
        ({"purpose": "sales"}, "sales-a", "purpose"),
        ({"agent_id": "sales-a"}, "sales-a", "agent_id"),
        ({}, "support-a", "default"),
        ({"purpose": "nope"}, "support-a", "default:unknown_purpose"),
        ({"purpose": "old"}, "support-a", "default:disabled_agent"),
        ({"agent_id": "ghost-a"}, "support-a", "default:unknown_agent_id"),
    ],
)
def test_resolve_routes_on_the_snapshot(meta: dict[str, Any], agent: str, reason: str) -> None:
    res = resolve(SNAP, job(meta), room="r")
    assert (res.config.agent_id, res.decision.reason) == (agent, reason)
    assert res.config is SNAP.configs[agent]
    assert res.degraded is None and not res.stale and res.epoch == 7


def test_no_snapshot_or_no_default_gives_the_fallback_agent() -> None:
    res = resolve(None, job({"purpose": "sales"}), room="r", degraded="store down")
    assert res.config is FALLBACK_CONFIG and res.is_fallback_agent and res.stale and res.epoch is None
    assert res.degraded == "store down"
    no_default = snapshot(cfg("sales-a"), routes=[Route(purpose="sales", agent_id="sales-a")])
    assert resolve(no_default, job({"purpose": "x"}), room="r").config is FALLBACK_CONFIG


class Source:
    """A SnapshotSource that is never fresh and answers `current()` as told."""

    def __init__(self, answer: ConfigSnapshot | Exception) -> None:
        self.answer = answer

    @property
    def snapshot(self) -> ConfigSnapshot:
        raise AssertionError("not fresh: resolve_current must call current()")

    def is_fresh(self) -> bool:
        return False

    async def current(self) -> ConfigSnapshot:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def get_agent_config(self, agent_id: str) -> AgentConfig:
        raise NotImplementedError

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


async def test_resolve_current_degrades_instead_of_failing() -> None:
    stale = await resolve_current(Source(replace(SNAP, stale=True)), job({"purpose": "sales"}), room="r")
    assert stale.config.agent_id == "sales-a" and stale.stale
    assert stale.degraded == "store unavailable: using last known-good config"

    down = await resolve_current(Source(StoreUnavailable("db gone")), job({"purpose": "sales"}), room="r")
    assert down.config is FALLBACK_CONFIG and down.snapshot is None
    assert down.degraded == "store unavailable (db gone) and no config cached: fallback agent"

    broken = await resolve_current(Source(RuntimeError("bug")), job({"purpose": "sales"}), room="r")
    assert broken.config is FALLBACK_CONFIG and broken.degraded == "config lookup failed: fallback agent"


def test_replacement_when_the_routed_agent_cannot_start() -> None:
    needs = {"who": {"required": True}}
    snap = snapshot(cfg("support-a"), cfg("sales-a", variables=needs),
                    routes=[Route(purpose="support", agent_id="support-a", is_default=True),
                            Route(purpose="sales", agent_id="sales-a")])
    assert resolve(snap, job({"purpose": "sales"}), room="r").replacement().agent_id == "support-a"
    # the default itself cannot start: the fallback agent, never the same agent again
    snap2 = snapshot(cfg("sales-a", variables=needs), routes=[Route(purpose="sales", agent_id="sales-a", is_default=True)])
    assert resolve(snap2, job({}), room="r").replacement() is FALLBACK_CONFIG
    snap3 = snapshot(cfg("support-a", variables=needs), cfg("sales-a", variables=needs),
                     routes=[Route(purpose="support", agent_id="support-a", is_default=True),
                             Route(purpose="sales", agent_id="sales-a")])
    assert resolve(snap3, job({"purpose": "sales"}), room="r").replacement() is FALLBACK_CONFIG


# ---------------------------------------- session start, /resolve and /token agree


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[SQLStore]:
    s = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/agree.db")
    await s.start()
    for agent_id, enabled in (("support-a", True), ("sales-a", True), ("old-a", False)):
        await s.create_agent_config(AgentConfigInput(
            agent_id=agent_id, name=agent_id, enabled=enabled, prompt_config={"instructions": "Hello."}))
    await s.update_agent_config("sales-a", {"description": "v2"})
    await s.put_route(Route(purpose="support", agent_id="support-a", is_default=True))
    await s.put_route(Route(purpose="sales", agent_id="sales-a"))
    await s.put_route(Route(purpose="old", agent_id="old-a"))
    yield s
    await s.aclose()


CASES = [{"purpose": "sales"}, {"agent_id": "sales-a"}, {}, {"purpose": "support"}, {"purpose": "nope"},
         {"agent_id": "old-a"}, {"purpose": "old"}]


async def test_session_start_resolve_and_token_give_one_answer(store: SQLStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = resolver_module.resolve

    def spy(snapshot: ConfigSnapshot | None, sources: Any, *, room: str, degraded: str | None = None,
            called_number: str | None = None, user_id: str | None = None) -> Any:
        calls.append(room)
        return real(snapshot, sources, room=room, degraded=degraded, called_number=called_number, user_id=user_id)

    monkeypatch.setattr(resolver_module, "resolve", spy)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, admin_api_key=SecretStr(ADMIN), livekit_url="wss://lk.example",
        livekit_api_key=SecretStr("APIkey"), livekit_api_secret=SecretStr("s" * 40), token_rate_per_minute=1000,
    )
    services = WorkerServices(settings, store)
    await services.start()
    app = create_app(settings, store, cache=services.cache, extra_route_handlers=[token_controller(settings)])
    try:
        async with AsyncTestClient(app) as client:
            for meta in CASES:
                prepared = await prepare_session(services, job(meta), room="s", audio=False,
                                                 llm_client=FakeOpenAI().client())
                await prepared.aclose()
                r = await client.get("/api/v1/resolve", params=meta, headers=AUTH)
                t = await client.post("/api/v1/token", json=meta)
                assert r.status_code == 200, r.text
                started = (prepared.record.agent_id, prepared.record.config_version, prepared.record.route_reason)
                assert (r.json()["agent_id"], r.json()["config_version"], r.json()["reason"]) == started, meta
                # the token endpoint mints exactly when the session would get what was asked for
                asked = not prepared.decision.is_fallback or meta == {}
                assert t.status_code == (201 if asked else 422), (meta, t.text)
                if asked:
                    assert t.json()["agent_id"] == prepared.record.agent_id
    finally:
        await services.aclose()
    assert calls.count("s") == calls.count("resolve") == calls.count("token") == len(CASES)


class DownStore(SQLStore):
    """The real SQL store with an off switch (a database outage)."""

    down = False

    async def config_epoch(self) -> int:
        if self.down:
            raise StoreUnavailable("simulated outage")
        return await super().config_epoch()

    async def list_agent_configs(self, **kw: Any) -> Any:
        if self.down:
            raise StoreUnavailable("simulated outage")
        return await super().list_agent_configs(**kw)

    async def list_published(self, **kw: Any) -> Any:
        if self.down:
            raise StoreUnavailable("simulated outage")
        return await super().list_published(**kw)


async def test_token_during_an_outage_mints_from_last_known_good_or_answers_503(tmp_path) -> None:
    """As a session start would: the last known-good configs while the store is down;
    503 when nothing was ever loaded (no answer to give)."""
    store = DownStore(f"sqlite+aiosqlite:///{tmp_path}/down.db")
    await store.start()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, admin_api_key=SecretStr(ADMIN), livekit_url="wss://lk.example",
        livekit_api_key=SecretStr("APIkey"), livekit_api_secret=SecretStr("s" * 40), token_rate_per_minute=1000,
    )
    try:
        await store.create_agent_config(AgentConfigInput(agent_id="sales-a", name="S", prompt_config={"instructions": "x"}))
        await store.put_route(Route(purpose="sales", agent_id="sales-a", is_default=True))
        warm = ConfigCache(store, poll_interval=0.05)
        await warm.current()
        cold = ConfigCache(store, poll_interval=0.05)
        store.down = True
        await asyncio.sleep(0.35)  # past the warm cache's freshness window: it must ask the store
        for cache, code in ((warm, 201), (cold, 503)):
            app = create_app(settings, store, cache=cache, extra_route_handlers=[token_controller(settings)])
            async with AsyncTestClient(app) as client:
                t = await client.post("/api/v1/token", json={"purpose": "sales"})
                r = await client.get("/api/v1/resolve", params={"purpose": "sales"}, headers=AUTH)
            assert t.status_code == code, t.text
            assert r.status_code == 200 and r.json()["stale"] is True
            if code == 201:
                assert t.json()["agent_id"] == r.json()["agent_id"] == "sales-a"
            else:
                assert r.json()["agent_id"] == FALLBACK_CONFIG.agent_id
    finally:
        store.down = False
        await store.aclose()


async def test_session_starts_carry_the_arm_and_a_pinned_version_runs_only_from_the_job(store: SQLStore) -> None:
    """A canary splits session starts by caller, recorded on the session; a version named
    in the job's dispatch metadata (a draft tried out) runs as asked, with no arm; the same
    key in room or participant metadata (not signed by us) is ignored; an unknown version
    runs the routed one and says so."""
    from app.domain.rollout import arm_for

    await store.update_agent_config("support-a", {"auto_publish": False, "description": "draft"})  # v2
    await store.update_agent_config("support-a", {"description": "draft 2"})  # v3
    await store.publish("support-a", 2, canary_percent=50)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    services = WorkerServices(settings, store)
    await services.start()

    async def start(sources: list[MetadataSource], room: str = "r") -> SessionRecord:
        prepared = await prepare_session(services, sources, room=room, audio=False, llm_client=FakeOpenAI().client())
        await prepared.aclose()
        return await store.get_session(prepared.record.session_id)

    try:
        for uid in ("ada", "bob", "cy", "dee", "eve", "fay"):
            rec = await start(job({"agent_id": "support-a", "user_id": uid}))
            want = arm_for("support-a", uid, 50)
            assert (rec.arm, rec.config_version) == (want, 2 if want == "canary" else 1), uid
        pinned = await start(job({"agent_id": "support-a", "version": 3, "user_id": "ada"}))
        assert (pinned.config_version, pinned.arm, pinned.route_reason) == (3, None, "agent_id:pinned_version")
        unknown = await start(job({"agent_id": "support-a", "version": 9, "user_id": "ada"}))
        assert unknown.config_version in (1, 2) and unknown.route_reason == "agent_id:unknown_version"
        room = await start([MetadataSource("job", None),
                            MetadataSource("room", json.dumps({"agent_id": "support-a", "version": 3}))])
        assert room.config_version in (1, 2) and room.route_reason == "agent_id"
    finally:
        await services.aclose()
