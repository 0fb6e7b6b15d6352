"""Phone calls in the domain: E.164 numbers, what a SIP participant tells us about its
call, and what the session record keeps of it.

LiveKit's SIP service puts the call's facts in the SIP participant's attributes
(`sip.trunkPhoneNumber`: the number that was dialled on an inbound call, `sip.phoneNumber`:
the caller's number, `sip.callID`). They are untrusted strings like any metadata, so
`SipCall.from_attributes` normalises and caps them and never raises. No LiveKit import:
the worker hands the attributes over as a plain mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

E164_DIGITS = r"\+[1-9][0-9]{6,14}"
"""ITU-T E.164: a plus, a country code not starting with 0, 7 to 15 digits in all (shorter
ones are service codes, not numbers a call reaches)."""
E164_RE = rf"^{E164_DIGITS}$"
_E164 = re.compile(E164_RE)



def _e164(value: str) -> str:
    if not _E164.fullmatch(value):
        raise ValueError("not an E.164 number: a + and 7 to 15 digits, no spaces (e.g. +15551234567)")
    return value


E164 = Annotated[str, StringConstraints(max_length=16), AfterValidator(_e164)]

MAX_ROUTE_NUMBERS = 100
"""Numbers one route may answer (a hunt group, not a number bank)."""

ATTR_CALLED = "sip.trunkPhoneNumber"
ATTR_CALLER = "sip.phoneNumber"
ATTR_CALL_ID = "sip.callID"
ATTR_TRUNK_ID = "sip.trunkID"

CALLER_NUMBER = "caller_number"
"""The prompt variable an inbound call fills with the caller's number (if the agent declares it)."""

CallDirection = Literal["inbound", "outbound"]
_VISUAL = re.compile(r"[\s().-]")
_MAX_ATTR_CHARS = 128


def normalise_number(raw: object) -> str | None:
    """An E.164 number from an attribute or query value, or None.

    Trunks differ in how they present numbers: `+15551234567`, `15551234567`, or with
    spaces/dashes. Visual separators are dropped and a bare digit string gets its `+`;
    anything else (a SIP URI user part like `alice`, a number too long) is not a number.
    """
    if not isinstance(raw, str) or not raw or len(raw) > _MAX_ATTR_CHARS:
        return None
    text = _VISUAL.sub("", raw.strip())
    if text.isdigit():
        text = "+" + text
    return text if _E164.fullmatch(text) else None


def _short(raw: object) -> str | None:
    if isinstance(raw, str) and 0 < len(raw) <= _MAX_ATTR_CHARS:
        return raw
    return None


class SipCall(BaseModel):
    """The facts of one SIP call as LiveKit's SIP participant presents them."""

    called_number: str | None = None
    """The number that was dialled: our trunk's number (`sip.trunkPhoneNumber`)."""
    caller_number: str | None = None
    """The caller's number on an inbound call (`sip.phoneNumber`). Personal data."""
    call_id: str | None = None
    trunk_id: str | None = None

    @classmethod
    def from_attributes(cls, attributes: Mapping[str, str]) -> SipCall:
        """Never raises; a value that is not a usable number is left out."""
        get = attributes.get if isinstance(attributes, Mapping) else (lambda _k: None)
        return cls(
            called_number=normalise_number(get(ATTR_CALLED)),
            caller_number=normalise_number(get(ATTR_CALLER)),
            call_id=_short(get(ATTR_CALL_ID)),
            trunk_id=_short(get(ATTR_TRUNK_ID)),
        )


AnsweredBy = Literal["human", "machine", "uncertain"]
VoicemailAction = Literal["leave_message", "hang_up"]


class VoicemailOutcome(BaseModel):
    """What answering-machine detection decided on an outbound call, and what we did."""

    answered_by: AnsweredBy
    category: str = Field(max_length=40, description="LiveKit's AMD category, e.g. `machine-vm`.")
    action: VoicemailAction | Literal["none"] = "none"
    """`none`: a human (or an uncertain verdict) answered and the conversation went on."""
    message: str | None = Field(None, max_length=2000, description="The message left, when one was.")


class CallInfo(BaseModel):
    """The phone side of a session (None on the record for web/app sessions)."""

    direction: CallDirection
    called_number: str | None = None
    caller_number: str | None = Field(
        None, description="Inbound: the caller's number (personal data: never logged or traced)."
    )
    call_id: str | None = None
    voicemail: VoicemailOutcome | None = None


class VoicemailConfig(BaseModel):
    """Answering-machine handling for outbound calls (LiveKit's AMD decides)."""

    model_config = ConfigDict(extra="forbid")

    action: VoicemailAction = "hang_up"
    message: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = Field(
        None, description="`leave_message`: what to say, a template using the prompt's declared {variables}."
    )


__all__ = [
    "ATTR_CALLED",
    "ATTR_CALLER",
    "ATTR_CALL_ID",
    "CALLER_NUMBER",
    "E164",
    "E164_DIGITS",
    "E164_RE",
    "MAX_ROUTE_NUMBERS",
    "CallDirection",
    "CallInfo",
    "SipCall",
    "VoicemailConfig",
    "VoicemailOutcome",
    "normalise_number",
]
