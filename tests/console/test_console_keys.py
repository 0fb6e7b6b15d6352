"""The console's API keys page and the audit trail in the history view, in a real
browser: a key is created with its secret shown once (only its hash is stored), bad
names are refused in place, a key is revoked; a key without the admin role is told it
cannot manage keys; the history view says who saved each version, with the note."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import expect

from app.domain.events import ChangeContext
from app.domain.keys import ApiKeyInput, Role, hash_key

from .conftest import KEY_STORAGE, ConsoleServer, screenshot

UNLABELLED_CONTROLS = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((el) => el.type !== 'hidden' && el.getClientRects().length > 0)
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
    && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map((el) => el.outerHTML.slice(0, 120))"""


def signed_in_with(new_context: Callable[..., Any], server: ConsoleServer, key: str) -> Any:
    ctx = new_context(server, signed_in=False)
    ctx.add_init_script(f"if (location.origin === {server.url!r}) sessionStorage.setItem({KEY_STORAGE!r}, {key!r})")
    return ctx.new_page()


def test_keys_page_creates_shows_the_secret_once_and_revokes(server: ConsoleServer, page: Any) -> None:
    page.goto("/keys")
    expect(page.get_by_role("heading", level=1)).to_have_text("API keys")
    expect(page.locator("body[data-ready=true]")).to_be_attached()
    assert page.evaluate(UNLABELLED_CONTROLS) == []
    keys = page.get_by_role("table", name=re.compile("Keys"))
    expect(keys).to_contain_text("No named keys yet")

    page.get_by_label("Name").fill("Bad Name")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator('[data-field="name"]')).to_contain_text("lower-case letters")

    page.get_by_label("Name").fill("ci-deploy")
    page.get_by_label("Role").select_option("publish")
    page.get_by_label("Change note").fill("deploy pipeline")
    page.get_by_role("button", name="Create key").click()
    panel = page.locator("#secret-panel")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("New publish key “ci-deploy”")
    secret = page.locator("#secret-value").text_content() or ""
    assert re.fullmatch(r"vp_[A-Za-z0-9_-]{43}", secret)
    (stored,) = server.run(server.store.api_key_table())
    assert (stored.name, stored.role, stored.key_hash) == ("ci-deploy", Role.publish, hash_key(secret))
    row = keys.get_by_role("row").filter(has_text="ci-deploy")
    expect(row).to_contain_text("publish")
    expect(row).to_contain_text("never")
    screenshot(page, "14-keys", full_page=True)

    page.get_by_role("button", name="I have stored it").click()
    expect(panel).to_be_hidden()
    page.reload()
    expect(page.locator("body[data-ready=true]")).to_be_attached()
    assert secret not in page.content()  # shown once: the list never has it

    page.get_by_label("Name").fill("ci-deploy")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator('[data-field="name"]')).to_contain_text("exists")

    page.get_by_role("button", name="Revoke ci-deploy").click()
    dialog = page.get_by_role("dialog", name="Revoke “ci-deploy”?")
    dialog.get_by_role("button", name="Revoke key").click()
    expect(keys).to_contain_text("No named keys yet")
    assert server.run(server.store.api_key_table()) == []
    r = httpx.get(f"{server.url}/api/v1/agents/config", headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 401
    events, _ = server.run(server.store.list_events(types=["key.created", "key.revoked"]))
    assert [(e.type, e.actor, e.note) for e in reversed(events)] == [
        ("key.created", "admin", "deploy pipeline"), ("key.revoked", "admin", None)]


def test_a_key_without_the_admin_role_is_told_it_cannot_manage_keys(
    server: ConsoleServer, new_context: Callable[..., Any]
) -> None:
    created = server.run(server.store.create_api_key(ApiKeyInput(name="viewer", role=Role.read)))
    page = signed_in_with(new_context, server, created.secret)
    page.goto("/agents")
    expect(page.get_by_role("link", name="Screening Interview")).to_be_visible()  # a read key signs in
    page.goto("/keys")
    expect(page.get_by_role("alert").filter(has_text="This key cannot manage keys.")).to_be_visible()
    expect(page.get_by_role("button", name="Create key")).to_be_disabled()
    expect(page.get_by_role("table", name=re.compile("Keys"))).to_contain_text("Only an admin key can see the keys.")


def test_history_shows_who_saved_each_version_and_why(server: ConsoleServer, page: Any) -> None:
    bot = server.run(server.store.create_api_key(ApiKeyInput(name="ci-bot", role=Role.edit)))
    r = httpx.patch(f"{server.url}/api/v1/agents/config/interview-agent-v1", json={"name": "Screening (v2)"},
                    headers={"Authorization": f"Bearer {bot.secret}", "Content-Type": "application/merge-patch+json",
                             "X-Change-Note": "shorter greeting for the pilot"})
    assert r.status_code == 200, r.text
    server.run(server.store.update_agent_config("interview-agent-v1", {"description": "tuned"},
                                                ctx=ChangeContext(actor="jane", note=None)))
    page.goto("/agents/interview-agent-v1/history")
    expect(page.get_by_role("heading", level=1)).to_have_text("Screening (v2) · history")
    versions = page.get_by_role("table", name=re.compile("Versions"))
    rows = versions.get_by_role("row")
    expect(rows).to_have_count(4)
    expect(rows.nth(1)).to_contain_text("jane")  # newest first
    expect(rows.nth(2)).to_contain_text("ci-bot")
    expect(rows.nth(2)).to_contain_text("shorter greeting for the pilot")
    expect(rows.nth(3)).to_contain_text("system")  # seeded: nobody over the API

    activity = page.get_by_role("table", name=re.compile("Activity"))
    expect(activity.get_by_role("row").filter(has_text="ci-bot")).to_contain_text("v2: patch")
    expect(activity.get_by_role("row").filter(has_text="ci-bot")).to_contain_text("shorter greeting for the pilot")
    screenshot(page, "15-history-audit", full_page=True)

    with page.expect_response(lambda resp: "/rollback/1" in resp.url):
        page.get_by_role("button", name="Roll back to version 1").click()
    expect(rows).to_have_count(5)
    expect(rows.nth(1)).to_contain_text("admin")  # the console's own key
    expect(activity.get_by_role("row").filter(has_text="rolled back to v1")).to_contain_text("admin")
