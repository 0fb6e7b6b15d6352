"""Campaigns end to end: created over the API (a list or CSV), run by two runners sharing
one database against the loopback LiveKit server (every dial decoded and checked), with
retries for busy/no-answer, calling hours in the contact's zone, pause and resume, and
progress over the API."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from app.settings import Settings
from app.store.sql import SQLStore
from app.telephony.campaigns import CampaignRunner
from sim.livekit_api import Dial, LoopbackLiveKit
from tests.telephony.conftest import MakeClient, MakeSettings

CAMPAIGNS = "/api/v1/campaigns"
ALL_DAY = {"start": "00:00", "end": "00:00"}


async def run_until_done(runners: list[CampaignRunner], store: SQLStore, campaign_id: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while (await store.get_campaign(campaign_id)).status.value == "running":
            await asyncio.gather(*(r.run_once() for r in runners))
            await asyncio.sleep(0.02)
        for r in runners:
            await r.idle()


async def test_a_campaign_of_20_contacts_runs_to_completion_on_two_runners(
    client_for: MakeClient, make_settings: MakeSettings, livekit: LoopbackLiveKit, store: SQLStore, tmp_path: Path
) -> None:
    contacts = [{"phone": f"+1555010{i:04d}", "variables": {"name": f"Contact {i}"}} for i in range(20)]
    for i in range(20):
        livekit.numbers[f"+1555010{i:04d}"] = Dial.answer(delay=0.05)
    livekit.numbers["+15550100003"] = [Dial.busy(), Dial.answer(delay=0.05)]  # busy, then answers the retry
    livekit.numbers["+15550100007"] = [Dial.no_answer()]  # never answers
    livekit.numbers["+15550100011"] = [Dial.rejected(), Dial.busy()]
    async with client_for() as c:
        r = await c.post(CAMPAIGNS, headers={"X-Change-Note": "march reminders"}, json={
            "name": "March reminders", "purpose": "reminders", "concurrency": 3, "max_attempts": 2,
            "calling_hours": ALL_DAY,
            "retry_delay_s": 0, "contacts": contacts})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["status"] == "running" and created["progress"]["by_status"]["pending"] == 20

    # two processes on one database
    other = SQLStore(store.url)
    await other.start()
    settings = make_settings()
    runners = [CampaignRunner(settings, store, owner="proc-a"), CampaignRunner(settings, other, owner="proc-b")]
    try:
        await run_until_done(runners, store, created["id"])
    finally:
        await other.aclose()

    async with client_for() as c:
        view = (await c.get(f"{CAMPAIGNS}/{created['id']}")).json()
        rows = (await c.get(f"{CAMPAIGNS}/{created['id']}/contacts", params={"limit": 50})).json()["items"]
        calls = (await c.get("/api/v1/calls", params={"campaign_id": created["id"], "limit": 100})).json()
    assert view["status"] == "completed"
    assert view["progress"]["by_status"] == {"pending": 0, "dialing": 0, "answered": 18, "busy": 1,
                                             "no_answer": 1, "failed": 0}
    assert view["progress"]["done"] == 20 and view["progress"]["attempts"] == 23
    by_phone = {x["phone"]: x for x in rows}
    assert (by_phone["+15550100003"]["status"], by_phone["+15550100003"]["attempts"]) == ("answered", 2)
    assert (by_phone["+15550100007"]["status"], by_phone["+15550100007"]["attempts"]) == ("no_answer", 2)
    assert (by_phone["+15550100011"]["status"], by_phone["+15550100011"]["last_sip_status_code"]) == ("busy", 486)
    assert all(x["last_call_id"] for x in rows)
    assert calls["total"] == 23

    dials = livekit.requests_for("CreateSIPParticipant")
    assert len(dials) == 23
    assert livekit.double_dials == []  # never a contact twice at once
    assert livekit.max_in_flight <= 3  # the concurrency cap, across both runners
    dispatch_by_room = {d.room: json.loads(d.metadata) for d in livekit.requests_for("CreateDispatch")}
    for dial in dials:
        meta = dispatch_by_room[dial.room_name]
        assert dial.sip_trunk_id == "ST_outbound" and dial.wait_until_answered
        assert meta["campaign_id"] == created["id"] and meta["purpose"] == "reminders"
        assert meta["phone_number"] == dial.sip_call_to
        assert meta["variables"]["name"].startswith("Contact ")
    assert livekit.rejected == []


async def test_contacts_outside_calling_hours_wait_for_their_window(
    client_for: MakeClient, make_settings: MakeSettings, livekit: LoopbackLiveKit, store: SQLStore
) -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    tomorrow = (datetime.now(tokyo) + timedelta(days=1)).weekday()
    async with client_for() as c:
        r = await c.post(CAMPAIGNS, json={
            "name": "Tomorrow only", "purpose": "reminders", "timezone": "Asia/Tokyo",
            "calling_hours": {"start": "10:00", "end": "12:00", "days": [tomorrow]},
            "contacts": [{"phone": "+81312345678", "variables": {"name": "Aki"}},
                         {"phone": "+15550100001", "variables": {"name": "Bo"}, "timezone": "UTC"}]})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
    runner = CampaignRunner(make_settings(), store, owner="p")
    await runner.run_once()
    await runner.idle()
    contacts, _ = await store.campaign_contacts(cid)
    assert livekit.requests_for("CreateSIPParticipant") == []
    aki, bo = contacts
    assert aki.status.value == "pending" and aki.attempts == 0
    opens = aki.next_attempt_at
    assert opens is not None
    local = opens.astimezone(tokyo)
    assert (local.weekday(), local.hour, local.minute) == (tomorrow, 10, 0)
    assert bo.next_attempt_at is not None and bo.next_attempt_at.astimezone(UTC).hour == 10
    assert (await store.get_campaign(cid)).status.value == "running"


async def test_pause_stops_new_dials_and_resume_finishes(
    client_for: MakeClient, make_settings: MakeSettings, livekit: LoopbackLiveKit, store: SQLStore
) -> None:
    async with client_for() as c:
        r = await c.post(CAMPAIGNS, json={"name": "P", "purpose": "reminders", "calling_hours": ALL_DAY, "contacts": [
            {"phone": f"+1555020{i:04d}", "variables": {"name": "X"}} for i in range(4)]})
        cid = r.json()["id"]
        assert (await c.post(f"{CAMPAIGNS}/{cid}/pause")).json()["status"] == "paused"
        assert (await c.post(f"{CAMPAIGNS}/{cid}/pause")).status_code == 409
        runner = CampaignRunner(make_settings(), store, owner="p")
        assert await runner.run_once() == 0
        assert livekit.requests == []
        assert (await c.post(f"{CAMPAIGNS}/{cid}/resume")).json()["status"] == "running"
        await run_until_done([runner], store, cid)
        view = (await c.get(f"{CAMPAIGNS}/{cid}")).json()
        assert view["status"] == "completed" and view["progress"]["by_status"]["answered"] == 4
        listed = (await c.get(CAMPAIGNS)).json()
        assert listed["total"] == 1 and listed["items"][0]["progress"]["done"] == 4
        audit = (await c.get("/api/v1/audit", params={"type": "campaign.updated"})).json()["items"]
        assert [e["data"]["change"] for e in reversed(audit)] == ["paused", "resumed", "completed"]


async def test_a_csv_campaign_takes_variables_from_columns(client_for: MakeClient, store: SQLStore) -> None:
    csv_text = "phone,name,day,timezone\n+15550300001,Ann,Tuesday,Europe/Berlin\n+15550300002,Bo,,\n"
    async with client_for() as c:
        r = await c.post(CAMPAIGNS, json={"name": "CSV", "agent_id": "reminder-agent", "contacts_csv": csv_text})
        assert r.status_code == 201, r.text
        rows = (await c.get(f"{CAMPAIGNS}/{r.json()['id']}/contacts")).json()["items"]
    assert [(x["phone"], x["variables"], x["timezone"]) for x in rows] == [
        ("+15550300001", {"name": "Ann", "day": "Tuesday"}, "Europe/Berlin"),
        ("+15550300002", {"name": "Bo"}, "UTC")]


async def test_a_csv_with_bad_rows_is_refused_whole_with_every_row_named(client_for: MakeClient, store: SQLStore) -> None:
    csv_text = ("phone,name,timezone\n+15550300001,Ann,\n5550300002,Bo,\n+15550300003,,\n"
                "+15550300004,Di,Mars/Base\n+15550300005,Ed\n+15550300001,Ann,\n")
    async with client_for(call_deny_list=["+15550300006"]) as c:
        r = await c.post(CAMPAIGNS, json={"name": "CSV", "purpose": "reminders", "contacts_csv": csv_text})
        assert r.status_code == 422, r.text
        keys = [e["key"] for e in r.json()["extra"]]
        assert keys == ["contacts_csv.line 3", "contacts_csv.line 5", "contacts_csv.line 6"], r.json()
        assert "3 bad row(s)" in r.json()["detail"]
        # rows that parse but break a rule: missing variable, duplicate number, deny list
        r = await c.post(CAMPAIGNS, json={"name": "CSV", "purpose": "reminders", "contacts_csv":
                                          "phone,name\n+15550300001,Ann\n+15550300002,\n+15550300001,A\n"
                                          "+15550300006,Cy\n"})
        assert r.status_code == 422, r.text
        keys = [e["key"] for e in r.json()["extra"]]
        assert keys == ["contacts_csv.line 3.variables.name", "contacts_csv.line 4", "contacts_csv.line 5"]
        assert (await c.get(CAMPAIGNS)).json()["total"] == 0


async def test_campaign_input_limits(client_for: MakeClient, store: SQLStore) -> None:
    base: dict[str, Any] = {"name": "C", "purpose": "reminders"}
    many = [{"phone": f"+1555040{i:04d}", "variables": {"name": "X"}} for i in range(6)]
    async with client_for(campaign_max_contacts=5) as c:
        r = await c.post(CAMPAIGNS, json={**base, "contacts": many})
        assert r.status_code == 422 and r.json()["extra"][0]["key"] == "contacts"
        r = await c.post(CAMPAIGNS, json={**base, "contacts": many[:2], "contacts_csv": "phone\n+15550400001\n"})
        assert r.status_code == 422
        r = await c.post(CAMPAIGNS, json={**base, "contacts": many[:1], "timezone": "Nowhere/City"})
        assert r.status_code == 422 and "timezone" in r.text
        r = await c.post(CAMPAIGNS, json={**base, "contacts": many[:1], "calling_hours": {"start": "18:00",
                                                                                          "end": "09:00"}})
        assert r.status_code == 422 and "calling_hours" in r.text
        r = await c.post(CAMPAIGNS, json={**base, "contacts": many[:1], "concurrency": 0})
        assert r.status_code == 422
        assert (await c.get(f"{CAMPAIGNS}/cmp_nope")).status_code == 404
    async with client_for(livekit_url=None) as c:
        r = await c.post(CAMPAIGNS, json={**base, "contacts": many[:1]})
        assert r.status_code == 503


def test_settings_reject_a_bad_deny_list() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Settings(_env_file=None, call_deny_list="+1555, 555")  # type: ignore[call-arg]
