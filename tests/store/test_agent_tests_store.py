"""Tests stored with an agent and their runs in the `ConfigStore` contract, on every
backend (sqlite, mongo, postgres): documents validated as stored scenarios (problems
named by line and field), unique names under racing creators, `agent.test_changed`
events with the caller's name, runs that snapshot the test set, progress that cannot
overwrite a run marked abandoned, and the publish gate read from stored runs."""

from __future__ import annotations

import asyncio

import pytest

from app.domain import AgentConfigInput, AlreadyExists, InvalidInput, NotFound
from app.domain.agent_tests import (
    AgentTestCreate,
    AgentTestInput,
    InvalidTestDocument,
    TestResult,
    TestRunStatus,
    TestsNotPassing,
    suite_hash,
)
from app.domain.events import ChangeContext
from app.store.test_gate import failing_tests, require_passing_tests
from tests.store.conftest import agent_document
from tests.store.test_contract import now_ms

EDITOR = ChangeContext(actor="ci-bot", note="add greeting test")

GREETING = """\
name: greets
sessions:
  - start:
      expect:
        - message: {contains: Hello}
"""


async def _agent(store, agent_id: str = "support-agent", **overrides) -> None:
    await store.create_agent_config(AgentConfigInput.model_validate(agent_document(agent_id, **overrides)))


async def test_documents_round_trip_and_commit_their_events(store):
    await _agent(store)
    created = await store.create_agent_test("support-agent", AgentTestCreate(name="greets", content=GREETING), ctx=EDITOR)
    assert created.content == GREETING
    assert (await store.get_agent_test("support-agent", "greets")).content == GREETING
    changed = GREETING.replace("Hello", "Hi")
    replaced = await store.replace_agent_test("support-agent", "greets", AgentTestInput(content=changed), ctx=EDITOR)
    assert replaced.updated_at >= created.updated_at and replaced.created_at == created.created_at
    assert [t.content for t in await store.list_agent_tests("support-agent")] == [changed]
    await store.delete_agent_test("support-agent", "greets", ctx=EDITOR)
    assert await store.list_agent_tests("support-agent") == []
    with pytest.raises(NotFound):
        await store.get_agent_test("support-agent", "greets")
    with pytest.raises(NotFound):
        await store.delete_agent_test("support-agent", "greets")
    events, _ = await store.list_events(types=["agent.test_changed"])
    assert sorted(e.data["change"] for e in events) == ["created", "deleted", "updated"]
    assert {(e.actor, e.note, e.agent_id) for e in events} == {("ci-bot", "add greeting test", "support-agent")}


async def test_a_name_can_be_recreated_after_a_delete(store):
    await _agent(store)
    await store.create_agent_test("support-agent", AgentTestCreate(name="greets", content=GREETING))
    await store.delete_agent_test("support-agent", "greets")
    await store.create_agent_test("support-agent", AgentTestCreate(name="greets", content=GREETING))
    assert [t.name for t in await store.list_agent_tests("support-agent")] == ["greets"]


async def test_invalid_documents_are_refused_with_line_and_field(store):
    await _agent(store)
    bad = GREETING.replace("message: {contains: Hello}", "mesage: {contains: Hello}")
    with pytest.raises(InvalidTestDocument) as err:
        await store.create_agent_test("support-agent", AgentTestCreate(name="greets", content=bad))
    problem = err.value.problems[0]
    assert problem.line == 5 and problem.field.startswith("sessions[0].start.expect[0]")
    sim_only = GREETING + "    http:\n      - url: https://crm.example/x\n"
    with pytest.raises(InvalidTestDocument) as err:
        await store.create_agent_test("support-agent", AgentTestCreate(name="greets", content=sim_only))
    assert (err.value.problems[0].line, err.value.problems[0].field) == (6, "sessions[0].http")
    assert await store.list_agent_tests("support-agent") == []


async def test_tests_need_an_existing_agent_and_a_free_name(store, open_another):
    with pytest.raises(NotFound):
        await store.create_agent_test("nobody", AgentTestCreate(name="greets", content=GREETING))
    await _agent(store)
    other = await open_another()
    results = await asyncio.gather(
        *(s.create_agent_test("support-agent", AgentTestCreate(name="greets", content=GREETING))
          for s in (store, other, store, other)),
        return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if isinstance(r, BaseException))


async def test_tests_per_agent_are_bounded(store, monkeypatch):
    import app.store.agent_test_service as svc

    monkeypatch.setattr(svc, "MAX_TESTS_PER_AGENT", 2)
    await _agent(store)
    for name in ("a", "b"):
        await store.create_agent_test("support-agent", AgentTestCreate(name=name, content=GREETING))
    with pytest.raises(InvalidInput):
        await store.create_agent_test("support-agent", AgentTestCreate(name="c", content=GREETING))


