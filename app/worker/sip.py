"""The LiveKit side of a phone call: is this participant a SIP caller, and what does it
say about its call? LiveKit's SIP service joins a phone call to the room as a
participant of kind SIP, with the call's facts in its attributes."""

from __future__ import annotations

from typing import Any

from livekit import rtc
from livekit.agents import AgentSession

from app.agents.context import DtmfSender, SessionContext
from app.domain.phone import SipCall
from app.worker.dtmf import DtmfInput


def is_sip(participant: rtc.RemoteParticipant | None) -> bool:
    return participant is not None and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP


def sip_call(participant: rtc.RemoteParticipant | None) -> SipCall | None:
    """The call's facts from a SIP participant's attributes; None for any other kind."""
    if participant is None or not is_sip(participant):
        return None
    return SipCall.from_attributes(dict(participant.attributes))


def dtmf_sender(room: rtc.Room) -> DtmfSender:
    """The session's `dtmf_sender`: one key through the room's local participant."""

    async def send(code: int, digit: str) -> None:
        await room.local_participant.publish_dtmf(code=code, digit=digit)

    return send


def attach_keypad(room: rtc.Room, session: AgentSession[Any], context: SessionContext, *, pause_s: float) -> DtmfInput:
    """A phone call's keypad, both ways: the caller's keys reach the agent as input, and
    the `send_dtmf` tool can press keys. Call after `session.start`."""
    context.dtmf_sender = dtmf_sender(room)
    return DtmfInput(lambda text: session.generate_reply(user_input=text), pause_s=pause_s).attach(room)
