"""Graceful drain with live text sessions (issue 6 item 4).

Each session runs as LiveKit's THREAD executor runs a job: its own event loop in its
own thread, started through the real session-start logic (`prepare_job` on a
`fake_job_context` → routing → cached config → AgentFactory → real OpenAI plugin on the
scripted endpoint) and registered with a `SessionRegistry` as `entrypoint` does. The
drain runs on the test's loop, which (like the supervisor's) also owns the store.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit.agents import AgentServer, AgentSession, JobContext, JobExecutorType
from livekit.agents.testing import fake_job_context
from livekit.protocol import models

from app.domain import SessionStatus
from app.seed import seed
from app.settings import Settings
from app.store.sql import SQLStore
from app.worker import drain
from app.worker.drain import GOODBYE, SHUTDOWN_REASON, SessionRegistry, drain_worker
from app.worker.entrypoint import prepare_job
from app.worker.process import WorkerRuntime
from app.worker.services import WorkerServices, install_services
from sim.fake_openai import FakeOpenAI


@pytest.fixture
async def services(tmp_path) -> AsyncIterator[WorkerServices]:
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/drain.db")
    await store.start()
    await seed(store)
    svc = WorkerServices(Settings(cache_poll_interval=0.05), store)
    await svc.start()
    yield svc
    await svc.aclose()
    await store.aclose()


class JobThread(threading.Thread):
    """One text session on its own loop/thread. `end_after`: the caller hangs up then."""

    def __init__(
        self, services: WorkerServices, registry: SessionRegistry, fake: FakeOpenAI,
        user_turns: list[str], *, metadata: dict[str, Any], end_after: float | None = None,
    ) -> None:
        super().__init__(name="job-thread", daemon=True)
        self.services, self.registry, self.fake = services, registry, fake
        self.user_turns, self.metadata, self.end_after = user_turns, metadata, end_after
        self.ready = threading.Event()
        self.session_id: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._job())
        except BaseException as e:  # surfaced by the test
            self.error = e
            self.ready.set()

    async def _job(self) -> None:
        with fake_job_context(job_metadata=json.dumps(self.metadata)) as ctx:
            prepared = await prepare_job(ctx, self.services, audio=False, llm_client=self.fake.client())
            self.session_id = prepared.record.session_id
            session = AgentSession()
            prepared.manager.attach(session)
            closed = asyncio.Event()
            session.on("close", lambda _ev: closed.set())
            self.registry.register(session, prepared)  # as `entrypoint` does
            await session.start(prepared.agent, capture_run=True)
            for text in self.user_turns:
                await session.run(user_input=text)
            self.ready.set()
            if self.end_after is not None:
                await asyncio.sleep(self.end_after)
                await session.aclose()
            await closed.wait()
            await prepared.aclose()  # the job's shutdown callback

    async def wait_ready(self, timeout: float = 30) -> None:
        assert await asyncio.to_thread(self.ready.wait, timeout), "session did not start"
        if self.error:
            raise self.error


async def test_drain_says_goodbye_and_abandons_a_session_outliving_the_timeout(services) -> None:
    registry = SessionRegistry()
    fake = FakeOpenAI().text("Sure, I can help with your order.")
    job = JobThread(services, registry, fake, ["Hi, my order is late"], metadata={"purpose": "support"})
    job.start()
    await job.wait_ready()
    assert len(registry) == 1

    t0 = time.monotonic()
    report = await drain_worker(None, registry, timeout=0.5)
    elapsed = time.monotonic() - t0
    await asyncio.to_thread(job.join, 30)
    print(f"\ndrain with 1 live session, timeout 0.5s: {elapsed:.2f}s")

    assert not job.is_alive() and job.error is None
    assert report.timed_out and report.abandoned == [job.session_id]
    assert report.goodbyes == 1 and not report.errors
    assert 0.5 <= elapsed < 0.5 + drain.ABANDON_BUDGET
    assert len(registry) == 0
    rec = await services.store.get_session(job.session_id)
    assert rec.status == SessionStatus.abandoned
    assert rec.end_reason == SHUTDOWN_REASON
    assert rec.ended_at is not None
    # every turn is stored, in order, the goodbye last
    assert rec.turns[0].role == "assistant"  # the seeded support agent's greeting
    assert [(t.role, t.text) for t in rec.turns[1:]] == [
        ("user", "Hi, my order is late"),
        ("assistant", "Sure, I can help with your order."),
        ("assistant", GOODBYE),
    ]
    assert [t.seq for t in rec.turns] == [0, 1, 2, 3]
    assert len(fake.requests) == 1  # the goodbye is said, not generated


async def test_a_session_that_ends_within_the_timeout_is_left_alone(services) -> None:
    registry = SessionRegistry()
    fake = FakeOpenAI().text("Our plans start at ten dollars.")
    job = JobThread(
        services, registry, fake, ["What does it cost?"], metadata={"purpose": "sales"}, end_after=0.3
    )
    job.start()
    await job.wait_ready()

    t0 = time.monotonic()
    report = await drain_worker(None, registry, timeout=20)
    elapsed = time.monotonic() - t0
    await asyncio.to_thread(job.join, 30)

    assert not report.timed_out and report.abandoned == []
    assert elapsed < 5  # returned when the session ended, not at the timeout
    rec = await services.store.get_session(job.session_id)
    assert rec.status == SessionStatus.completed
    assert [t.text for t in rec.turns][-2:] == ["What does it cost?", "Our plans start at ten dollars."]
    assert GOODBYE not in [t.text for t in rec.turns]


def test_the_abandon_budget_covers_the_record_flush() -> None:
    import inspect

    from app.worker.sessions import SessionManager

    flush = inspect.signature(SessionManager).parameters["flush_timeout"].default
    assert flush <= drain.FLUSH_TIMEOUT


async def test_drain_with_nothing_running_returns_at_once() -> None:
    t0 = time.monotonic()
    report = await drain_worker(None, SessionRegistry(), timeout=30)
    assert time.monotonic() - t0 < 0.5
    assert report.abandoned == [] and not report.timed_out


# ---------------------------------------------------------------------------------------
# A worker process's shutdown path with a real AgentServer (THREAD executor): the job is
# dispatched by LiveKit's own machinery (`simulate_job`), LiveKit's drain is called and
# outlived, and the worker closes once the drain has ended the session.


async def test_worker_process_shutdown_drains_a_livekit_job(services, monkeypatch) -> None:
    registry = SessionRegistry()
    monkeypatch.setenv("APP_INSTANCE_ID", "drain-test")  # the runtime takes an owner id of its own
    monkeypatch.setattr("app.worker.process.active_sessions", registry)
    fake = FakeOpenAI().text("Let me look that up.")
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    ids: list[str] = []

    async def text_entrypoint(ctx: JobContext) -> None:
        # `app.worker.entrypoint.entrypoint` in text mode (no room audio in a test)
        await ctx.connect()
        prepared = await prepare_job(ctx, services, audio=False, llm_client=fake.client())
        ids.append(prepared.record.session_id)
        session = AgentSession()
        prepared.manager.attach(session)
        ctx.add_shutdown_callback(prepared.aclose)
        ctx.add_shutdown_callback(registry.register(session, prepared).release)
        session.on("close", lambda ev: ctx.shutdown(reason="session closed"))
        await session.start(prepared.agent, capture_run=True)
        await session.run(user_input="Where is my parcel?")
        loop.call_soon_threadsafe(started.set)

    install_services(services)
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD, num_idle_processes=0, port=0,
        ws_url="ws://127.0.0.1:9", api_key="APItest", api_secret="a-test-secret-long-enough-for-hs256-0123456789",
    )
    server.rtc_session(text_entrypoint, agent_name="voice-platform")
    worker_task = asyncio.create_task(server.run(devmode=True, unregistered=True))
    try:
        for _ in range(100):
            if getattr(server, "_close_future", None) is not None:
                break
            await asyncio.sleep(0.05)
        room = models.Room(sid="RM_drain", name="drain-room", metadata=json.dumps({"purpose": "support"}))
        await server.simulate_job("drain-room", fake_job=True, room_info=room)
        await asyncio.wait_for(started.wait(), 30)
        assert len(server.active_jobs) == 1 and len(registry) == 1

        # the worker process's drain (app/worker/process.py), as SIGTERM runs it there
        parent, child = multiprocessing.Pipe()
        runtime = WorkerRuntime(Settings(drain_timeout=1.0), 0, child)
        runtime.agent_server = server
        t0 = time.monotonic()
        await runtime.drain()
        elapsed = time.monotonic() - t0
        print(f"\nworker process drain with 1 live session, DRAIN_TIMEOUT=1s: {elapsed:.2f}s")

        assert server.draining  # LiveKit was told to refuse new jobs
        assert parent.poll() and parent.recv()["state"] == "draining"  # the supervisor hears it
        assert runtime.state == "draining"
        await asyncio.wait_for(worker_task, 5)  # the closed AgentServer's run() returned
        assert 1.0 <= elapsed < 1.0 + drain.ABANDON_BUDGET + drain.WORKER_CLOSE_TIMEOUT
        assert len(registry) == 0
        rec = await services.store.get_session(ids[0])
        assert rec.status == SessionStatus.abandoned and rec.end_reason == SHUTDOWN_REASON
        assert [(t.role, t.text) for t in rec.turns][-3:] == [
            ("user", "Where is my parcel?"),
            ("assistant", "Let me look that up."),
            ("assistant", GOODBYE),
        ]
    finally:
        install_services(None)
        if not worker_task.done():
            await server.aclose()
            worker_task.cancel()
