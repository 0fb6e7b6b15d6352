"""The console's Campaigns page in a real browser: a campaign's progress and outcomes as
the store holds them (contacts claimed and finished as a runner would), pause and resume
from the page, and the contact list with attempts and SIP statuses."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from app.domain.calls import CampaignInput, ContactStatus

from .conftest import ConsoleServer, screenshot


def _campaign_with_outcomes(server: ConsoleServer) -> str:
    async def create() -> str:
        store = server.store
        assert store is not None
        view = await store.create_campaign(CampaignInput.model_validate({
            "name": "March reminders", "purpose": "support", "concurrency": 4,
            "contacts": [{"phone": f"+1555010{i:04d}"} for i in range(6)]}))
        [campaign] = await store.running_campaigns()
        claims = await store.claim_contacts(campaign, "runner", lease_s=60, limit=4)
        outcomes = [(ContactStatus.answered, None), (ContactStatus.answered, None), (ContactStatus.busy, 486)]
        for claim, (status, code) in zip(claims, outcomes, strict=False):
            await store.release_contact(claim, status=status, attempts=1, last_sip_status_code=code)
        return view.id  # the fourth claim stays dialing; two contacts are pending

    return server.run(create())


def test_campaigns_page_shows_progress_and_pauses_and_resumes(server: ConsoleServer, page: Any) -> None:
    campaign_id = _campaign_with_outcomes(server)
    page.goto("/campaigns")
    table = page.get_by_role("table", name=re.compile("^Campaigns"))
    row = table.get_by_role("row").filter(has_text="March reminders")
    expect(row).to_contain_text("3 / 6 done (50 %)")
    expect(row).to_contain_text("answered 2 · busy 1 · dialing 1 · pending 2")
    expect(row).to_contain_text("running")
    expect(page.get_by_label("March reminders progress")).to_have_attribute("value", "3")
    screenshot(page, "12-campaigns", full_page=True)

    row.get_by_role("button", name="Pause").click()
    expect(row).to_contain_text("paused")
    assert server.run(server.store.get_campaign(campaign_id)).status.value == "paused"  # type: ignore[union-attr]
    row.get_by_role("button", name="Resume").click()
    expect(row).to_contain_text("running")

    row.get_by_role("button", name="Contacts").click()
    contacts = page.get_by_role("table", name=re.compile("^Contacts of"))
    expect(contacts.get_by_role("row")).to_have_count(7)  # header + six contacts
    busy = contacts.get_by_role("row").filter(has_text="busy")
    expect(busy).to_contain_text("486")
    expect(busy).to_contain_text("+15550100002")


def test_campaigns_page_without_campaigns(server: ConsoleServer, page: Any) -> None:
    page.goto("/campaigns")
    expect(page.get_by_role("table", name=re.compile("^Campaigns"))).to_contain_text("No campaigns yet.")
    expect(page.get_by_role("link", name="Campaigns")).to_have_attribute("aria-current", "page")
