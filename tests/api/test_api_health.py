"""Liveness and readiness: what a probe sees as the store and worker change state."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.api import RuntimeStatus
from app.domain import StoreUnavailable

Client = AsyncTestClient[Litestar]


async def test_healthz_always_ok(anon: Client, store: Any) -> None:
    r = await anon.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    await store.aclose()  # even with the database gone
    assert (await anon.get("/healthz")).status_code == 200


@pytest.mark.parametrize("worker", ["disabled", "registered"])
async def test_ready_when_store_ok_and_worker_registered_or_disabled(
    anon: Client, status: RuntimeStatus, worker: Any
) -> None:
    status.set_worker(worker)
    r = await anon.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"ready": True, "store": "ok", "worker": worker, "detail": None, "models": None,
                        "workers": None}  # no worker processes: the worker runs in this process
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("worker", ["connecting", "draining", "failed"])
async def test_not_ready_while_worker_is_not_registered(
    anon: Client, status: RuntimeStatus, worker: Any
) -> None:
    status.set_worker(worker, "livekit unreachable, retry in 4s" if worker == "failed" else None)
    r = await anon.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert (body["ready"], body["store"], body["worker"]) == (False, "ok", worker)
    assert body["detail"] == (
        "livekit unreachable, retry in 4s" if worker == "failed" else f"worker is {worker}"
    )


async def test_not_ready_when_store_is_down(anon: Client, store: Any, status: RuntimeStatus) -> None:
    status.set_worker("registered")
    await store.aclose()
    r = await anon.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert (body["store"], body["worker"]) == ("down", "registered")
    assert body["detail"]


async def test_store_ping_that_hangs_is_down_within_the_timeout(
    anon: Client, store: Any, status: RuntimeStatus, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hang() -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(store, "ping", hang)
    status.store_ping_timeout = 0.2
    started = time.monotonic()
    r = await anon.get("/readyz")
    assert time.monotonic() - started < 2
    assert r.status_code == 503
    assert r.json()["store"] == "down"
    assert "0.2s" in r.json()["detail"]


async def test_unexpected_ping_error_is_not_leaked(
    anon: Client, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom() -> None:
        raise RuntimeError("password=hunter2 at db.internal:5432")

    monkeypatch.setattr(store, "ping", boom)
    r = await anon.get("/readyz")
    assert r.status_code == 503
    assert "hunter2" not in r.text and "db.internal" not in r.text


async def test_store_unavailable_message_is_reported(
    anon: Client, store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable() -> None:
        raise StoreUnavailable("database unreachable: ConnectionRefusedError")

    monkeypatch.setattr(store, "ping", unavailable)
    r = await anon.get("/readyz")
    assert r.json()["detail"] == "database unreachable: ConnectionRefusedError"
