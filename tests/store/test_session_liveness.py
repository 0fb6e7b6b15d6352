"""Supervisor-level crash recovery on every backend: at start, sessions a dead process
left `active` are abandoned (SQLite: all of them, the file has one owner; shared
backends: only those whose owner stopped heartbeating), and while running the
supervisor heartbeats its own sessions and sweeps stale ones, riding out outages."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from app.domain import SessionRecord, SessionStatus, StoreUnavailable
from app.domain.models import utcnow
from app.settings import Settings
from app.store import ConfigStore
from app.supervisor import Supervisor
from tests.store.conftest import StoreTarget
from tests.store.test_contract import _set_heartbeat


def supervisor(target: StoreTarget, store: ConfigStore, **settings: Any) -> Supervisor:
    sup = Supervisor(Settings(_env_file=None, database_url=target.url, **settings), dev=False)  # type: ignore[call-arg]
    sup.store = store
    return sup


async def start(store: ConfigStore, sid: str, owner: str | None, *, beat_ago: float | None = None) -> None:
    await store.start_session(SessionRecord(session_id=sid, room="r", agent_id="a", owner=owner,
                                            started_at=utcnow() - timedelta(hours=1)))
    if beat_ago is not None:
        await _set_heartbeat(store, sid, utcnow() - timedelta(seconds=beat_ago))


async def status(store: ConfigStore, sid: str) -> SessionStatus:
    return (await store.get_session(sid)).status


async def test_start_recovery(store_target: StoreTarget, store: ConfigStore, caplog) -> None:
    await start(store, "dead", "host-a:1:x", beat_ago=600)
    await start(store, "alive", "host-b:2:y", beat_ago=5)
    await start(store, "legacy", None)  # written before owners existed: started an hour ago
    sup = supervisor(store_target, store)
    with caplog.at_level(logging.WARNING, logger="app.supervisor"):
        await sup._after_store_start()
    assert await status(store, "dead") == SessionStatus.abandoned
    assert await status(store, "legacy") == SessionStatus.abandoned
    if store_target.backend == "sqlite":
        # one machine owns the file: everything left active is a dead predecessor's
        assert await status(store, "alive") == SessionStatus.abandoned
        assert "marked 3 session(s) left active by a previous run as abandoned" in caplog.text
    else:
        # another container is heartbeating this one: it must survive our start
        assert await status(store, "alive") == SessionStatus.active
        assert "marked 2 session(s) of stopped process(es) as abandoned" in caplog.text
    rec = await store.get_session("dead")
    assert rec.end_reason and rec.ended_at is not None
    if store_target.backend != "sqlite":
        assert "heartbeat" in rec.end_reason


async def test_heartbeats_keep_own_sessions_and_sweep_dead_ones(store_target: StoreTarget, store: ConfigStore) -> None:
    sup = supervisor(store_target, store, session_heartbeat_interval=0.1, session_stale_after=0.5)
    await start(store, "mine", sup.owner, beat_ago=0)
    await start(store, "dead", "elsewhere", beat_ago=0)  # its owner is gone from now on
    began = utcnow()
    task = asyncio.create_task(sup._session_liveness())
    try:
        await asyncio.sleep(1.6)  # > the ok-window (0.5 s) + a sweep interval
    finally:
        task.cancel()
    assert await status(store, "dead") == SessionStatus.abandoned
    mine = await store.get_session("mine")
    assert mine.status == SessionStatus.active
    # still heartbeated after the window in which an unrefreshed session would go stale
    assert mine.heartbeat_at is not None and mine.heartbeat_at - began > timedelta(seconds=0.6)


class _Flaky:
    """A store whose heartbeats and sweeps fail while `down` (the rest passes through)."""

    def __init__(self, inner: ConfigStore) -> None:
        self.inner = inner
        self.down = True
        self.beats = 0
        self.sweeps = 0

    async def heartbeat(self, owner: str) -> int:
        self.beats += 1
        if self.down:
            raise StoreUnavailable("simulated outage")
        return await self.inner.heartbeat(owner)

    async def abandon_stale_sessions(self, cutoff: Any, reason: str) -> int:
        self.sweeps += 1
        return await self.inner.abandon_stale_sessions(cutoff, reason)


async def test_an_outage_is_ridden_out_and_does_not_trigger_a_sweep(
    store_target: StoreTarget, store: ConfigStore, caplog
) -> None:
    flaky = _Flaky(store)
    sup = supervisor(store_target, flaky, session_heartbeat_interval=0.1, session_stale_after=0.4)  # type: ignore[arg-type]
    # another container's session: its heartbeats failed during the outage like ours
    await start(store, "other", "other-owner", beat_ago=0)
    task = asyncio.create_task(sup._session_liveness())
    try:
        with caplog.at_level(logging.WARNING, logger="app.supervisor"):
            await asyncio.sleep(0.8)
            assert flaky.beats >= 3 and flaky.sweeps == 0  # no sweep while heartbeats fail
            flaky.down = False
            await store.heartbeat("other-owner")  # the other container resumes too
            await asyncio.sleep(0.25)
            assert flaky.sweeps == 0  # not yet: others get a whole window to resume
            assert await status(store, "other") == SessionStatus.active
            await asyncio.sleep(0.6)
        assert not task.done()
        assert flaky.sweeps >= 1
        assert "session heartbeat failed (simulated outage)" in caplog.text
    finally:
        task.cancel()
