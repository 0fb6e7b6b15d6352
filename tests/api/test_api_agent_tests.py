"""Tests stored with an agent over the admin API: CRUD with 422s naming line and field,
runs in the background against a version (202, then polled) with per-step expected vs
actual, the gate reading those runs, and runs abandoned by a stop.

The app is served in the test's own event loop (`httpx.ASGITransport`, as the sim
does) so the pool's background runs share it; the runs execute the real factory,
LiveKit `AgentSession` and OpenAI plugin against the scripted model, on a real SQLite
file."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.agents.test_pool import TestRunPool, abandon_leftover_runs
from app.api import create_app
from app.settings import Settings
from app.store.test_gate import failing_tests
from tests.api.conftest import AGENTS, AUTH, agent_body

GREETS = """\
name: greets the caller
sessions:
  - job_metadata: {variables: {customer: Ada}}
    start:
      expect:
        - message: {text: "Hello Ada!"}
"""

COLLECTS = """\
name: records the email
sessions:
  - turns:
      - user: "It's ada@example.com"
        llm:
          - tool: record_email
            args: {value: ada@example.com}
          - text: "Thanks, noted."
        expect:
          - function_call: {name: record_email, arguments: {value: ada@example.com}}
          - function_output: {contains: Recorded}
          - message: {text: "Thanks, noted."}
    record:
      collected: {email: ada@example.com}