async def test_runs_snapshot_the_test_set_and_stay_abandoned(store, open_another):
    await _agent(store)
    with pytest.raises(NotFound):
        await store.create_test_run("support-agent", 7)
    tests = [await store.create_agent_test("support-agent", AgentTestCreate(name=n, content=GREETING))
             for n in ("b-test", "a-test")]
    run, snap = await store.create_test_run("support-agent", 1, ctx=EDITOR)
    assert run.status is TestRunStatus.queued and run.actor == "ci-bot"
    assert run.tests == ["a-test", "b-test"] and run.tests_hash == suite_hash(tests)
    assert [t.name for t in snap] == ["a-test", "b-test"]
    running = run.model_copy(update={"status": TestRunStatus.running, "started_at": now_ms()})
    assert await store.save_test_run(running)
    # a restart: the run's process is gone; another instance marks it abandoned at start
    other = await open_another()
    assert await other.abandon_unfinished_test_runs("restarted", created_before=running.created_at) == 0  # too new
    assert await other.abandon_unfinished_test_runs("the server restarted") == 1
    late = running.model_copy(update={"status": TestRunStatus.passed, "finished_at": now_ms()})
    assert not await store.save_test_run(late)  # the dead run's result cannot land after that
    got = await store.get_test_run("support-agent", run.id)
    assert got.status is TestRunStatus.abandoned and got.error == "the server restarted" and got.finished_at
    with pytest.raises(NotFound):
        await store.get_test_run("other-agent", run.id)
    second, _ = await store.create_test_run("support-agent", 1)
    assert [r.id for r in await store.list_test_runs("support-agent", 1)] == [second.id, run.id]
    assert await store.list_test_runs("support-agent", 2) == []


async def test_the_gate_needs_a_passing_run_of_the_current_tests(store):
    await _agent(store, require_passing_tests=True)
    assert await failing_tests(store, "support-agent", 1) == []  # no tests: nothing to fail
    for name in ("greets", "collects"):
        await store.create_agent_test("support-agent", AgentTestCreate(name=name, content=GREETING))
    assert await failing_tests(store, "support-agent", 1) == ["collects", "greets"]  # never run

    async def finish(passed: dict[str, bool]) -> None:
        run, _ = await store.create_test_run("support-agent", 1)
        results = [TestResult(name=n, passed=ok) for n, ok in passed.items()]
        status = TestRunStatus.passed if all(passed.values()) else TestRunStatus.failed
        assert await store.save_test_run(run.model_copy(update={"status": status, "results": results,
                                                                "finished_at": now_ms()}))

    await finish({"collects": True, "greets": False})
    assert await failing_tests(store, "support-agent", 1) == ["greets"]
    with pytest.raises(TestsNotPassing) as err:
        await require_passing_tests(store, "support-agent", 1)
    assert err.value.names == ["greets"] and "greets" in err.value.message
    await finish({"collects": True, "greets": True})
    assert await failing_tests(store, "support-agent", 1) == []
    # the tests change: the passing run was of another set
    await store.replace_agent_test("support-agent", "greets", AgentTestInput(content=GREETING.replace("Hello", "Hi")))
    assert await failing_tests(store, "support-agent", 1) == ["collects", "greets"]
    # a version that does not ask for the gate is never held back
    await store.update_agent_config("support-agent", {"require_passing_tests": False})
    assert await failing_tests(store, "support-agent", 2) == []
    with pytest.raises(NotFound):
        await failing_tests(store, "support-agent", 9)


async def test_deleting_the_agent_takes_its_tests_and_runs(store):
    await _agent(store, require_passing_tests=True)
    await store.create_agent_test("support-agent", AgentTestCreate(name="greets", content=GREETING))
    run, _ = await store.create_test_run("support-agent", 1)
    assert await store.save_test_run(run.model_copy(update={
        "status": TestRunStatus.passed, "results": [TestResult(name="greets", passed=True)], "finished_at": now_ms()}))
    assert await failing_tests(store, "support-agent", 1) == []
    await store.delete_agent_config("support-agent")
    await _agent(store, require_passing_tests=True)  # a new agent under the same id
    assert await store.list_agent_tests("support-agent") == []
    assert await store.list_test_runs("support-agent") == []
    with pytest.raises(NotFound):
        await store.get_test_run("support-agent", run.id)


def test_the_gate_ignores_runs_from_before_the_version():
    """Leftovers of a deleted agent of the same id (if their removal failed): a run of
    "version 1" queued before this version 1 was written is not a run of it."""
    from datetime import timedelta

    from app.domain.agent_tests import AgentTest, TestRun, failing_names

    t0 = now_ms()
    tests = [AgentTest(agent_id="a", name="greets", content=GREETING, created_at=t0, updated_at=t0)]
    old = TestRun(id="run_old", agent_id="a", version=1, status=TestRunStatus.passed, tests_hash=suite_hash(tests),
                  tests=["greets"], results=[TestResult(name="greets", passed=True)], created_at=t0, finished_at=t0)
    assert failing_names(tests, [old], version_created_at=t0) == []
    assert failing_names(tests, [old], version_created_at=t0 + timedelta(seconds=1)) == ["greets"]


def test_what_only_the_sim_can_do_is_refused_at_its_line():
    from app.domain.agent_tests import parse_test_document

    doc = """\
name: uses sim-only features
config_via: api
sessions:
  - room_metadata: {purpose: support}
    turns:
      - user: hi
        tool_choice: required
        within_ms: 50
        llm:
          - text: hello
            endpoint: backup.sim
    record:
      status: completed
      collected_keys: [email]
"""
    with pytest.raises(InvalidTestDocument) as err:
        parse_test_document("t", doc)
    got = {(p.line, p.field) for p in err.value.problems}
    assert got == {(2, "config_via"), (4, "sessions[0].room_metadata"), (7, "sessions[0].turns[0].tool_choice"),
                   (8, "sessions[0].turns[0].within_ms"), (11, "sessions[0].turns[0].llm[0].endpoint"),
                   (13, "sessions[0].record.status")}, err.value.problems
    ok = doc.replace("config_via: api\n", "").replace("  - room_metadata: {purpose: support}\n    turns:",
                                                       "  - turns:")
    ok = "\n".join(line for line in ok.splitlines()
                   if not line.strip().startswith(("tool_choice", "within_ms", "endpoint", "status"))) + "\n"
    assert parse_test_document("t", ok).scenario.sessions[0].turns[0].user == "hi"
