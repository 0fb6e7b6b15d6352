"""The LiveKit side of a phone call: is this participant a SIP caller, and what does it
say about its call? LiveKit's SIP service joins a phone call to the room as a
participant of kind SIP, with the call's facts in its attributes."""

from __future__ import annotations

from livekit import rtc

from app.domain.phone import SipCall


def is_sip(participant: rtc.RemoteParticipant | None) -> bool:
    return participant is not None and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP


def sip_call(participant: rtc.RemoteParticipant | None) -> SipCall | None:
    """The call's facts from a SIP participant's attributes; None for any other kind."""
    if participant is None or not is_sip(participant):
        return None
    return SipCall.from_attributes(dict(participant.attributes))