"""


@pytest.fixture
async def served(store, settings: Settings):
    pool = TestRunPool(settings, store)
    app = create_app(settings, store, test_runs=pool)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin",
                                 headers=AUTH) as c:
        yield c, pool
    await pool.aclose()


async def _agent(c: httpx.AsyncClient, **overrides) -> None:
    r = await c.post(AGENTS, json=agent_body(**overrides))
    assert r.status_code == 201, r.text


async def _run(c: httpx.AsyncClient, pool: TestRunPool, version: int) -> dict:
    r = await c.post(f"{AGENTS}/support-agent/versions/{version}/test-runs", headers={"X-Change-Note": "pre-publish"})
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["status"] == "queued" and run["version"] == version
    await asyncio.wait_for(pool.wait(run["id"]), 60)
    r = await c.get(f"{AGENTS}/support-agent/versions/{version}/test-runs/{run['id']}")
    assert r.status_code == 200, r.text
    return r.json()


async def test_crud_and_invalid_documents(served):
    c, _ = served
    assert (await c.get(f"{AGENTS}/nobody/tests")).status_code == 404
    await _agent(c)
    r = await c.post(f"{AGENTS}/support-agent/tests", json={"name": "greets", "content": GREETS},
                     headers={"X-Change-Note": "first test"})
    assert r.status_code == 201, r.text
    assert r.json()["content"] == GREETS
    assert (await c.post(f"{AGENTS}/support-agent/tests", json={"name": "greets", "content": GREETS})).status_code == 409
    assert [t["name"] for t in (await c.get(f"{AGENTS}/support-agent/tests")).json()] == ["greets"]
    # a character YAML refuses (found by the API fuzz test: it was a 500): 422 naming its line
    r = await c.post(f"{AGENTS}/support-agent/tests", json={"name": "ctrl", "content": "name: x\nsessions: [\x8f]\n"})
    assert r.status_code == 422 and r.json()["extra"][0]["line"] == 2, r.text
    assert "#x008f" in r.json()["extra"][0]["message"]
    # a typo in an expectation: 422 naming the line and the field inside the document
    bad = GREETS.replace("message: {text:", "mesage: {text:")
    r = await c.put(f"{AGENTS}/support-agent/tests/greets", json={"content": bad})
    assert r.status_code == 422, r.text
    extra = r.json()["extra"]
    assert any(e["line"] == 6 and e["key"].startswith("content.sessions[0].start.expect[0]") for e in extra), extra
    # bad YAML (a duplicate key), and a sim-only feature
    r = await c.put(f"{AGENTS}/support-agent/tests/greets", json={"content": "name: a\nname: b\nsessions: []\n"})
    assert r.status_code == 422 and r.json()["extra"] == [{"key": "content", "line": 2,
                                                           "message": "duplicate key 'name'"}], r.text
    r = await c.put(f"{AGENTS}/support-agent/tests/greets", json={"content": GREETS + "    http: [{url: 'https://x.example'}]\n"})
    assert r.status_code == 422 and r.json()["extra"][0] == {
        "key": "content.sessions[0].http", "line": 7,
        "message": "`http` is a sim-only feature; a stored test runs one agent version in the server"}, r.text
    for name in ("Bad Name", "-x", "a" * 64):
        r = await c.post(f"{AGENTS}/support-agent/tests", json={"name": name, "content": GREETS})
        assert r.status_code == 422 and r.json()["extra"][0]["key"] == "name", (name, r.text)
    assert (await c.get(f"{AGENTS}/support-agent/tests/greets")).json()["content"] == GREETS  # unchanged
    r = await c.put(f"{AGENTS}/support-agent/tests/greets", json={"content": GREETS.replace("Ada", "Grace")})
    assert r.status_code == 200 and "Grace" in r.json()["content"]
    assert (await c.delete(f"{AGENTS}/support-agent/tests/greets")).status_code == 204
    assert (await c.get(f"{AGENTS}/support-agent/tests/greets")).status_code == 404
    audit = (await c.get("/api/v1/audit", params={"agent_id": "support-agent"})).json()
    changes = [e for e in audit["items"] if e["type"] == "agent.test_changed"]
    assert [e["data"]["change"] for e in changes][::-1] == ["created", "updated", "deleted"]
    assert changes[-1]["actor"] == "admin" and changes[-1]["note"] == "first test"


async def test_runs_report_each_step_and_feed_the_gate(served, store):
    c, pool = served
    await _agent(c, require_passing_tests=True)
    for name, content in (("greets", GREETS), ("collects", COLLECTS)):
        assert (await c.post(f"{AGENTS}/support-agent/tests", json={"name": name, "content": content})).status_code == 201
    assert await failing_tests(store, "support-agent", 1) == ["collects", "greets"]  # never run
    run = await _run(c, pool, 1)
    assert run["status"] == "passed", run
    assert run["actor"] == "admin" and run["tests"] == ["collects", "greets"]
    by_name = {r["name"]: r for r in run["results"]}
    start, turn = by_name["collects"]["steps"]
    assert (start["step"], turn["step"], turn["user"], turn["passed"]) == ("start", "turn 0", "It's ada@example.com", True)
    assert turn["events"][0] == 'function_call record_email({"value": "ada@example.com"})'
    assert turn["events"][2] == "message assistant: 'Thanks, noted.'"
    assert await failing_tests(store, "support-agent", 1) == []

    # v2 greets differently: its run fails at the start step, with expected vs actual and the line
    r = await c.patch(f"{AGENTS}/support-agent", json={"prompt_config": {"greeting": "Hi {customer}, welcome."}},
                      headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    run = await _run(c, pool, 2)
    assert run["status"] == "failed"
    (greets,) = [r for r in run["results"] if r["name"] == "greets"]
    (start,) = greets["steps"]
    assert start["step"] == "start" and not start["passed"]
    (failure,) = start["failures"]
    assert failure["line"] == 6 and failure["field"] == "sessions[0].start.expect[0]"
    assert failure["expected"] == "message assistant: text == 'Hello Ada!'"
    assert "Hi Ada, welcome." in failure["actual"]
    assert await failing_tests(store, "support-agent", 2) == ["greets"]
    gate = (await c.get(f"{AGENTS}/support-agent/versions/2/test-gate")).json()
    assert gate == {"require_passing_tests": True, "failing_tests": ["greets"], "may_publish": False}
    # the gate guards publishing: v2 stayed a draft when written, and publishing it is refused
    report = (await c.get(f"{AGENTS}/support-agent/rollout")).json()
    assert report["release"]["published_version"] == 1 and report["drafts"] == [2], report
    r = await c.post(f"{AGENTS}/support-agent/publish", json={"version": 2})
    assert r.status_code == 409 and r.json()["extra"]["failing"] == ["greets"], r.text
    r = await c.post(f"{AGENTS}/support-agent/publish", json={"version": 2, "canary_percent": 10})
    assert r.status_code == 409 and r.json()["extra"]["failing"] == ["greets"], r.text
    assert (await c.post(f"{AGENTS}/support-agent/publish", json={"version": 1})).status_code == 200
    assert await failing_tests(store, "support-agent", 1) == []  # v1's own run still stands
    listed = (await c.get(f"{AGENTS}/support-agent/versions/2/test-runs")).json()
    assert [x["id"] for x in listed] == [run["id"]]
    assert len((await c.get(f"{AGENTS}/support-agent/test-runs")).json()) == 2
    assert (await c.get(f"{AGENTS}/support-agent/versions/1/test-runs/{run['id']}")).status_code == 404
    assert (await c.post(f"{AGENTS}/support-agent/versions/9/test-runs")).status_code == 404
    # a rollback copies a version: that version's runs count for the copy; v2 had none passing
    r = await c.post(f"{AGENTS}/support-agent/rollback/2")
    assert r.status_code == 409 and r.json()["extra"]["failing"] == ["greets"], r.text
    r = await c.post(f"{AGENTS}/support-agent/rollback/1")
    assert r.status_code == 201 and r.json()["version"] == 3, r.text
    report = (await c.get(f"{AGENTS}/support-agent/rollout")).json()
    assert report["release"]["published_version"] == 3
    sessions = (await c.get("/api/v1/sessions")).json()
    assert sessions["total"] == 0  # test conversations are not calls: no session records


async def test_an_under_scripted_test_fails_with_the_reason(served):
    c, pool = served
    await _agent(c)
    short = COLLECTS.replace('          - text: "Thanks, noted."\n', "")
    assert (await c.post(f"{AGENTS}/support-agent/tests", json={"name": "short", "content": short})).status_code == 201
    run = await _run(c, pool, 1)
    assert run["status"] == "failed"
    start, turn = run["results"][0]["steps"]
    assert start["passed"] and not turn["passed"]
    (failure,) = turn["failures"]
    assert (failure["line"], failure["field"]) == (4, "sessions[0].turns[0]")
    assert failure["message"] == "turn 0 raised APIStatusError (the model was asked 2 time(s), 1 repl(ies) scripted)"
    assert "no scripted reply left" in failure["actual"]


async def test_runs_left_by_a_stop_are_abandoned(served, store, settings):
    c, pool = served
    await _agent(c)
    assert (await c.post(f"{AGENTS}/support-agent/tests", json={"name": "greets", "content": GREETS})).status_code == 201
    run, tests = await store.create_test_run("support-agent", 1)  # queued by a process that then died
    assert await abandon_leftover_runs(settings, store) == 1
    got = (await c.get(f"{AGENTS}/support-agent/versions/1/test-runs/{run.id}")).json()
    assert got["status"] == "abandoned" and "restarted" in got["error"]
    # a run still going when this process stops is recorded abandoned too
    slow = TestRunPool(settings, store, concurrency=1)
    slow._slots = asyncio.Semaphore(0)  # nothing may start: the run stays queued
    queued, tests = await store.create_test_run("support-agent", 1)
    slow.submit(queued, tests)
    await asyncio.sleep(0)
    await slow.aclose()
    got = (await c.get(f"{AGENTS}/support-agent/versions/1/test-runs/{queued.id}")).json()
    assert got["status"] == "abandoned" and "stopped" in got["error"]


async def test_queue_is_bounded_and_an_app_without_runner_says_so(store, settings):
    pool = TestRunPool(settings, store, max_queued=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings, store, test_runs=pool)),
                                 base_url="http://admin", headers=AUTH) as c:
        await _agent(c)
        r = await c.post(f"{AGENTS}/support-agent/versions/1/test-runs")
        assert r.status_code == 409 and "retry" in r.json()["detail"], r.text
        assert (await c.get(f"{AGENTS}/support-agent/versions/1/test-runs")).json() == []  # nothing stored
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings, store)),
                                 base_url="http://admin", headers=AUTH) as c:
        r = await c.post(f"{AGENTS}/support-agent/versions/1/test-runs")
        assert r.status_code == 503 and "not available" in r.json()["detail"], r.text


async def test_the_readme_example_passes_against_the_seeded_support_agent(served, store):
    from pathlib import Path

    from app.seed import seed

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Tests stored with the agent"):]
    start = section.index("```yaml\n") + len("```yaml\n")
    example = section[start:section.index("```", start)]
    c, pool = served
    await seed(store)
    r = await c.post(f"{AGENTS}/support-agent-v1/tests", json={"name": "records-order", "content": example})
    assert r.status_code == 201, r.text
    r = await c.post(f"{AGENTS}/support-agent-v1/versions/1/test-runs")
    await asyncio.wait_for(pool.wait(r.json()["id"]), 60)
    run = (await c.get(f"{AGENTS}/support-agent-v1/versions/1/test-runs/{r.json()['id']}")).json()
    assert run["status"] == "passed", run["results"]


LIVE = """\
name: records the email with the real model
model: live
sessions:
  - turns:
      - user: "It's ada@example.com"
        llm:                       # ignored: the agent's own model answers
          - text: "never used"
        expect:
          - function_call: {name: record_email}
            live: true
          - message: {text: "this exact text is not checked live"}
    record:
      collected_keys: [email]
