"""The console in a real browser: every screen, its happy path and its failure states.

Each test gets a fresh seeded server (four agents, five routes) and a browser context;
`page` is already signed in (the admin key is in sessionStorage). Screenshots of each
screen land in test-output/console/.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from app.domain import Handoff, ServedBy, SessionEvent, SessionRecord, SessionStatus, SessionUsage, Turn
from app.domain.analysis import AnalysisConfig, AnalysisRequest, AnalysisStatus, SessionAnalysis, SuccessVerdict
from app.domain.pricing import PriceTable
from app.domain.usage import ModelUsage

from .conftest import ADMIN_KEY, KEY_STORAGE, ConsoleServer, screenshot


def heading(page: Any) -> Any:
    return page.get_by_role("heading", level=1)


# ------------------------------------------------------------------ auth


def test_key_prompt_keeps_key_and_401_returns_to_it(server: ConsoleServer, new_context: Callable[..., Any]) -> None:
    page = new_context(server, signed_in=False).new_page()
    page.goto("/agents")
    dialog = page.get_by_role("dialog", name="Sign in to the console")
    expect(dialog).to_be_visible()
    screenshot(page, "01-sign-in", full_page=False)

    page.get_by_label("Admin API key").fill("not-the-key")
    page.get_by_role("button", name="Continue").click()
    expect(dialog.get_by_role("alert")).to_have_text("That key was not accepted.")
    expect(page.get_by_label("Admin API key")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Admin API key").fill(ADMIN_KEY)
    page.get_by_role("button", name="Continue").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("link", name="Screening Interview")).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem({KEY_STORAGE!r})") == ADMIN_KEY

    # Kept for the tab: the next page asks for nothing.
    page.get_by_role("link", name="Routes").click()
    expect(heading(page)).to_have_text("Routes")
    expect(dialog).to_be_hidden()

    # A key the server stops accepting brings the prompt back, with the reason.
    page.evaluate(f"sessionStorage.setItem({KEY_STORAGE!r}, 'rotated-away')")
    page.goto("/sessions")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("did not accept the admin key")
    page.get_by_label("Admin API key").fill(ADMIN_KEY)
    page.get_by_role("button", name="Continue").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("table", name=re.compile("Sessions"))).to_contain_text("No sessions yet")

    # Sign out forgets it.
    page.get_by_role("button", name="Sign out").click()
    expect(dialog).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem({KEY_STORAGE!r})") is None


# ------------------------------------------------------------------ agents


def test_agents_list(page: Any) -> None:
    page.goto("/agents")
    table = page.get_by_role("table", name=re.compile("All agents"))
    expect(table.get_by_role("row")).to_have_count(5)  # header + four seed agents
    row = table.get_by_role("row").filter(has_text="interview-agent-v1")
    expect(row).to_contain_text("Enabled")
    expect(row).to_contain_text("v1")
    expect(row).to_contain_text("role")
    screenshot(page, "02-agents", full_page=False)

    page.get_by_label("Search").fill("sales")
    expect(table.get_by_role("row")).to_have_count(2)
    page.get_by_label("Search").fill("")
    row.get_by_role("link", name="Screening Interview").click()
    expect(heading(page)).to_contain_text("Screening Interview")


def test_create_agent_shows_schema_error_inline_then_saves(server: ConsoleServer, page: Any) -> None:
    page.goto("/agents")
    page.get_by_role("link", name="New agent").click()
    expect(heading(page)).to_have_text("New agent")

    page.get_by_label("Agent ID").fill("billing-agent")
    page.get_by_label("Name", exact=True).fill("Billing Helper")
    page.get_by_label("Instructions", exact=True).fill("You help {customer} with invoices.")
    # Variable hints: an undeclared placeholder is pointed out and declared in one click.
    expect(page.get_by_text("is used but not declared")).to_be_visible()
    page.get_by_role("button", name="Declare customer").click()
    expect(page.get_by_label("Variable 1 name")).to_have_value("customer")
    page.get_by_label("Variable 1 default").fill("there")
    expect(page.get_by_role("button", name="Insert {customer} into instructions")).to_be_visible()
    page.get_by_role("textbox", name="Greeting (optional)").fill("Hello ")
    page.get_by_role("button", name="Insert {customer} into greeting").click()
    expect(page.get_by_role("textbox", name="Greeting (optional)")).to_have_value("Hello {customer}")

    schema = page.get_by_label("Data schema (JSON)")
    schema.fill('{"type": "object",')  # not even JSON: caught before sending
    expect(page.locator("#schema-json-error")).to_contain_text("Not valid JSON")
    schema.fill('{"type": "objekt", "properties": {}}')  # JSON, but not a JSON Schema
    expect(page.locator("#schema-json-error")).to_be_empty()
    with page.expect_response(lambda r: r.url.endswith("/api/v1/agents/config") and r.request.method == "POST") as resp:
        page.get_by_role("button", name="Create agent").click()
    assert resp.value.status == 422

    field_error = page.locator('[data-field="schema_config"] .server-error')
    expect(field_error).to_contain_text("invalid JSON Schema")
    expect(schema).to_have_attribute("aria-invalid", "true")
    summary = page.locator("#form-errors")
    expect(summary).to_contain_text("The agent was not saved")
    expect(summary.get_by_role("link", name="Data schema")).to_be_visible()
    screenshot(page, "03-agent-create-error-summary", full_page=False)
    schema.scroll_into_view_if_needed()
    screenshot(page, "03-agent-create-schema-error", full_page=False)

    schema.fill(json.dumps({
        "type": "object",
        "properties": {"invoice_number": {"type": "string", "description": "As printed"}},
        "required": ["invoice_number"],
    }))
    expect(page.locator("#schema-preview")).to_contain_text("invoice_number")
    page.get_by_label("Temperature").fill("0.4")
    page.get_by_role("button", name="Create agent").click()

    expect(page).to_have_url(re.compile(r"/agents/billing-agent$"))
    expect(heading(page)).to_contain_text("Billing Helper")
    expect(page.get_by_text("Agent “Billing Helper” created (version 1).")).to_be_visible()
    expect(page.get_by_label("Agent ID")).to_have_js_property("readOnly", True)
    screenshot(page, "04-agent-edit", full_page=True)

    cfg = server.run(server.store.get_agent_config("billing-agent"))
    assert cfg.version == 1
    assert cfg.prompt_config.greeting == "Hello {customer}"
    assert cfg.prompt_config.variables["customer"].default == "there"
    assert cfg.schema_config["required"] == ["invoice_number"]
    assert cfg.llm.temperature == 0.4
    assert [t.name for t in cfg.tools] == ["end_session"]


def test_http_tool_error_lands_on_its_card_then_saves(server: ConsoleServer, page: Any) -> None:
    page.goto("/agents/support-agent-v1")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Customer Support")
    page.get_by_role("button", name="Add HTTP tool").click()
    page.get_by_label("Tool name").fill("lookup_order")
    page.get_by_label("Tool description").fill("Look an order up by its number.")
    page.get_by_label("URL", exact=True).fill("not a url")
    page.get_by_label("Parameters (JSON Schema)").fill(json.dumps({
        "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"],
    }))
    page.get_by_role("button", name="Save changes").click()
    # Built-ins come first in the tools array: the HTTP tool is tools[2].
    card_error = page.locator('[data-field="tools.2.http.url"] .server-error')
    expect(card_error).to_contain_text("URL")
    expect(page.get_by_label("URL", exact=True)).to_have_attribute("aria-invalid", "true")
    card_error.scroll_into_view_if_needed()
    screenshot(page, "04b-agent-http-tool-error", full_page=False)

    page.get_by_label("URL", exact=True).fill("https://orders.example.com/lookup")
    page.get_by_label("Timeout (s)").fill("3")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("Saved as version 2.")).to_be_visible()
    expect(page.locator(".server-error")).to_have_count(0)
    cfg = server.run(server.store.get_agent_config("support-agent-v1"))
    http = [t for t in cfg.tools if t.type == "http"]
    assert [t.name for t in cfg.tools] == ["end_session", "transfer", "lookup_order"]
    assert str(http[0].url) == "https://orders.example.com/lookup"
    assert http[0].timeout_s == 3 and http[0].parameters["required"] == ["order_id"]
    assert cfg.handoffs == ["sales-agent-v1"]


def test_fallback_chain_timeouts_and_limits_are_edited_with_errors_in_place(server: ConsoleServer, page: Any) -> None:
    page.goto("/agents/support-agent-v1")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Customer Support")
    llm = page.get_by_role("group", name="Language model")
    expect(llm.get_by_label("End a reply repeating a sentence")).to_have_value("3")  # the default, shown
    llm.get_by_role("button", name="Add fallback").click()
    llm.get_by_role("button", name="Add fallback").click()
    rows = llm.locator(".fallback-row")
    expect(rows).to_have_count(2)
    rows.nth(0).get_by_label("Model").fill("second-choice")
    rows.nth(1).get_by_label("Model").fill("llama")
    rows.nth(1).get_by_label("Base URL").fill("not a url")
    rows.nth(1).get_by_role("button", name=re.compile("up$")).click()  # llama goes first
    expect(rows.nth(0).get_by_label("Model")).to_have_value("llama")
    llm.get_by_role("group", name="Timeouts (s)").get_by_label("First token").fill("0")
    page.get_by_label("Call duration (s)").fill("-5")
    page.get_by_role("button", name="Save changes").click()

    # each 422 lands on its own field: the moved row is fallback 0 now
    expect(page.locator('[data-field="llm.fallbacks.0.base_url"] .server-error')).to_contain_text("URL")
    expect(page.locator('[data-field="llm.timeouts.first_token_s"] .server-error')).to_contain_text("greater than 0")
    expect(page.locator('[data-field="budget.duration_s"] .server-error')).to_contain_text("greater than 0")
    expect(rows.nth(0).get_by_label("Base URL")).to_have_attribute("aria-invalid", "true")
    llm.scroll_into_view_if_needed()
    screenshot(page, "04c-agent-fallback-errors", full_page=False)

    rows.nth(0).get_by_label("Base URL").fill("http://127.0.0.1:8080/v1")
    rows.nth(0).get_by_label("First token (s)").fill("20")
    llm.get_by_role("group", name="Timeouts (s)").get_by_label("First token").fill("4")
    llm.get_by_label("Send the cap as").select_option("max_tokens")
    llm.get_by_label("End a reply repeating a sentence").fill("0")
    page.get_by_label("Call duration (s)").fill("600")
    page.get_by_label("LLM tokens").fill("50000")
    tts = page.get_by_role("group", name="Text to speech")
    tts.get_by_role("button", name="Add fallback").click()
    tts.locator(".fallback-row").get_by_label("Voice").fill("nova")
    tts.locator(".fallback-row").get_by_label("Base URL").fill("https://tts.example.com/v1")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("Saved as version 2.")).to_be_visible()
    expect(page.locator(".server-error")).to_have_count(0)

    cfg = server.run(server.store.get_agent_config("support-agent-v1"))
    assert [(f.model, str(f.base_url) if f.base_url else None) for f in cfg.llm.fallbacks] == [
        ("llama", "http://127.0.0.1:8080/v1"), ("second-choice", None)]
    assert cfg.llm.fallbacks[0].timeouts is not None and cfg.llm.fallbacks[0].timeouts.first_token_s == 20
    assert cfg.llm.fallbacks[1].timeouts is None  # the primary's
    assert cfg.llm.timeouts.first_token_s == 4 and cfg.llm.timeouts.total_s == 45
    assert (cfg.llm.max_tokens_param, cfg.llm.repetition_limit) == ("max_tokens", 0)
    assert (cfg.budget.duration_s, cfg.budget.llm_tokens, cfg.budget.wrap_up_at) == (600, 50000, 0.8)
    assert [(f.voice, str(f.base_url)) for f in cfg.tts.fallbacks] == [("nova", "https://tts.example.com/v1")]

    page.reload()  # what was saved is what the form shows
    expect(llm.locator(".fallback-row").nth(0).get_by_label("First token (s)")).to_have_value("20")
    expect(llm.locator(".fallback-row").nth(1).get_by_label("Model")).to_have_value("second-choice")
    expect(llm.get_by_label("End a reply repeating a sentence")).to_have_value("0")
    expect(page.get_by_label("LLM tokens")).to_have_value("50000")


def test_edit_from_two_pages_shows_conflict_not_overwrite(server: ConsoleServer, new_context: Callable[..., Any]) -> None:
    ctx = new_context(server)
    first, second = ctx.new_page(), ctx.new_page()
    for p in (first, second):
        p.goto("/agents/sales-agent-v1")
        expect(p.get_by_label("Name", exact=True)).to_have_value("Sales Qualification")

    first.get_by_label("Name", exact=True).fill("Sales (EU)")
    expect(first.get_by_text("Unsaved changes")).to_be_visible()
    first.get_by_role("button", name="Save changes").click()
    expect(first.get_by_text("Saved as version 2.")).to_be_visible()
    expect(first.locator("#agent-version")).to_have_text("version 2")

    second.get_by_label("Description", exact=True).fill("edited in the second tab")
    with second.expect_request(lambda r: r.method == "PUT") as put:
        second.get_by_role("button", name="Save changes").click()
    assert put.value.headers["if-match"] == '"1"'
    alert = second.get_by_role("alert").filter(has_text="changed by someone else")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("version 2")
    expect(alert).to_contain_text("your changes were not saved")
    screenshot(second, "05-agent-edit-conflict", full_page=False)

    cfg = server.run(server.store.get_agent_config("sales-agent-v1"))
    assert (cfg.version, cfg.name) == (2, "Sales (EU)")
    assert cfg.description != "edited in the second tab"

    alert.get_by_role("button", name="Reload").click()
    expect(second.get_by_label("Name", exact=True)).to_have_value("Sales (EU)")
    expect(second.locator("#agent-version")).to_have_text("version 2")

    # Enable/disable is a write too, guarded the same way.
    second.get_by_role("button", name="Disable").click()
    expect(second.get_by_text("Agent disabled (version 3).")).to_be_visible()
    expect(heading(second)).to_contain_text("Disabled")
    first.get_by_role("button", name="Disable").click()
    expect(first.get_by_role("alert").filter(has_text="changed by someone else")).to_be_visible()
    assert server.run(server.store.get_agent_config("sales-agent-v1")).enabled is False


def test_history_diff_and_one_click_rollback(server: ConsoleServer, page: Any) -> None:
    server.run(server.store.update_agent_config(
        "interview-agent-v1", {"name": "Screening (v2)", "llm": {"temperature": 0.3}}
    ))
    page.goto("/agents/interview-agent-v1")
    page.get_by_role("link", name="History").click()
    expect(heading(page)).to_have_text("Screening (v2) · history")
    versions = page.get_by_role("table", name=re.compile("Versions"))
    expect(versions.get_by_role("row")).to_have_count(3)
    expect(versions.get_by_role("row").nth(1)).to_contain_text("Current")
    expect(versions.get_by_role("row").nth(1)).to_contain_text("llm")

    diff = page.get_by_role("table", name="Changes from version 1 to version 2")
    expect(diff.locator(".diff-del").filter(has_text="name:")).to_contain_text('name: "Screening Interview"')
    expect(diff.locator(".diff-add").filter(has_text="name:")).to_contain_text('name: "Screening (v2)"')
    expect(diff.locator(".diff-add").filter(has_text="temperature:")).to_contain_text("temperature: 0.3")
    screenshot(page, "06-agent-history", full_page=True)

    with page.expect_request(lambda r: "/rollback/1" in r.url) as req:
        page.get_by_role("button", name="Roll back to version 1").click()
    assert req.value.headers["if-match"] == '"2"'
    expect(page.get_by_text("Version 3 is now current, with the content of version 1.")).to_be_visible()
    expect(versions.get_by_role("row")).to_have_count(4)
    expect(versions.get_by_role("row").nth(1)).to_contain_text("restores v1")
    expect(heading(page)).to_have_text("Screening Interview · history")

    # Compare any two versions.
    page.get_by_label("Compare from version 2").check()
    page.get_by_label("Compare to version 3").check()
    expect(page.get_by_role("table", name="Changes from version 2 to version 3").locator(".diff-add").first).to_contain_text(
        'name: "Screening Interview"'
    )
    cfg = server.run(server.store.get_agent_config("interview-agent-v1"))
    assert (cfg.version, cfg.name, cfg.llm.temperature) == (3, "Screening Interview", None)


def test_delete_is_blocked_with_the_api_message_while_routed(server: ConsoleServer, page: Any) -> None:
    page.goto("/agents/support-agent-v1")
    page.get_by_role("button", name="Delete", exact=True).click()
    dialog = page.get_by_role("dialog", name="Delete Customer Support?")
    expect(dialog).to_contain_text("whole version history")
    dialog.get_by_role("button", name="Delete agent").click()
    alert = page.get_by_role("alert").filter(has_text="cannot be deleted")
    expect(alert).to_contain_text("agent 'support-agent-v1' is used by route(s): default, support")
    expect(alert.get_by_role("link", name="Open routes")).to_be_visible()
    screenshot(page, "07-agent-delete-blocked", full_page=False)

    # An agent no route uses goes, and the list says so.
    page.goto("/agents/onboarding-agent-v1")
    server.run(server.store.delete_route("onboarding"))
    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Delete agent").click()
    expect(page).to_have_url(re.compile(r"/agents$"))
    expect(page.get_by_text("Agent “onboarding-agent-v1” deleted.")).to_be_visible()
    expect(page.get_by_role("table", name=re.compile("All agents")).get_by_role("row")).to_have_count(4)


# ------------------------------------------------------------------ routes


def test_routes_add_change_delete(server: ConsoleServer, page: Any) -> None:
    page.goto("/routes")
    table = page.get_by_role("table", name=re.compile("Routing table"))
    expect(table.get_by_role("row")).to_have_count(6)
    default_row = table.get_by_role("row").filter(has=page.locator("code", has_text=re.compile(r"^default$")))
    expect(default_row).to_contain_text("Default")

    # A purpose the API refuses: its 422 lands on the field.
    page.get_by_label("Purpose", exact=True).fill("Billing Desk")
    page.get_by_label("Agent", exact=True).select_option("sales-agent-v1")
    page.get_by_role("button", name="Add route").click()
    expect(page.locator('[data-field="purpose"] .server-error')).to_be_visible()

    page.get_by_label("Purpose", exact=True).fill("billing")
    page.get_by_role("button", name="Add route").click()
    billing = table.get_by_role("row").filter(has=page.locator("code", has_text=re.compile(r"^billing$")))
    expect(billing).to_contain_text("Sales Qualification")
    expect(page.get_by_text("Route “billing” added.")).to_be_visible()

    # Change it: another agent, and make it the default.
    billing.get_by_role("button", name="Edit route billing").click()
    expect(page.get_by_role("heading", name="Change route “billing”")).to_be_visible()
    expect(page.get_by_label("Purpose", exact=True)).to_have_js_property("readOnly", True)
    page.get_by_label("Agent", exact=True).select_option("support-agent-v1")
    page.get_by_label("Default route").check()
    page.get_by_role("button", name="Save route").click()
    expect(billing).to_contain_text("Customer Support")
    expect(billing).to_contain_text("Default")
    expect(default_row).not_to_contain_text("Default")
    screenshot(page, "08-routes", full_page=False)

    billing.get_by_role("button", name="Delete route billing").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete route").click()
    expect(billing).to_have_count(0)
    expect(page.get_by_role("alert").filter(has_text="No default route")).to_be_visible()
    routes = server.run(server.store.list_routes())
    assert "billing" not in {r.purpose for r in routes}
    assert not any(r.is_default for r in routes)


def test_routes_phone_numbers(server: ConsoleServer, page: Any) -> None:
    page.goto("/routes")
    table = page.get_by_role("table", name=re.compile("Routing table"))
    sales = table.get_by_role("row").filter(has=page.locator("code", has_text=re.compile(r"^sales$")))
    sales.get_by_role("button", name="Edit route sales").click()
    page.get_by_label("Phone numbers").fill("+15550100200, 442071230000")  # the second is not E.164
    page.get_by_role("button", name="Save route").click()
    expect(page.locator('[data-field="phone_numbers"] .server-error')).to_be_visible()
    page.get_by_label("Phone numbers").fill("+15550100200, +442071230000")
    page.get_by_role("button", name="Save route").click()
    expect(sales).to_contain_text("+15550100200")
    expect(sales).to_contain_text("+442071230000")
    assert server.run(server.store.get_route("sales")).phone_numbers == ["+15550100200", "+442071230000"]

    # another route taking one of them: the 409 names the route that holds it, on the field
    support = table.get_by_role("row").filter(has=page.locator("code", has_text=re.compile(r"^support$")))
    support.get_by_role("button", name="Edit route support").click()
    page.get_by_label("Phone numbers").fill("+442071230000")
    page.get_by_role("button", name="Save route").click()
    expect(page.locator('[data-field="phone_numbers"] .server-error')).to_contain_text("'sales'")
    assert server.run(server.store.get_route("support")).phone_numbers == []

    # editing keeps the numbers (a save that did not send them would drop them)
    page.get_by_role("button", name="Cancel").click()
    sales.get_by_role("button", name="Edit route sales").click()
    expect(page.get_by_label("Phone numbers")).to_have_value("+15550100200, +442071230000")
    page.get_by_label("Default route").check()
    page.get_by_role("button", name="Save route").click()
    expect(sales).to_contain_text("Default")
    assert server.run(server.store.get_route("sales")).phone_numbers == ["+15550100200", "+442071230000"]


# ------------------------------------------------------------------ webhooks


def test_webhooks_add_see_deliveries_resend_rotate_disable_delete(server: ConsoleServer, page: Any) -> None:
    from app.domain.models import utcnow
    from app.domain.webhooks import Delivery, new_delivery_id

    page.goto("/webhooks")
    table = page.get_by_role("table", name=re.compile("Endpoints"))
    expect(table).to_contain_text("No endpoints yet")

    # the production URL policy refuses a private address: the 422 lands on the field
    page.get_by_label("URL", exact=True).fill("https://10.0.0.7/hooks")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator('[data-field="url"] .server-error')).to_be_visible()

    page.get_by_label("URL", exact=True).fill("https://93.184.215.14/hooks")
    expect(page.get_by_role("checkbox", name="session.ended")).to_be_checked()
    page.get_by_role("checkbox", name="session.started").check()
    page.get_by_label("Description").fill("CRM sync")
    page.get_by_role("button", name="Add endpoint").click()
    secret = page.locator("#secret-value")
    expect(secret).to_contain_text("whsec_")
    first_secret = secret.inner_text()
    hooks = server.run(server.store.dispatch_targets())
    assert len(hooks) == 1 and hooks[0].secret == first_secret and hooks[0].events == ["session.ended", "session.started"]
    page.get_by_role("button", name="I have stored it").click()
    expect(page.locator("#secret-panel")).to_be_hidden()
    row = table.get_by_role("row").filter(has_text="93.184.215.14")
    expect(row).to_contain_text("CRM sync")
    expect(row).to_contain_text("enabled")

    # a delivery that failed for good: listed with its last answer, then resent
    hook_id = hooks[0].id

    async def failed_delivery() -> None:
        store = server.store
        assert store is not None
        now = utcnow()
        d = Delivery(id=new_delivery_id(), webhook_id=hook_id, event_id="evt_01TESTTESTTESTTESTTESTTEST",
                     event_type="session.ended", next_attempt_at=now, window_ends_at=now + timedelta(hours=1),
                     created_at=now)
        await store.add_deliveries([d])
        (c,) = await store.claim_deliveries(hook_id, "elsewhere", 60, 1)
        await store.finish_delivery(c.id, "elsewhere", 1, status="failed", next_attempt_at=None,
                                    last_status_code=500, last_error="HTTP 500: upstream down")

    server.run(failed_delivery())
    row.get_by_role("button", name=re.compile("Deliveries of")).click()
    deliveries = page.get_by_role("table", name=re.compile("Deliveries"))
    expect(deliveries).to_contain_text("failed")
    expect(deliveries).to_contain_text("HTTP 500: upstream down")
    deliveries.get_by_role("button", name="Resend").click()
    expect(page.get_by_text("Sent again")).to_be_visible()
    expect(deliveries).to_contain_text("pending")
    screenshot(page, "12-webhooks", full_page=True)

    row.get_by_role("button", name=re.compile("Rotate the secret")).click()
    page.get_by_role("dialog").get_by_role("button", name="Rotate secret").click()
    expect(secret).to_contain_text("whsec_")
    assert secret.inner_text() != first_secret
    page.get_by_role("button", name="I have stored it").click()

    row.get_by_role("button", name=re.compile("^Edit ")).click()
    page.get_by_label("Enabled").uncheck()
    page.get_by_role("button", name="Save endpoint").click()
    expect(row).to_contain_text("disabled")
    assert not server.run(server.store.get_webhook(hook_id)).enabled

    row.get_by_role("button", name=re.compile("^Delete ")).click()
    page.get_by_role("dialog").get_by_role("button", name="Delete endpoint").click()
    expect(table).to_contain_text("No endpoints yet")
    audit, _ = server.run(server.store.list_events(types=["webhook.created", "webhook.updated",
                                                          "webhook.secret_rotated", "webhook.deleted"]))
    assert [e.type for e in reversed(audit)] == ["webhook.created", "webhook.secret_rotated", "webhook.updated",
                                                 "webhook.deleted"]
    assert all(e.actor == "admin" for e in audit)


# ------------------------------------------------------------------ sessions


def _store_sessions(server: ConsoleServer) -> datetime:
    """Seed three sessions starting an hour ago; returns that start, whose UTC day may be yesterday's."""
    t0 = datetime.now(UTC) - timedelta(hours=1)

    async def create() -> None:
        store = server.store
        assert store is not None
        await store.start_session(SessionRecord(
            session_id="sess-interview-1", room="interview-agent-v1-a1b2", agent_id="interview-agent-v1",
            config_version=1, user_id="cand-42", started_at=t0, route_reason="purpose 'interview'",
        ))
        script = [
            ("assistant", "Hello, and thanks for making time today. Is now still a good time?"),
            ("user", "Yes, now is fine."),
            ("assistant", "Could you tell me your name, and how you'd like to be addressed?"),
            ("user", "I'm Jane Doe. Jane is fine."),
            ("tool", "record_candidate_name('Jane Doe') -> ok"),
            ("assistant", "Thanks Jane. How many years of relevant experience do you have?"),
            ("user", "About six and a half."),
        ]
        for seq, (role, text) in enumerate(script):
            await store.append_turn("sess-interview-1", Turn(
                seq=seq, role=role, text=text, at=t0 + timedelta(seconds=8 * seq), agent_id="interview-agent-v1",
            ))
        await store.record_data("sess-interview-1", {
            "candidate_name": "Jane Doe", "years_of_experience": 6.5, "key_skills": ["Python", "SQL"],
            "notice_period": "x",
        })
        await store.finish_session(
            "sess-interview-1", SessionStatus.completed, reason="candidate hung up",
            ended_at=t0 + timedelta(minutes=3, seconds=5),
        )
        request = AnalysisRequest(agent_id="interview-agent-v1", config_version=1, model="gpt-4.1-mini",
                                  settings=AnalysisConfig(summary_prompt="Short.", success_criteria="Name taken."))
        await store.update_session("sess-interview-1", analysis=SessionAnalysis(
            status=AnalysisStatus.done, request=request, requested_at=t0, finished_at=t0, attempts=2,
            summary="Jane Doe has about six and a half years of experience.",
            success=SuccessVerdict(passed=True, reason="The candidate's name was recorded."),
            extracted={"years": 6.5}, input_tokens=900, output_tokens=60, cost_usd=0.000456,
        ))
        await store.start_session(SessionRecord(
            session_id="sess-support-1", room="support-agent-v1-c3d4", agent_id="support-agent-v1",
            config_version=1, started_at=t0 + timedelta(minutes=10),
        ))
        await store.record_handoff("sess-support-1", Handoff(
            from_agent="support-agent-v1", to_agent="sales-agent-v1", reason="wants to upgrade",
            at=t0 + timedelta(minutes=11),
        ))
        usage = PriceTable.defaults().priced(SessionUsage(
            served_by=[ServedBy(kind="llm", provider="backup.example:8080", model="llama", turns=2)],
        ), [
            ModelUsage(kind="llm", provider="api.openai.com", model="gpt-4.1-mini", input_tokens=1000,
                       cached_tokens=400, output_tokens=60),
            ModelUsage(kind="llm", provider="backup.example:8080", model="llama", input_tokens=200, output_tokens=25),
            ModelUsage(kind="tts", provider="api.openai.com", model="tts-1", characters=412, audio_s=21.5),
        ])
        await store.update_session("sess-support-1", usage=usage.model_dump(mode="json"), events=[SessionEvent(
            kind="provider_unavailable", agent_id="support-agent-v1", detail="llm api.openai.com/gpt-4.1-mini",
            at=t0 + timedelta(minutes=10, seconds=5)).model_dump(mode="json")])
        await store.finish_session(  # as app/worker/model_unavailable.py records it
            "sess-support-1", SessionStatus.failed, reason="llm_unavailable",
            error="APIStatusError: Error code: 401 - Incorrect API key provided: sk-***",
            ended_at=t0 + timedelta(minutes=12),
        )
        await store.start_session(SessionRecord(
            session_id="sess-sales-1", room="sales-agent-v1-e5f6", agent_id="sales-agent-v1",
            config_version=1, started_at=t0 + timedelta(minutes=30),
        ))

    server.run(create())
    return t0


