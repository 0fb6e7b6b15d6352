"""Phone numbers and SIP attributes in the domain: untrusted strings in, normalised E.164
or nothing out; the agent's voicemail settings validated at write time."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.domain import AgentConfigInput
from app.domain.phone import SipCall, normalise_number


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("+15551234567", "+15551234567"),
        ("15551234567", "+15551234567"),  # trunks that drop the plus
        (" +1 (555) 123-4567 ", "+15551234567"),
        ("+44.20.7123.0000", "+442071230000"),
        ("+0123456", None),  # no country code starts with 0
        ("+1234567890123456", None),  # 16 digits
        ("alice", None),  # a SIP URI user part
        ("+1555123456x", None),
        ("", None),
        ("+" + "1" * 500, None),
        (None, None),
        (15551234567, None),
    ],
)
def test_normalise_number(raw: Any, want: str | None) -> None:
    assert normalise_number(raw) == want


def test_sip_call_from_attributes() -> None:
    call = SipCall.from_attributes({
        "sip.trunkPhoneNumber": "+15550100200", "sip.phoneNumber": "15557654321",
        "sip.callID": "SCL_1", "sip.trunkID": "ST_1", "sip.h.x-other": "ignored",
    })
    assert call == SipCall(called_number="+15550100200", caller_number="+15557654321", call_id="SCL_1", trunk_id="ST_1")
    # hidden numbers (hide_phone_number), junk and a non-mapping: nothing, never an error
    assert SipCall.from_attributes({}) == SipCall()
    assert SipCall.from_attributes({"sip.phoneNumber": "anonymous", "sip.callID": "x" * 1000}) == SipCall()
    assert SipCall.from_attributes(None) == SipCall()  # type: ignore[arg-type]


def _agent(**extra: Any) -> dict[str, Any]:
    return {"agent_id": "caller", "name": "Caller", "prompt_config": {
        "instructions": "Call {name}.", "variables": {"name": {"default": "there"}}}, **extra}


def _keys(e: ValidationError) -> list[str]:
    return [".".join(str(p) for p in err["loc"]) for err in e.errors()]


def test_voicemail_settings() -> None:
    cfg = AgentConfigInput.model_validate(_agent(voicemail={"action": "leave_message", "message": "Hi {name}."}))
    assert cfg.voicemail is not None and cfg.voicemail.action == "leave_message"
    assert AgentConfigInput.model_validate(_agent(voicemail={})).voicemail.action == "hang_up"  # type: ignore[union-attr]
    for bad in ({"action": "leave_message"}, {"action": "leave_message", "message": "Hi {who}."},
                {"action": "hang_up", "message": "Hi {name!r}"}):
        with pytest.raises(ValidationError) as e:
            AgentConfigInput.model_validate(_agent(voicemail=bad))
        assert _keys(e.value) == ["voicemail.message"], bad
    with pytest.raises(ValidationError) as e:
        AgentConfigInput.model_validate(_agent(voicemail={"action": "beep"}))
    assert _keys(e.value) == ["voicemail.action"]
    with pytest.raises(ValidationError) as e:
        AgentConfigInput.model_validate(_agent(voicemail={"action": "hang_up", "when": "always"}))
    assert _keys(e.value) == ["voicemail.when"]


def test_send_dtmf_is_a_builtin_tool() -> None:
    cfg = AgentConfigInput.model_validate(_agent(tools=[{"type": "builtin", "name": "send_dtmf"}]))
    assert [t.name for t in cfg.tools] == ["send_dtmf"]