"""


async def test_a_live_test_talks_to_the_agents_configured_model(served):
    """`model: live`: the run goes to the model the agent's config names (here an
    OpenAI-compatible server on loopback, standing in for a paid one), and only
    `live: true` events and the collected keys are checked."""
    import contextlib

    import uvicorn

    from sim.db_servers import free_port
    from sim.fake_openai import FakeOpenAI

    c, pool = served
    model = FakeOpenAI()
    for _ in range(2):  # one answer per test, in name order
        model.tool_call("record_email", {"value": "ada@example.com"}).text("Got it, thanks!")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(model.asgi_app(), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off", timeout_graceful_shutdown=0.2))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        await _agent(c, llm={"provider": "openai", "model": "gpt-test", "base_url": f"http://127.0.0.1:{port}/v1"})
        r = await c.post(f"{AGENTS}/support-agent/tests", json={"name": "live", "content": LIVE})
        assert r.status_code == 201, r.text
        wrong = LIVE.replace("{name: record_email}", "{name: end_session}")
        r = await c.post(f"{AGENTS}/support-agent/tests", json={"name": "live-wrong", "content": wrong})
        assert r.status_code == 201, r.text
        run = await _run(c, pool, 1)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
    assert run["status"] == "failed"
    result = {r["name"]: r for r in run["results"]}
    assert result["live"]["passed"] and result["live"]["model"] == "live", result
    (turn,) = [st for st in result["live-wrong"]["steps"] if st["step"] == "turn 0"]
    (failure,) = turn["failures"]
    assert failure["message"] == "the turn contains no such event (live: order not enforced)"
    assert failure["field"] == "sessions[0].turns[0].expect[0]"
    assert len(model.requests) == 4 and model.requests[0].body["model"] == "gpt-test"
    assert "record_email" in model.requests[0].tool_names