def test_sessions_list_filters_and_transcript(server: ConsoleServer, page: Any) -> None:
    _store_sessions(server)
    page.goto("/sessions")
    table = page.get_by_role("table", name=re.compile("Sessions"))
    expect(table.get_by_role("row")).to_have_count(4)
    screenshot(page, "09-sessions", full_page=False)

    page.get_by_label("Status").select_option("completed")
    expect(table.get_by_role("row")).to_have_count(2)
    expect(table).to_contain_text("sess-interview-1")
    expect(page).to_have_url(re.compile(r"status=completed"))
    page.get_by_role("button", name="Reset").click()
    expect(table.get_by_role("row")).to_have_count(4)

    page.get_by_label("Agent", exact=True).select_option("support-agent-v1")
    expect(table.get_by_role("row")).to_have_count(2)
    expect(table).to_contain_text("failed")
    page.get_by_role("button", name="Reset").click()
    page.get_by_label("Status").select_option("failed")  # the model was unavailable: why it ended
    expect(table.get_by_role("row")).to_have_count(2)
    expect(table.get_by_role("row").filter(has_text="sess-support-1")).to_contain_text("llm_unavailable")
    page.get_by_role("button", name="Reset").click()

    tomorrow = (datetime.now() + timedelta(days=1)).strftime("%Y-%m-%d")
    page.get_by_label("From date").fill(tomorrow)
    page.get_by_role("button", name="Apply filters").click()
    expect(table).to_contain_text("No session matches these filters.")
    today = datetime.now().strftime("%Y-%m-%d")
    page.get_by_label("From date").fill((datetime.now() - timedelta(days=1)).strftime("%Y-%m-%d"))
    page.get_by_label("To date").fill(today)
    page.get_by_role("button", name="Apply filters").click()
    expect(table.get_by_role("row")).to_have_count(4)

    table.get_by_role("link", name="sess-interview-1").click()
    expect(heading(page)).to_contain_text("Session sess-interview-1")
    transcript = page.get_by_role("list", name=re.compile("Transcript"))
    expect(transcript.get_by_role("listitem")).to_have_count(7)
    expect(transcript).to_contain_text("I'm Jane Doe. Jane is fine.")
    facts = page.locator("#facts")
    expect(facts).to_contain_text("candidate hung up")
    expect(facts.get_by_role("link", name="v1", exact=True)).to_have_attribute("href", "/agents/interview-agent-v1/history")
    collected = page.get_by_role("table", name="Collected data")
    expect(collected.get_by_role("row").filter(has_text="candidate_name")).to_contain_text("valid")
    expect(collected.get_by_role("row").filter(has_text="availability")).to_contain_text("missing")
    expect(collected.get_by_role("row").filter(has_text="notice_period")).to_contain_text("shorter than 2 characters")
    expect(page.get_by_text("3 of 6 required")).to_be_visible()
    expect(page.locator("#handoff-list")).to_contain_text("No handoffs")
    analysis = page.locator("#analysis")
    expect(page.locator("#analysis-status")).to_have_text("done")
    expect(analysis).to_contain_text("Jane Doe has about six and a half years of experience.")
    expect(analysis).to_contain_text("passed")
    expect(analysis).to_contain_text("The candidate's name was recorded.")
    expect(page.get_by_role("table", name="Extracted fields")).to_contain_text("6.5")
    expect(analysis).to_contain_text("gpt-4.1-mini · 2 attempt(s)")
    expect(analysis).to_contain_text("$0.000456")
    screenshot(page, "10-session-detail", full_page=True)

    page.goto("/sessions/sess-support-1")
    expect(page.locator("#handoff-list")).to_contain_text("support-agent-v1 → sales-agent-v1")
    expect(page.get_by_role("list", name=re.compile("Transcript"))).to_contain_text(
        "Handed off from support-agent-v1 to sales-agent-v1"
    )
    facts = page.locator("#facts")
    expect(facts).to_contain_text("llm_unavailable")
    expect(facts).to_contain_text("APIStatusError: Error code: 401")
    expect(page.locator("#usage")).to_contain_text("1,285 (1,200 in, of which 400 cached; 85 out)")
    # gpt-4.1-mini: 600 × 0.40 + 400 × 0.10 + 60 × 1.60 per million; tts-1: 412 × 15 per million
    expect(page.locator("#usage-cost")).to_have_text("$0.006556")
    expect(page.locator("#usage")).to_contain_text("No price for llama: not included")
    by_model = page.get_by_role("table", name="Usage by model")
    expect(by_model.get_by_role("row").filter(has_text="llama")).to_contain_text("no price")
    expect(by_model.get_by_role("row").filter(has_text="tts-1")).to_contain_text("412 chars, 21.5 s")
    expect(page.locator("#analysis")).to_contain_text("No analysis")
    served = page.get_by_role("table", name="Served by")
    expect(served.get_by_role("row").filter(has_text="backup.example:8080")).to_contain_text("llama")
    expect(page.get_by_role("list", name="Events")).to_contain_text("Provider unavailable")
    expect(page.get_by_role("list", name="Events")).to_contain_text("llm api.openai.com/gpt-4.1-mini")


