"""POST /api/v1/calls end to end against the loopback LiveKit server: every request the
real client sends is decoded and checked; outcomes (answered, busy, no answer, failed)
are stored with LiveKit's SIP status; nothing is left in LiveKit after a failure; bad
input is a 4xx naming the field; the rate limit answers 429 with Retry-After."""

from __future__ import annotations

import json

from sim.livekit_api import Dial, LoopbackLiveKit, TwirpError
from tests.telephony.conftest import MakeClient

CALLS = "/api/v1/calls"


async def test_an_answered_call_creates_the_room_dispatches_the_agent_and_dials(
    client_for: MakeClient, livekit: LoopbackLiveKit
) -> None:
    async with client_for() as c:
        r = await c.post(CALLS, headers={"X-Change-Note": "appointment reminder"}, json={
            "to": "+15551230001", "purpose": "reminders", "variables": {"name": "Ann"}})
        assert r.status_code == 201, r.text
        call = r.json()
        assert call["status"] == "answered" and call["trunk"] == "ST_outbound"
        assert call["sip_call_id"].startswith("SCL_") and call["ended_at"] is not None

        assert livekit.methods() == ["CreateRoom", "CreateDispatch", "CreateSIPParticipant"]
        [room] = livekit.requests_for("CreateRoom")
        [dispatch] = livekit.requests_for("CreateDispatch")
        [dial] = livekit.requests_for("CreateSIPParticipant")
        meta = json.loads(dispatch.metadata)
        assert room.name == dispatch.room == dial.room_name == call["room"]
        assert json.loads(room.metadata) == meta
        assert meta["purpose"] == "reminders" and meta["variables"] == {"name": "Ann"}
        assert meta["user_id"] == "tel:+15551230001" and meta["call_id"] == call["id"]
        assert dispatch.agent_name == "voice-platform"
        assert (dial.sip_trunk_id, dial.sip_call_to) == ("ST_outbound", "+15551230001")
        assert dial.wait_until_answered and dial.ringing_timeout.seconds == 5
        assert dial.participant_identity == call["participant_identity"]
        # the JWTs carried exactly the grants each method needs
        grants = {r.method: r.claims for r in livekit.requests}
        assert grants["CreateDispatch"].video.room_admin and grants["CreateDispatch"].video.room == call["room"]
        assert grants["CreateSIPParticipant"].sip.call
        assert livekit.rejected == []

        got = (await c.get(f"{CALLS}/{call['id']}")).json()
        assert got == call
        audit = (await c.get("/api/v1/audit", params={"type": "call.placed"})).json()
        assert audit["items"][0]["note"] == "appointment reminder" and audit["items"][0]["actor"] == "admin"


async def test_busy_no_answer_and_failed_dials_are_stored_with_the_sip_status_and_cleaned_up(
    client_for: MakeClient, livekit: LoopbackLiveKit
) -> None:
    livekit.numbers.update({"+15550000486": Dial.busy(), "+15550000480": Dial.no_answer(),
                            "+15550000408": Dial.timeout(), "+15550000500": Dial.failed()})
    expected = {"+15550000486": ("busy", 486), "+15550000480": ("no_answer", 480),
                "+15550000408": ("no_answer", 408), "+15550000500": ("failed", 500)}
    async with client_for() as c:
        for number, (status, code) in expected.items():
            r = await c.post(CALLS, json={"to": number, "agent_id": "reminder-agent", "variables": {"name": "Bo"}})
            assert r.status_code == 201, r.text
            assert (r.json()["status"], r.json()["sip_status_code"]) == (status, code), number
        listed = (await c.get(CALLS)).json()
    assert listed["total"] == 4
    assert {x["to"]: x["status"] for x in listed["items"]} == {n: s for n, (s, _) in expected.items()}
    # every failed dial removed its dispatch and its room: no agent waits in an empty room
    assert livekit.rooms == {} and livekit.dispatches == {}
    assert len(livekit.requests_for("DeleteDispatch")) == 4 and len(livekit.requests_for("DeleteRoom")) == 4


async def test_an_unknown_trunk_is_a_502_and_leaves_nothing_behind(client_for: MakeClient, livekit: LoopbackLiveKit) -> None:
    async with client_for() as c:
        r = await c.post(CALLS, json={"to": "+15551230001", "purpose": "reminders", "variables": {"name": "A"},
                                      "trunk": "ST_missing"})
        assert r.status_code == 502, r.text
        assert "sip trunk does not exist" in r.json()["detail"]
        [call] = (await c.get(CALLS)).json()["items"]
    assert call["status"] == "failed" and "trunk" in call["error"]
    assert livekit.rooms == {} and livekit.dispatches == {}


