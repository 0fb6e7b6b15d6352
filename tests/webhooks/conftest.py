"""Fixtures for the dispatcher tests: a real SQLite store, a real HTTP receiver on
loopback (`sim.webhook_receiver`), and a dispatcher with a short retry schedule, so
faults that take hours in production play out in seconds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook as Verifier

from app.domain.webhooks import WebhookInput
from app.settings import Settings
from app.store import ConfigStore, open_store
from app.webhooks.dispatcher import Dispatcher
from sim.webhook_receiver import Received, WebhookReceiver

FAST: dict[str, Any] = dict(
    webhook_url_policy="any", webhook_retry_base_delay=0.05, webhook_retry_max_delay=0.2,
    webhook_timeout=1.0, webhook_connect_timeout=0.5, webhook_poll_interval=0.05,
)


def fast_settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, **{**FAST, **kw})  # type: ignore[call-arg]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ConfigStore]:
    s = open_store(f"sqlite+aiosqlite:///{tmp_path}/hooks.db")
    await s.start()
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as rx:
        yield rx


MakeDispatcher = Callable[..., Dispatcher]


@pytest.fixture
async def dispatcher_factory(store: ConfigStore) -> AsyncIterator[MakeDispatcher]:
    made: list[Dispatcher] = []

    def make(s: ConfigStore | None = None, **settings: Any) -> Dispatcher:
        d = Dispatcher(fast_settings(**settings), s or store)
        d.start()
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            await d.aclose()


async def subscribe(store: ConfigStore, url: str, events: list[str] | None = None, **kw: Any):
    return await store.create_webhook(WebhookInput(url=url, events=events or ["session.started", "session.ended"],
                                                   **kw))


def verify(secret: str, req: Received) -> Any:
    """What a receiver does: the Standard Webhooks library checks the signature."""
    return Verifier(secret).verify(req.body, req.headers)
