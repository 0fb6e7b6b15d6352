"""Fixtures for the dispatcher tests: a real SQLite store, a real HTTP receiver on
loopback (`sim.webhook_receiver`), and a dispatcher with a short retry schedule, so
faults that take hours in production play out in seconds."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from standardwebhooks import Webhook as Verifier

from app.domain.webhooks import WebhookInput
from app.settings import Settings
from app.store import ConfigStore, open_store
from app.webhooks.dispatcher import Dispatcher
from sim.fake_openai import FakeOpenAI
from sim.webhook_receiver import Received, WebhookReceiver

FAST: dict[str, Any] = dict(
    webhook_url_policy="any", webhook_retry_base_delay=0.05, webhook_retry_max_delay=0.2,
    webhook_timeout=1.0, webhook_connect_timeout=0.5, webhook_poll_interval=0.05,
)


REPO = Path(__file__).resolve().parents[2]


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


async def serve_scripted(fake: FakeOpenAI, db_url: str) -> tuple[uvicorn.Server, asyncio.Task[None], dict[str, str]]:
    """The scripted OpenAI-compatible endpoint on a free loopback port, and the environment
    for `python -m app` processes that use it and `db_url` (stop: `should_exit`, await the task)."""
    server = uvicorn.Server(uvicorn.Config(fake.asgi_app(), host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LIVEKIT_", "DATABASE_", "WEBHOOK_"))}
    env.update(PYTHONPATH=str(REPO), DATABASE_URL=db_url, OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
               OPENAI_API_KEY="sk-local-test")
    return server, task, env


async def seed_database(cwd: Path, env: dict[str, str]) -> None:
    """`python -m app seed` into the environment's database."""
    seed = await asyncio.create_subprocess_exec(sys.executable, "-m", "app", "seed", cwd=cwd, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await seed.communicate()
    assert seed.returncode == 0, out.decode()