def test_usage_page_sums_per_agent_and_day_and_lists_prices(server: ConsoleServer, page: Any) -> None:
    t0 = _store_sessions(server)
    page.goto("/usage")
    table = page.get_by_role("table", name=re.compile("^Usage"))
    expect(table.get_by_role("row")).to_have_count(4)  # header + three agents
    support = table.get_by_role("row").filter(has_text="support-agent-v1")
    expect(support).to_contain_text("1,200 / 400 / 85")
    expect(support).to_contain_text("$0.006556")
    expect(support).to_contain_text("1 with an unpriced model")
    expect(table.get_by_role("row").filter(has_text="interview-agent-v1")).to_contain_text("$0.000456")
    expect(page.locator("#usage-total")).to_contain_text("Sessions3")
    screenshot(page, "11-usage", full_page=True)

    page.get_by_role("checkbox", name="Day").check()
    # the UTC day the support session started, not today's: between 00:00 and 01:10 UTC they differ
    support_day = (t0 + timedelta(minutes=10)).strftime("%Y-%m-%d")
    expect(table.get_by_role("row").filter(has_text="support-agent-v1")).to_contain_text(support_day)
    expect(page).to_have_url(re.compile(r"group_by=agent%2Cday"))
    page.get_by_role("checkbox", name="Agent").uncheck()
    page.get_by_role("checkbox", name="Day").uncheck()
    expect(table.get_by_role("row")).to_have_count(2)
    expect(table).to_contain_text("All sessions")
    page.get_by_label("From day (UTC)").fill((datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d"))
    page.get_by_role("button", name="Apply").click()
    expect(table).to_contain_text("No sessions in this range.")

    prices = page.get_by_role("table", name="Price table")
    expect(prices.get_by_role("row").filter(has_text="gpt-4.1-mini")).to_contain_text("$0.4")
    expect(prices.get_by_role("row").filter(has_text="gpt-4.1-mini")).to_contain_text("2025-08-01")


def test_analysis_settings_are_edited_with_errors_in_place(server: ConsoleServer, page: Any) -> None:
    page.goto("/agents/support-agent-v1")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Customer Support")
    page.get_by_label("Summary instructions").fill("One sentence: why they called.")
    page.get_by_label("Fields to extract").fill('{"type": "array", "items": {}}')
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator('[data-field="analysis.extraction_schema"] .server-error')).to_contain_text('"type": "object"')
    page.get_by_label("Fields to extract").fill('{"type": "object", "properties": {"refund": {"type": "boolean"}}}')
    page.get_by_label("Attempts").fill("2")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_text("Saved as version 2.")).to_be_visible()
    expect(page.locator(".server-error")).to_have_count(0)

    analysis = server.run(server.store.get_agent_config("support-agent-v1")).analysis
    assert analysis is not None and analysis.summary_prompt == "One sentence: why they called."
    assert analysis.extraction_schema == {"type": "object", "properties": {"refund": {"type": "boolean"}}}
    assert analysis.max_attempts == 2 and analysis.success_criteria is None
    page.reload()
    expect(page.get_by_label("Attempts")).to_have_value("2")


