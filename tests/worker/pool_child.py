"""Worker processes for the pool tests: the real `WorkerRuntime` (its store, config
cache, VAD, session writers, heartbeats, status reports, SIGTERM drain), with calls
that come from the test instead of LiveKit (no LiveKit server here).

`sessions_main`: `POOL_TEST_SESSIONS` text sessions, each on its own thread and loop as
LiveKit's THREAD executor runs a job, started by the production session start
(`prepare_job` on a `fake_job_context`, the real OpenAI plugin on a scripted endpoint),
registered with the process's `active_sessions` as `entrypoint` does; each caller says
something every `TURN_EVERY_S` until the session is closed. Their ids go to
`POOL_TEST_DIR/w<index>-<pid>.txt`.

`resolve_main`: resolves purpose "sales" through the session start's resolver on this
process's config source every 10 ms and appends `<version> <wall time>` to
`POOL_TEST_DIR/resolve-w<index>.txt` whenever the version changes.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from livekit.agents import AgentSession
from livekit.agents.testing import fake_job_context

from app.domain.routing import MetadataSource
from app.settings import Settings
from app.store.resolver import resolve_current
from app.worker.drain import active_sessions
from app.worker.entrypoint import prepare_job
from app.worker.process import WorkerRuntime
from sim.fake_openai import FakeOpenAI, ScriptedText

TURN_EVERY_S = 0.3
PURPOSES = ["support", "sales"]


def _out_dir() -> Path:
    return Path(os.environ["POOL_TEST_DIR"])


class SessionsRuntime(WorkerRuntime):
    async def run_jobs(self) -> None:
        self.report("registered", None)
        n = int(os.environ.get("POOL_TEST_SESSIONS", "2"))
        for i in range(n):
            threading.Thread(target=asyncio.run, args=(self._job(i),), name=f"job-{i}", daemon=True).start()
        await asyncio.Event().wait()

    async def _job(self, i: int) -> None:
        assert self.services is not None
        fake = FakeOpenAI([ScriptedText(f"Noted, item {k}.") for k in range(1000)])
        meta = {"purpose": PURPOSES[i % len(PURPOSES)], "user_id": f"caller-{self.index}-{i}"}
        with fake_job_context(job_metadata=json.dumps(meta)) as ctx:
            prepared = await prepare_job(ctx, self.services, audio=False, llm_client=fake.client())
            session: AgentSession[None] = AgentSession()
            prepared.manager.attach(session)
            closed = asyncio.Event()
            session.on("close", lambda _ev: closed.set())
            active_sessions.register(session, prepared)
            await session.start(prepared.agent, capture_run=True)
            with open(_out_dir() / f"w{self.index}-{os.getpid()}.txt", "a") as f:
                f.write(prepared.record.session_id + "\n")
            k = 0
            while not closed.is_set():
                try:
                    await session.run(user_input=f"item {k}")
                except Exception:  # the drain closed the session mid-turn
                    break
                k += 1
                try:
                    await asyncio.wait_for(closed.wait(), TURN_EVERY_S)
                except TimeoutError:
                    pass
            await closed.wait()
            await prepared.aclose()  # the job's shutdown callback


class ResolveRuntime(WorkerRuntime):
    async def run_jobs(self) -> None:
        assert self.services is not None
        self.report("registered", None)
        source = self.services.config_source
        sources = [MetadataSource("job", json.dumps({"purpose": "sales"}))]
        last = None
        path = _out_dir() / f"resolve-w{self.index}.txt"
        while True:
            res = await resolve_current(source, sources, room="probe")
            if res.config.version != last and res.snapshot is not None:
                last = res.config.version
                with open(path, "a") as f:
                    f.write(f"{res.config.agent_id} {last} {time.time():.6f}\n")
            await asyncio.sleep(0.01)


def sessions_main(settings: Settings, index: int, conn: Connection, json_logs: bool, dev: bool) -> None:
    raise SystemExit(asyncio.run(SessionsRuntime(settings, index, conn, dev=dev).run()))


def resolve_main(settings: Settings, index: int, conn: Connection, json_logs: bool, dev: bool) -> None:
    raise SystemExit(asyncio.run(ResolveRuntime(settings, index, conn, dev=dev).run()))
