"""`/api/v1/agents/config/{agent_id}/tests` (the agent's stored tests) and
`…/versions/{version}/test-runs` (running them against a version, and the results).

A test document is a scenario in the sim's format, sent as YAML text in `content`; one
that does not validate is a 422 whose `extra` names each problem's line and field
(`content.sessions[0].turns[1].user`, line 9). A run is queued and executed in the
background (`app.agents.test_pool`): the POST answers 202 with the run, to be polled at
its `GET`. The publish gate over these runs is `app.store.test_gate.failing_tests`
(`GET …/versions/{version}/test-gate` shows its answer).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, post, put
from litestar.exceptions import ServiceUnavailableException
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from pydantic import BaseModel, Field

from app.api.agents import AgentIdPath
from app.api.changes import Change
from app.api.deps import MAX_INT, Store
from app.api.errors import error_responses
from app.domain import NotFound
from app.domain.agent_tests import AgentTest, AgentTestCreate, AgentTestInput, TestRun, TestRunQueue
from app.store.test_gate import failing_tests


class TestGate(BaseModel):
    """The publish gate's answer for one version (`app.store.test_gate`)."""

    require_passing_tests: bool = Field(description="The version's own setting")
    failing_tests: list[str] = Field(description="Current tests without a passing run against this version")
    may_publish: bool


TestName = Annotated[str, PathParameter(max_length=64, description="Test name")]
RunVersion = Annotated[int, PathParameter(ge=1, le=MAX_INT, description="Version the tests run against")]
RunId = Annotated[str, PathParameter(max_length=64, description="Run id (`run_…`)")]


def _queue(request: Request[Any, Any, Any]) -> TestRunQueue:
    queue: TestRunQueue | None = request.app.state.get("test_runs")
    if queue is None:  # an app built without a runner (a tool, not the served process)
        raise ServiceUnavailableException("test runs are not available in this process")
    return queue


class AgentTestController(Controller):
    path = "/agents/config/{agent_id:str}"
    tags = ["agent tests"]

    @get("/tests", name="agent-tests:list", summary="The agent's stored tests, by name",
         responses=error_responses(404, 422))
    async def list_tests(self, store: Store, agent_id: AgentIdPath) -> list[AgentTest]:
        await store.get_agent_config(agent_id)  # 404 for an unknown agent, not an empty list
        return await store.list_agent_tests(agent_id)

    @post("/tests", name="agent-tests:create", status_code=HTTP_201_CREATED,
          summary="Store a test (a scenario in the sim's format, as YAML text)",
          responses=error_responses(400, 404, 409, 413, 422))
    async def create_test(
        self, store: Store, change: Change, agent_id: AgentIdPath, data: JSONBody[AgentTestCreate]
    ) -> AgentTest:
        return await store.create_agent_test(agent_id, data, ctx=change)

    @get("/tests/{name:str}", name="agent-tests:get", responses=error_responses(404, 422))
    async def get_test(self, store: Store, agent_id: AgentIdPath, name: TestName) -> AgentTest:
        return await store.get_agent_test(agent_id, name)

    @put("/tests/{name:str}", name="agent-tests:replace", summary="Replace a test's document",
         responses=error_responses(400, 404, 413, 422))
    async def replace_test(
        self, store: Store, change: Change, agent_id: AgentIdPath, name: TestName, data: JSONBody[AgentTestInput]
    ) -> AgentTest:
        return await store.replace_agent_test(agent_id, name, data, ctx=change)

    @delete("/tests/{name:str}", name="agent-tests:delete", status_code=HTTP_204_NO_CONTENT,
            responses=error_responses(404, 422))
    async def delete_test(self, store: Store, change: Change, agent_id: AgentIdPath, name: TestName) -> None:
        await store.delete_agent_test(agent_id, name, ctx=change)

    @post("/versions/{version:int}/test-runs", name="agent-tests:run", status_code=HTTP_202_ACCEPTED,
          summary="Run the agent's current tests against a version, in the background",
          description="202 with the queued run; poll `GET …/test-runs/{run_id}`. 409 while too many runs "
          "are queued.", responses=error_responses(404, 409, 422))
    async def run_tests(
        self, request: Request[Any, Any, Any], store: Store, change: Change, agent_id: AgentIdPath,
        version: RunVersion,
    ) -> Response[TestRun]:
        queue = _queue(request)
        queue.check_room()
        run, tests = await store.create_test_run(agent_id, version, ctx=change)
        queue.submit(run, tests)
        return Response(run, status_code=HTTP_202_ACCEPTED)

    @get("/versions/{version:int}/test-runs", name="agent-tests:runs",
         summary="Test runs against a version, newest first", responses=error_responses(404, 422))
    async def list_runs(
        self, store: Store, agent_id: AgentIdPath, version: RunVersion,
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="At most this many")] = 20,
    ) -> list[TestRun]:
        await store.get_agent_config(agent_id, version)
        return await store.list_test_runs(agent_id, version, limit)

    @get("/versions/{version:int}/test-runs/{run_id:str}", name="agent-tests:run-result",
         responses=error_responses(404, 422))
    async def get_run(self, store: Store, agent_id: AgentIdPath, version: RunVersion, run_id: RunId) -> TestRun:
        run = await store.get_test_run(agent_id, run_id)
        if run.version != version:
            raise NotFound(f"run {run_id!r} is not a run of version {version}", run_id=run_id)
        return run

    @get("/versions/{version:int}/test-gate", name="agent-tests:gate",
         summary="Would publishing this version be refused for its tests? (`require_passing_tests`)",
         responses=error_responses(404, 422))
    async def gate(self, store: Store, agent_id: AgentIdPath, version: RunVersion) -> TestGate:
        config = await store.get_agent_config(agent_id, version)
        failing = await failing_tests(store, agent_id, version)
        return TestGate(require_passing_tests=config.require_passing_tests, failing_tests=failing,
                        may_publish=not failing)

    @get("/test-runs", name="agent-tests:all-runs",
         summary="Test runs against any version of the agent, newest first (the console's history view)",
         responses=error_responses(404, 422))
    async def list_all_runs(
        self, store: Store, agent_id: AgentIdPath,
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="At most this many")] = 50,
    ) -> list[TestRun]:
        await store.get_agent_config(agent_id)
        return await store.list_test_runs(agent_id, None, limit)
