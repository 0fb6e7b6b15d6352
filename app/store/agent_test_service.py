"""The store's rules for tests stored with an agent and their runs, once for every
backend (mixed into `StoreService`): a test is written only if it validates as a stored
scenario and its agent exists; the number per agent is capped; every document change
commits an `agent.test_changed` journal event with the caller's `ChangeContext`. A run
snapshots the test set (names and hash) when it is queued, so its verdict is about
exactly those tests; runs a stopped process left unfinished are marked abandoned."""

from __future__ import annotations

from datetime import datetime

from app.domain import AgentConfig, AlreadyExists, InvalidInput, NotFound
from app.domain.agent_tests import (
    MAX_TESTS_PER_AGENT,
    AgentTest,
    AgentTestCreate,
    AgentTestInput,
    TestRun,
    TestRunStatus,
    new_run_id,
    parse_test_document,
    suite_hash,
)
from app.domain.events import AGENT_TEST_CHANGED, SYSTEM, AgentTestChangedData, ChangeContext, Event, make_event
from app.store.backend import Backend

MAX_RUNS_LISTED = 100


def _event(test: AgentTest, change: str, ctx: ChangeContext) -> list[Event]:
    data = AgentTestChangedData.model_validate({"agent_id": test.agent_id, "name": test.name, "change": change})
    return [make_event(AGENT_TEST_CHANGED, data, at=test.updated_at, agent_id=test.agent_id, ctx=ctx)]


def _test_not_found(agent_id: str, name: str) -> NotFound:
    return NotFound(f"agent {agent_id!r} has no test {name!r}", agent_id=agent_id, name=name)


class AgentTestStore:
    backend: Backend

    def _journaled(self) -> None:  # StoreService: wake in-process journal readers
        raise NotImplementedError

    async def get_agent_config(self, agent_id: str, version: int | None = None) -> AgentConfig:
        raise NotImplementedError  # StoreService

    # ---------------------------------------------------------------- documents

    async def create_agent_test(self, agent_id: str, data: AgentTestCreate, *, ctx: ChangeContext = SYSTEM) -> AgentTest:
        await self.get_agent_config(agent_id)  # NotFound for an unknown agent
        parse_test_document(data.name, data.content)
        if len(await self.backend.agent_tests.list(agent_id)) >= MAX_TESTS_PER_AGENT:
            raise InvalidInput(f"at most {MAX_TESTS_PER_AGENT} tests per agent")
        now = self.backend.now()
        test = AgentTest(agent_id=agent_id, name=data.name, content=data.content, created_at=now, updated_at=now)
        if not await self.backend.agent_tests.create(test, _event(test, "created", ctx)):
            raise AlreadyExists(f"agent {agent_id!r} already has a test {data.name!r}", agent_id=agent_id,
                                name=data.name)
        self._journaled()
        return test

    async def replace_agent_test(
        self, agent_id: str, name: str, data: AgentTestInput, *, ctx: ChangeContext = SYSTEM
    ) -> AgentTest:
        old = await self.get_agent_test(agent_id, name)
        parse_test_document(name, data.content)
        test = old.model_copy(update={"content": data.content, "updated_at": self.backend.now()})
        if not await self.backend.agent_tests.replace(test, _event(test, "updated", ctx)):
            raise _test_not_found(agent_id, name)
        self._journaled()
        return test

    async def delete_agent_test(self, agent_id: str, name: str, *, ctx: ChangeContext = SYSTEM) -> None:
        test = await self.get_agent_test(agent_id, name)
        gone = test.model_copy(update={"updated_at": self.backend.now()})
        if not await self.backend.agent_tests.delete(agent_id, name, _event(gone, "deleted", ctx)):
            raise _test_not_found(agent_id, name)
        self._journaled()

    async def get_agent_test(self, agent_id: str, name: str) -> AgentTest:
        if not isinstance(agent_id, str) or not isinstance(name, str):
            raise _test_not_found(str(agent_id), str(name))
        test = await self.backend.agent_tests.get(agent_id, name)
        if test is None:
            raise _test_not_found(agent_id, name)
        return test

    async def list_agent_tests(self, agent_id: str) -> list[AgentTest]:
        """Every test of the agent, by name (none for an agent without tests)."""
        return await self.backend.agent_tests.list(agent_id)

    # --------------------------------------------------------------------- runs

    async def create_test_run(
        self, agent_id: str, version: int, *, ctx: ChangeContext = SYSTEM
    ) -> tuple[TestRun, list[AgentTest]]:
        """Queue a run of the agent's current tests against `version` (NotFound if that
        version does not exist); returns it with the tests it snapshotted."""
        await self.get_agent_config(agent_id, version)
        tests = await self.backend.agent_tests.list(agent_id)
        run = TestRun(id=new_run_id(), agent_id=agent_id, version=version, status=TestRunStatus.queued,
                      tests_hash=suite_hash(tests), tests=[t.name for t in tests],
                      created_at=self.backend.now(), actor=ctx.actor)
        await self.backend.test_runs.add(run)
        return run, tests

    async def save_test_run(self, run: TestRun) -> bool:
        """Store the run's progress; False if it was finished meanwhile (marked abandoned)."""
        return await self.backend.test_runs.save(run)

    async def get_test_run(self, agent_id: str, run_id: str) -> TestRun:
        run = await self.backend.test_runs.get(run_id) if isinstance(run_id, str) else None
        if run is None or run.agent_id != agent_id:
            raise NotFound(f"agent {agent_id!r} has no test run {run_id!r}", agent_id=agent_id, run_id=str(run_id))
        return run

    async def list_test_runs(self, agent_id: str, version: int | None = None, limit: int = 20) -> list[TestRun]:
        """Newest first."""
        return await self.backend.test_runs.list(agent_id, version, max(1, min(limit, MAX_RUNS_LISTED)))

    async def abandon_unfinished_test_runs(self, reason: str, *, created_before: datetime | None = None) -> int:
        """At start: runs a stopped process left queued or running can never finish
        (`created_before`: only those queued before then; see `app.agents.test_pool`)."""
        return await self.backend.test_runs.abandon_unfinished(self.backend.now(), reason, created_before)