# ------------------------------------------------------------------ talk


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_talk_token_request_and_livekit_not_configured(page: Any) -> None:
    page.goto("/talk")
    target = page.get_by_label("Talk to")
    expect(target).to_have_value("purpose:default")
    target.select_option("purpose:interview")
    expect(page.get_by_label("role", exact=True)).to_be_visible()
    expect(page.get_by_label("company_name", exact=True)).to_have_attribute("placeholder", "Acme")
    page.get_by_label("role", exact=True).fill("Data Engineer")
    with page.expect_request(lambda r: r.url.endswith("/api/v1/token") and r.method == "POST") as req:
        page.get_by_role("button", name="Start").click()
    assert req.value.post_data_json == {"purpose": "interview", "variables": {"role": "Data Engineer"}}

    alert = page.locator("#call-alert").get_by_role("alert")
    expect(alert).to_contain_text("Cannot reach LiveKit.")
    expect(alert).to_contain_text("LiveKit is not configured on this server")
    expect(page.locator("#call-status")).to_have_text("Cannot reach LiveKit")
    expect(page.get_by_role("button", name="Start")).to_be_enabled()
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    screenshot(page, "11-talk-livekit-not-configured", full_page=False)


def test_talk_unreachable_livekit_url(start_server: Callable[..., ConsoleServer], new_context: Callable[..., Any]) -> None:
    url = f"ws://127.0.0.1:{_closed_port()}"
    server = start_server(livekit_url=url, livekit_api_key="devkey", livekit_api_secret="s" * 32)
    page = new_context(server).new_page()
    page.goto("/talk?agent=support-agent-v1")
    expect(page.get_by_label("Talk to")).to_have_value("agent:support-agent-v1")
    page.get_by_label("caller_name", exact=True).fill("Sam")
    page.get_by_label("User ID").fill("console-tester")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/token")) as resp:
        page.get_by_role("button", name="Start").click()
    assert resp.value.status == 201
    assert resp.value.request.post_data_json == {
        "agent_id": "support-agent-v1", "variables": {"caller_name": "Sam"}, "user_id": "console-tester",
    }
    alert = page.locator("#call-alert").get_by_role("alert")
    expect(alert).to_contain_text("Cannot reach LiveKit.", timeout=20_000)
    expect(alert).to_contain_text(f"Could not connect to {url}")
    expect(page.get_by_role("button", name="Start")).to_be_enabled()
    screenshot(page, "12-talk-livekit-unreachable", full_page=False)


