"""Where test runs run: a bounded pool of background tasks in the serving process.

`POST …/versions/{v}/test-runs` queues a run in the store and hands it here; the
request returns 202 at once. At most `concurrency` runs execute at a time (tests of
one run one after another), and at most `max_queued` wait; beyond that a new run is
refused (409, "retry later") rather than piling up work on a machine that also serves
calls. Each run stores its progress (`running`, then its verdict) as it goes.

A run belongs to the process that queued it. A process that stops cancels its runs and
marks them abandoned (`aclose`); one that dies leaves them unfinished, and the next start
marks them abandoned (`abandon_leftover_runs`): on SQLite every unfinished run (one machine
owns the file), on a shared database those older than `RUN_DEADLINE_S` (no live run is:
the pool fails a run that reaches its deadline).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from app.agents.context import ConfigSource
from app.domain import AgentConfig, NotFound, StoreUnavailable
from app.domain.agent_tests import AgentTest, TestResult, TestRun, TestRunStatus
from app.domain.errors import InProgress
from app.domain.values import utcnow
from app.settings import Settings
from app.store.base import ConfigStore

log = logging.getLogger(__name__)

RUN_DEADLINE_S = 900.0
"""A run not finished this long after it was queued is failed (and, found unfinished at
a start, abandoned): 50 tests of a few seconds each fit well inside."""
STOPPED = "the server stopped before the run finished"
RESTARTED = "the server restarted before the run finished"


async def abandon_leftover_runs(settings: Settings, store: ConfigStore) -> int:
    """At start, before this process queues any run: mark runs a stopped process left
    unfinished as abandoned (on a shared database only those past the deadline)."""
    single_machine = settings.database_url.startswith("sqlite")
    before = None if single_machine else utcnow() - timedelta(seconds=RUN_DEADLINE_S)
    n = await store.abandon_unfinished_test_runs(RESTARTED, created_before=before)
    if n:
        log.warning("marked %d test run(s) left unfinished by a stopped process as abandoned", n)
    return n


class StoreConfigs:
    """Handoff targets for a test: the target agent's current version from the store."""

    def __init__(self, store: ConfigStore) -> None:
        self._store = store

    async def get_agent_config(self, agent_id: str) -> AgentConfig:
        config = await self._store.get_agent_config(agent_id)
        if not config.enabled:
            raise NotFound(f"agent {agent_id!r} is disabled", agent_id=agent_id)
        return config


class TestRunPool:
    """`app.domain.agent_tests.TestRunQueue` in this process."""

    __test__ = False

    def __init__(self, settings: Settings, store: ConfigStore, *, concurrency: int = 1, max_queued: int = 20,
                 configs: ConfigSource | None = None,
                 load_stack: Callable[[], Awaitable[None]] | None = None) -> None:
        """`load_stack`: awaited before a run imports LiveKit, the process's one way of
        loading the worker stack (the supervisor's: slow imports in a thread, once; a run
        importing them on the loop's thread at the same time deadlocked on the import
        locks). None: import directly (the stack is loaded already, or nothing else loads it)."""
        self._settings = settings
        self._store = store
        self._configs = configs or StoreConfigs(store)
        self._slots = asyncio.Semaphore(concurrency)
        self._max_queued = max_queued
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._runs: dict[str, TestRun] = {}
        self._load_stack = load_stack

    @property
    def busy(self) -> bool:
        """Runs are queued or running here."""
        return bool(self._tasks)

    def check_room(self) -> None:
        """Raise `InProgress` (409) when the queue is full; called before a run is stored."""
        if len(self._tasks) >= self._max_queued:
            raise InProgress(f"{len(self._tasks)} test runs are queued or running; retry when they finish",
                             queued=len(self._tasks))

    def submit(self, run: TestRun, tests: list[AgentTest]) -> None:
        """Never refuses: the run is stored already (`check_room` came before; two requests
        racing past it overshoot the bound by one each, rather than strand a queued run)."""
        self._runs[run.id] = run
        task = asyncio.create_task(self._execute(run, tests), name=f"test-run-{run.id}")
        self._tasks[run.id] = task
        task.add_done_callback(lambda _t: (self._tasks.pop(run.id, None), self._runs.pop(run.id, None)))

    async def wait(self, run_id: str) -> None:
        """Until that run has finished here (tests, the sim)."""
        task = self._tasks.get(run_id)
        if task is not None:
            await asyncio.shield(task)

    async def aclose(self) -> None:
        """Cancel the runs still here and record them as abandoned."""
        tasks = list(self._tasks.values())
        runs = list(self._runs.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for run in runs:
            done = run.model_copy(update={"status": TestRunStatus.abandoned, "finished_at": utcnow(), "error": STOPPED})
            try:
                await self._store.save_test_run(done)
            except StoreUnavailable:
                pass  # the next start marks it

    async def _execute(self, run: TestRun, tests: list[AgentTest]) -> None:
        try:
            async with asyncio.timeout(RUN_DEADLINE_S):
                async with self._slots:
                    await self._run(run, tests)
        except TimeoutError:
            await self._save(run.model_copy(update={
                "status": TestRunStatus.failed, "finished_at": utcnow(),
                "error": f"the run did not finish within {RUN_DEADLINE_S:g} s of being queued"}))
        except Exception as e:  # the store went away mid-run, a bug: the run says so
            log.exception("test run %s failed", run.id)
            await self._save(run.model_copy(update={
                "status": TestRunStatus.failed, "finished_at": utcnow(), "error": f"{type(e).__name__}: {e}"[:500]}))

    async def _run(self, run: TestRun, tests: list[AgentTest]) -> None:
        if self._load_stack is not None:
            await self._load_stack()
        from app.agents.test_runner import run_test  # LiveKit: loaded with the worker stack

        run = run.model_copy(update={"status": TestRunStatus.running, "started_at": utcnow()})
        self._runs[run.id] = run
        if not await self._save(run):
            return  # marked finished meanwhile (abandoned)
        config = await self._store.get_agent_config(run.agent_id, run.version)
        results: list[TestResult] = []
        for test in tests:
            results.append(await run_test(self._settings, self._configs, config, test.name, test.content))
            run = run.model_copy(update={"results": list(results)})
            self._runs[run.id] = run
        status = TestRunStatus.passed if all(r.passed for r in results) else TestRunStatus.failed
        await self._save(run.model_copy(update={"status": status, "finished_at": utcnow()}))

    async def _save(self, run: TestRun) -> bool:
        try:
            return await self._store.save_test_run(run)
        except StoreUnavailable as e:
            log.warning("test run %s: could not store its progress (%s)", run.id, e.message)
            return False
