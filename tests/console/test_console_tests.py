"""The console runs an agent's stored tests and shows the results next to the version
history: from the agent page (its current version) and per version on the history
page, with each failing step's line, field, expected and actual."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from app.domain.agent_tests import AgentTestCreate

from .conftest import ConsoleServer, screenshot

GREETS = """\
name: greets with the company name
sessions:
  - job_metadata: {variables: {company_name: Acme}}
    start:
      expect:
        - message: {contains: "Thanks for calling Acme support"}
"""


def test_run_tests_from_the_agent_page_and_see_results_by_version(server: ConsoleServer, page: Any) -> None:
    server.run(server.store.create_agent_test("support-agent-v1", AgentTestCreate(name="greets", content=GREETS)))
    server.run(server.store.update_agent_config(
        "support-agent-v1", {"prompt_config": {"greeting": "Hello, how can I help you today?"}}))

    # from the agent page: runs against the current version (2), whose greeting changed
    page.goto("/agents/support-agent-v1")
    with page.expect_request(lambda r: r.method == "POST" and "/versions/2/test-runs" in r.url):
        page.get_by_role("button", name="Run tests").click()
    expect(page).to_have_url(re.compile(r"/agents/support-agent-v1/history#tests$"))
    runs = page.get_by_role("table", name=re.compile("Test runs"))
    expect(runs.get_by_role("row").nth(1)).to_contain_text("failed", timeout=30_000)
    expect(runs.get_by_role("row").nth(1)).to_contain_text("v2")
    expect(runs.get_by_role("row").nth(1)).to_contain_text("0/1 passed")
    result = page.get_by_role("article", name="Test greets")
    expect(result).to_contain_text("start · line 6 · sessions[0].start.expect[0]")
    expect(result.locator(".expected")).to_contain_text("contains 'Thanks for calling Acme support'")
    expect(result.locator(".actual")).to_contain_text("Hello, how can I help you today?")

    # next to the version history: v2's last run, and a run of v1 that passes
    versions = page.get_by_role("table", name=re.compile("Versions"))
    expect(versions.get_by_role("row").nth(1)).to_contain_text("failed")
    expect(versions.get_by_role("row").nth(2)).to_contain_text("not run")
    versions.get_by_role("button", name="Run tests against version 1").click()
    expect(versions.get_by_role("row").nth(2)).to_contain_text("passed", timeout=30_000)
    expect(runs.get_by_role("row")).to_have_count(3)
    expect(page.get_by_role("article", name="Test greets")).to_contain_text("1 step(s) passed.")
    screenshot(page, "20-agent-test-runs", full_page=True)

    runs_stored = server.run(server.store.list_test_runs("support-agent-v1"))
    assert [(r.version, r.status.value, r.actor) for r in runs_stored] == [(1, "passed", "admin"), (2, "failed", "admin")]
