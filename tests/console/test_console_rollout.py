"""The agent page's Publishing card, in a real browser: the published version and the
drafts, a canary started from a draft with each arm's figures, and promote/abort. The
sessions are stored records on both arms, so the figures are the store's own."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from app.domain import AgentConfigInput, PromptConfig, SessionRecord, SessionStatus

from .conftest import ConsoleServer, screenshot


def seed(server: ConsoleServer) -> None:
    async def run() -> None:
        s = server.store
        assert s is not None
        await s.create_agent_config(AgentConfigInput(
            agent_id="orders-agent", name="Orders", auto_publish=False,
            prompt_config=PromptConfig(instructions="Ask for the order number."),
            schema_config={"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        ))
        await s.update_agent_config("orders-agent", {"description": "v2"})
        await s.update_agent_config("orders-agent", {"description": "v3"})

    server.run(run())


def arm_sessions(server: ConsoleServer) -> None:
    async def run() -> None:
        s = server.store
        assert s is not None
        for i in range(4):
            for arm, version in (("stable", 1), ("canary", 2)):
                sid = f"{arm}-{i}"
                await s.start_session(SessionRecord(session_id=sid, room="r", agent_id="orders-agent",
                                                   config_version=version, arm=arm))  # type: ignore[arg-type]
                if arm == "stable" or i == 0:
                    await s.record_data(sid, {"order_id": "AB-1"})
                await s.finish_session(sid, SessionStatus.completed, "user_initiated")

    server.run(run())


def test_publishing_card_canary_promote_and_abort(server: ConsoleServer, page: Any) -> None:
    seed(server)
    page.goto("/agents/orders-agent")
    card = page.locator("#release-section")
    expect(card).to_be_visible()
    expect(card.locator("#release-published")).to_contain_text("version 1")
    expect(card.locator("#release-published")).to_contain_text("newest: version 3")
    expect(card.locator("#release-drafts")).to_contain_text("v2, v3")
    expect(page.locator("#f-auto-publish")).not_to_be_checked()

    # start a 25 % canary of version 2
    card.locator("#canary-percent").fill("25")
    card.locator('[data-canary="2"]').click()
    rollout = card.locator("#rollout")
    expect(rollout).to_have_attribute("data-status", "running")
    expect(rollout).to_contain_text("version 2 for 25% of callers")
    expect(card.locator('[data-publish="3"]')).to_have_count(0)  # no publishing while it runs

    arm_sessions(server)
    page.reload()
    table = card.locator("#rollout-arms")
    expect(table).to_be_visible()
    req = table.locator('tr[data-row="Required fields complete"]')
    expect(req.locator(".arm-stable")).to_have_text("100%")
    expect(req.locator(".arm-canary")).to_have_text("25%")
    expect(table.locator('tr[data-row="Sessions (finished)"] .arm-canary')).to_have_text("4 (4)")
    expect(card.locator("#rollout-verdict")).to_be_visible()
    screenshot(page, "30-agent-canary", full_page=True)

    # abort (confirmed): everyone back on version 1, the reason shown
    card.locator("#rollout-abort").click()
    page.get_by_role("button", name="Abort canary").click()
    expect(rollout).to_have_attribute("data-status", "aborted")
    expect(card.locator("#rollout-reason")).to_contain_text("aborted from the console")
    expect(card.locator("#rollout-times")).to_contain_text("by admin")
    expect(card.locator("#rollout-times")).not_to_contain_text("object")  # times render as <time>, not text
    expect(card.locator("#release-published")).to_contain_text("version 1")

    # a canary of version 3, promoted: version 3 is published, no drafts left after it
    card.locator('[data-canary="3"]').click()
    expect(rollout).to_have_attribute("data-status", "running")
    card.locator("#rollout-promote").click()
    expect(rollout).to_have_attribute("data-status", "promoted")
    expect(card.locator("#release-published")).to_contain_text("version 3")
    expect(card.locator("#release-drafts")).to_contain_text("No drafts")

    async def release() -> Any:
        assert server.store is not None
        return await server.store.get_release("orders-agent")

    final = server.run(release())
    assert (final.published_version, final.rollout.status, final.rollout.version) == (3, "promoted", 3)


def test_talk_page_tries_a_draft_by_version(server: ConsoleServer, page: Any) -> None:
    seed(server)
    async def v2_variable() -> None:  # the draft declares a variable the published version does not
        assert server.store is not None
        await server.store.update_agent_config("orders-agent", {"prompt_config": {
            "instructions": "Ask {caller} for the order number.", "variables": {"caller": {"required": True}}}})

    server.run(v2_variable())  # version 4, a draft
    page.goto("/talk?agent=orders-agent")
    version = page.get_by_label("Version")
    expect(version).to_be_visible()
    expect(version.locator("option").first).to_have_text("As routed (v1)")
    expect(version.locator('option[value="4"]')).to_have_text("v4 · draft")
    expect(version.locator('option[value="1"]')).to_have_text("v1 · published")
    expect(page.locator("#t-var-caller")).to_have_count(0)  # v1 declares no variables
    version.select_option("4")
    page.locator("#t-var-caller").fill("Ada")
    with page.expect_request(lambda r: "/versions/4/token" in r.url and r.method == "POST") as req:
        page.get_by_role("button", name="Start").click()
    assert req.value.url.endswith("/api/v1/agents/config/orders-agent/versions/4/token")
    assert req.value.post_data_json == {"variables": {"caller": "Ada"}}
    alert = page.locator("#call-alert").get_by_role("alert")
    expect(alert).to_contain_text("LiveKit is not configured on this server")  # 503 from the version endpoint
    # back to what routing hands out: the public token endpoint again
    version.select_option("")
    with page.expect_request(lambda r: r.url.endswith("/api/v1/token") and r.method == "POST") as req:
        page.get_by_role("button", name="Start").click()
    assert req.value.post_data_json == {"agent_id": "orders-agent", "variables": {}}