def test_talk_token_validation_error_lands_on_the_variable(page: Any) -> None:
    page.goto("/talk?purpose=interview")
    expect(page.get_by_label("role", exact=True)).to_be_visible()
    page.route("**/api/v1/token", lambda route: route.fulfill(
        status=422, content_type="application/json",
        body=json.dumps({"status_code": 422, "detail": "Validation failed",
                         "extra": [{"key": "variables.role", "message": "interview-agent-v1 requires variable 'role'"}]}),
    ))
    page.get_by_role("button", name="Start").click()
    expect(page.locator('[data-field="variables.role"] .server-error')).to_have_text(
        "interview-agent-v1 requires variable 'role'"
    )
    expect(page.locator("#call-status")).to_have_text("Not connected")


def test_talk_explains_missing_console_assets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
    start_server: Callable[..., ConsoleServer], new_context: Callable[..., Any],
) -> None:
    import app.assets.browser as browser_assets

    # Neither `npm ci` nor a fetch has put the client anywhere this server looks.
    monkeypatch.setattr(browser_assets, "NODE_MODULES", tmp_path / "no-node-modules")
    server = start_server(asset_cache_dir=tmp_path / "empty-cache")
    page = new_context(server).new_page()
    page.goto("/talk")
    alert = page.get_by_role("alert").filter(has_text="LiveKit client missing.")
    expect(alert).to_contain_text("livekit-client@2.23.0 is not in")
    expect(alert).to_contain_text(str(tmp_path / "empty-cache"))
    expect(alert).to_contain_text("fetches it from the npm registry")
    expect(page.get_by_role("button", name="Start")).to_be_disabled()
    assert page.request.get("/console/vendor/livekit-client/livekit-client.esm.mjs").status == 404