async def test_a_dispatch_failure_removes_the_room(client_for: MakeClient, livekit: LoopbackLiveKit) -> None:
    livekit.fail_next["CreateDispatch"] = TwirpError("internal", "dispatch store down")
    async with client_for() as c:
        r = await c.post(CALLS, json={"to": "+15551230001", "purpose": "reminders", "variables": {"name": "A"}})
    assert r.status_code == 503, r.text  # a 5xx from LiveKit is "unavailable", retried by the caller
    assert livekit.rooms == {} and livekit.requests_for("CreateSIPParticipant") == []


async def test_bad_input_is_refused_before_livekit_is_asked(client_for: MakeClient, livekit: LoopbackLiveKit) -> None:
    async with client_for(call_deny_list=["+1900*", "+15550009999"]) as c:
        cases = [
            ({"to": "5551230001", "purpose": "reminders"}, "to"),
            ({"to": "+1555", "purpose": "reminders"}, "to"),
            ({"to": "+19005550100", "purpose": "reminders", "variables": {"name": "A"}}, "to"),
            ({"to": "+15550009999", "purpose": "reminders", "variables": {"name": "A"}}, "to"),
            ({"to": "+15551230001", "purpose": "nope", "variables": {"name": "A"}}, "purpose"),
            ({"to": "+15551230001", "agent_id": "ghost-agent"}, "agent_id"),
            ({"to": "+15551230001", "purpose": "reminders"}, "variables.name"),
            ({"to": "+15551230001", "purpose": "reminders", "variables": {"name": "A", "x": "1"}}, "variables.x"),
            ({"to": "+15551230001", "purpose": "reminders", "agent_id": "reminder-agent"}, None),
            ({"to": "+15551230001", "agent_id": "reminder-agent", "version": 9, "variables": {"name": "A"}}, "version"),
        ]
        for body, key in cases:
            r = await c.post(CALLS, json=body)
            assert r.status_code == 422, (body, r.text)
            if key is not None:
                keys = [e.get("key", "") for e in r.json()["extra"]]
                assert any(k == key or k.endswith(f".{key}") or k.endswith(key) for k in keys), (body, keys)
    assert livekit.requests == [] and livekit.rooms == {}


async def test_livekit_not_configured_is_a_503_with_the_reason(client_for: MakeClient) -> None:
    async with client_for(livekit_url=None) as c:
        r = await c.post(CALLS, json={"to": "+15551230001", "purpose": "reminders", "variables": {"name": "A"}})
        assert r.status_code == 503 and "LIVEKIT_URL" in r.json()["detail"]
        assert (await c.get(CALLS)).json()["total"] == 0
    async with client_for(outbound_trunk_id=None) as c:
        r = await c.post(CALLS, json={"to": "+15551230001", "purpose": "reminders", "variables": {"name": "A"}})
        assert r.status_code == 422 and r.json()["extra"][0]["key"] == "trunk"


async def test_a_specific_version_dials_with_it_in_the_metadata(client_for: MakeClient, livekit: LoopbackLiveKit) -> None:
    async with client_for() as c:
        r = await c.post(CALLS, json={"to": "+15551230001", "agent_id": "reminder-agent", "version": 1,
                                      "variables": {"name": "A"}})
        assert r.status_code == 201, r.text
    meta = json.loads(livekit.requests_for("CreateDispatch")[0].metadata)
    assert (meta["agent_id"], meta["version"]) == ("reminder-agent", 1)


async def test_placing_calls_is_rate_limited_per_key(client_for: MakeClient, livekit: LoopbackLiveKit) -> None:
    async with client_for(call_rate_per_minute=2) as c:
        body = {"to": "+15551230001", "purpose": "reminders", "variables": {"name": "A"}}
        assert (await c.post(CALLS, json=body)).status_code == 201
        assert (await c.post(CALLS, json=body)).status_code == 201
        r = await c.post(CALLS, json=body)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert (await c.get(CALLS)).status_code == 200  # reading is not limited
    assert len(livekit.requests_for("CreateSIPParticipant")) == 2



def test_a_specific_version_needs_the_publish_role() -> None:
    """Whether a version is pinned depends on the body, so the handler asks the guard's
    caller (`state.caller`) itself: below publish it may not; with no guard (no admin key
    configured) the caller is the admin."""
    from types import SimpleNamespace

    import pytest
    from litestar.exceptions import PermissionDeniedException

    from app.api.auth import Caller, require_role
    from app.domain.keys import Role

    def request(role: Role | None) -> object:
        caller = Caller("ci", role) if role is not None else None
        return SimpleNamespace(state=SimpleNamespace(caller=caller))

    for low in (Role.read, Role.edit):
        with pytest.raises(PermissionDeniedException, match="'publish' role"):
            require_role(request(low), Role.publish, "calling a specific agent version")  # type: ignore[arg-type]
    require_role(request(Role.publish), Role.publish, "x")  # type: ignore[arg-type]
    require_role(request(Role.admin), Role.publish, "x")  # type: ignore[arg-type]
    require_role(request(None), Role.publish, "x")  # type: ignore[arg-type]