def test_api_reference_renders_offline_under_its_csp(page: Any) -> None:
    """The console's "API reference" link: Swagger UI from this server only (the page's
    CSP allows nothing else, and a refused script or style fails this test through
    page_errors), listing the API, with "Try it out" reaching the server."""
    page.goto("/agents")
    with page.expect_popup() as popup:
        page.get_by_role("link", name="API reference").click()
    docs = popup.value
    external = []
    docs.on("request", lambda r: r.url.startswith(server_origin(docs)) or r.url.startswith("data:")
            or external.append(r.url))
    docs.reload()
    expect(docs.get_by_role("heading", name=re.compile("Voice platform admin API"))).to_be_visible()
    csp = docs.evaluate("() => fetch(location.href).then(r => r.headers.get('content-security-policy'))")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    health = docs.locator(".opblock").filter(has_text="/healthz")
    expect(health).to_be_visible()
    expect(docs.locator(".opblock").filter(has_text="/api/v1/agents/config").first).to_be_visible()
    health.locator(".opblock-summary").click()
    health.get_by_role("button", name="Try it out").click()
    health.get_by_role("button", name="Execute").click()
    expect(health.locator(".live-responses-table tr.response .response-col_status")).to_have_text("200")
    screenshot(docs, "api-reference", full_page=False)
    assert external == [], f"the API reference loaded from elsewhere: {external}"


def server_origin(page: Any) -> str:
    return page.url.split("/schema", 1)[0]


# ------------------------------------------------------------------ every page


PAGES = [
    ("/agents", "Agents"),
    ("/agents/new", "New agent"),
    ("/agents/support-agent-v1", "Customer Support"),
    ("/agents/support-agent-v1/history", "Customer Support · history"),
    ("/routes", "Routes"),
    ("/sessions", "Sessions"),
    ("/sessions/sess-interview-1", "Session sess-interview-1"),
    ("/usage", "Usage"),
    ("/webhooks", "Webhooks"),
    ("/talk", "Talk"),
]

UNLABELLED_CONTROLS = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((el) => el.type !== 'hidden' && el.getClientRects().length > 0)
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
    && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map((el) => el.outerHTML.slice(0, 120))"""


def test_every_page_renders_with_labelled_controls(server: ConsoleServer, page: Any) -> None:
    _store_sessions(server)
    for path, title in PAGES:
        page.goto(path)
        expect(heading(page)).to_contain_text(title)
        expect(page.get_by_role("navigation", name="Main").get_by_role(
            "link", name=re.compile(r"^(Agents|Routes|Sessions|Usage|Webhooks|Talk)$"))).to_have_count(6)
        expect(page.locator("body[data-ready=true]")).to_be_attached()
        assert page.evaluate(UNLABELLED_CONTROLS) == [], path
        assert page.locator("text=undefined").count() == 0, path
        assert page.locator("text=[object").count() == 0, path


def test_unknown_agent_and_session_pages_say_so(page: Any) -> None:
    page.goto("/agents/no-such-agent")
    expect(heading(page)).to_have_text("Agent not found")
    expect(page.get_by_role("alert")).to_contain_text("There is no agent “no-such-agent”")
    page.goto("/sessions/no-such-session")
    expect(heading(page)).to_have_text("Session not found")


def test_js_helpers(page: Any) -> None:
    """The diff and template parser, run in the browser as the pages run them."""
    page.goto("/agents")
    result = page.evaluate("""async () => {
      const t = await import('/console/static/js/template-vars.js');
      const d = await import('/console/static/js/diff.js');
      const s = await import('/console/static/js/schema-check.js');
      const p = t.placeholders('Hi {name}, {{literal}} {bad.attr} }');
      const diff = d.diffLines('a\\nb\\nc', 'a\\nB\\nc\\nd').map((l) => l.op + l.text);
      return {
        names: [...p.names], problems: p.problems, diff,
        ok: s.checkValue(['x', 'y'], {type: 'array', items: {type: 'string'}, maxItems: 3}),
        bad: s.checkValue(7, {type: 'string'}),
      };
    }""")
    assert result["names"] == ["name"]
    assert len(result["problems"]) == 2
    assert result["diff"] == [" a", "-b", "+B", " c", "+d"]
    assert result["ok"] == []
    assert result["bad"] == ["expected string, got integer"]


# A stand-in for livekit-client with the API surface talk.js uses, so the call flow
# (join, mic, agent audio, live transcriptions, Stop) runs without a LiveKit server.
FAKE_LIVEKIT = """
const fake = (window.__fakeLk = { events: [] });
export const RoomEvent = {
  TrackSubscribed: 'trackSubscribed', TrackUnsubscribed: 'trackUnsubscribed',
  ParticipantConnected: 'participantConnected', ParticipantDisconnected: 'participantDisconnected',
  ParticipantAttributesChanged: 'participantAttributesChanged', ActiveSpeakersChanged: 'activeSpeakersChanged',
  ConnectionStateChanged: 'connectionStateChanged', Disconnected: 'disconnected',
  TranscriptionReceived: 'transcriptionReceived',
};
export const Track = { Kind: { Audio: 'audio', Video: 'video' } };
export const ParticipantKind = { AGENT: 4 };
export class Room {
  constructor() {
    this.handlers = {};
    this.textHandlers = {};
    this.remoteParticipants = new Map();
    this.localParticipant = { identity: 'console-tester', setMicrophoneEnabled: async (on) => { fake.mic = on; } };
    fake.room = this;
  }
  on(event, fn) { (this.handlers[event] ||= []).push(fn); return this; }
  emit(event, ...args) { for (const fn of this.handlers[event] || []) fn(...args); }
  removeAllListeners() { this.handlers = {}; }
  registerTextStreamHandler(topic, fn) { this.textHandlers[topic] = fn; }
  async connect(url, token) { fake.connected = { url, token }; }
  async disconnect() { fake.disconnected = true; }
  async startAudio() { fake.audioStarted = true; }
}
"""

SIMULATE_AGENT = """async () => {
  const room = window.__fakeLk.room;
  const agent = { identity: 'agent-xyz', isAgent: true, attributes: { 'lk.agent.state': 'listening' } };
  room.emit('participantConnected', agent);
  room.emit('trackSubscribed', { kind: 'audio', attach: () => document.createElement('audio'), detach: () => [] });
  const stream = (chunks, attributes) => ({
    info: { id: 'stream-' + Math.random(), attributes },
    async *[Symbol.asyncIterator]() { for (const c of chunks) yield c; },
  });
  await room.textHandlers['lk.transcription'](
    stream(['Hello! ', 'How can I help?'], { 'lk.segment_id': 'seg-1', 'lk.transcription_final': 'false' }),
    { identity: 'agent-xyz' });
  room.emit('transcriptionReceived', [{ id: 'seg-2', text: 'My order is late.', final: true }],
    room.localParticipant);
  room.emit('participantAttributesChanged', { 'lk.agent.state': 'thinking' }, agent);
}"""


def test_talk_call_flow_with_a_stand_in_livekit_client(
    start_server: Callable[..., ConsoleServer], new_context: Callable[..., Any]
) -> None:
    server = start_server(livekit_url="wss://livekit.invalid", livekit_api_key="devkey", livekit_api_secret="s" * 32)
    page = new_context(server).new_page()
    page.route("**/console/vendor/livekit-client/livekit-client.esm.mjs",
               lambda route: route.fulfill(status=200, content_type="text/javascript", body=FAKE_LIVEKIT))
    page.goto("/talk?purpose=support")
    expect(page.get_by_label("caller_name", exact=True)).to_be_visible()
    page.get_by_role("button", name="Start").click()

    expect(page.locator("#call-status")).to_have_text("Waiting for the agent…")
    fake = page.evaluate("({ ...window.__fakeLk, room: undefined })")
    assert fake["connected"]["url"] == "wss://livekit.invalid"
    assert fake["connected"]["token"].count(".") == 2  # a JWT
    assert fake["mic"] is True
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    expect(page.get_by_label("Talk to")).to_be_disabled()

    page.evaluate(SIMULATE_AGENT)
    expect(page.locator("#call-status")).to_have_text("Connected")
    live = page.get_by_role("list", name="Live transcript")
    expect(live.get_by_role("listitem")).to_have_count(2)
    expect(live.get_by_role("listitem").nth(0)).to_contain_text("Agent")
    expect(live.get_by_role("listitem").nth(0)).to_contain_text("Hello! How can I help?")
    expect(live.get_by_role("listitem").nth(1)).to_contain_text("You")
    expect(live.get_by_role("listitem").nth(1)).to_contain_text("My order is late.")
    expect(page.locator("#audio-sink audio")).to_have_count(1)
    expect(page.locator("#call-caption")).to_contain_text("Thinking")
    screenshot(page, "13-talk-in-call", full_page=False)

    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#call-status")).to_have_text("Not connected")
    expect(page.locator("#call-caption")).to_have_text("You left the call.")
    assert page.evaluate("window.__fakeLk.disconnected") is True
    expect(page.locator("#audio-sink audio")).to_have_count(0)
    expect(page.get_by_role("button", name="Start")).to_be_enabled()
