"""Placing one outbound call through LiveKit's server API (`livekit-api`).

A call is three requests: create the room (with the routing metadata), dispatch our
agent into it (`AgentDispatchService.CreateDispatch`, the same metadata: the worker
routes on it), then dial (`SIP.CreateSIPParticipant` with `wait_until_answered`, so
the answer *is* the outcome). If any step fails, what the earlier ones created is
removed again (dispatch, then room), so a failed call never leaves an agent waiting in
an empty room. The call record is written before dialling (`dialing`) and finished with
the outcome and LiveKit's SIP status, so a crash mid-dial still leaves a trace.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from livekit import api

from app.domain.calls import CallOutcome, CallRecord, new_call_id, outcome_of_sip
from app.domain.events import SYSTEM, ChangeContext
from app.domain.values import utcnow
from app.settings import Settings
from app.store.base import ConfigStore

log = logging.getLogger(__name__)

ROOM_EMPTY_TIMEOUT_S = 120
"""A room nobody joins (the dial failed and its clean-up too) closes itself after this."""


class LiveKitUnavailable(Exception):
    """LiveKit could not be reached or refused the request itself (not a SIP outcome)."""

    def __init__(self, message: str, *, refused: bool) -> None:
        super().__init__(message)
        self.message = message
        self.refused = refused
        """True: LiveKit answered with an error (unknown trunk, bad credentials); False: unreachable."""


@dataclass(frozen=True, slots=True)
class CallPlan:
    """What to dial and whom to dispatch: everything but the LiveKit side's ids."""

    to: str
    trunk: str
    agent_id: str | None = None
    purpose: str | None = None
    version: int | None = None
    variables: dict[str, str] = field(default_factory=dict)
    campaign_id: str | None = None
    contact_seq: int | None = None

    def metadata(self, call_id: str) -> dict[str, Any]:
        """The routing metadata the worker reads (`app.domain.routing`): the target, the
        variables and the callee as the session's user; the rest is for the record."""
        meta: dict[str, Any] = {"variables": self.variables, "user_id": f"tel:{self.to}", "call_id": call_id,
                                "direction": "outbound", "phone_number": self.to}
        if self.agent_id:
            meta["agent_id"] = self.agent_id
            if self.version is not None:
                meta["version"] = self.version
        elif self.purpose:
            meta["purpose"] = self.purpose
        if self.campaign_id:
            meta["campaign_id"] = self.campaign_id
        return meta


def livekit_missing(settings: Settings) -> str | None:
    """Why calls cannot be placed from this process, or None."""
    missing = settings.missing_livekit()
    if missing:
        return f"LiveKit is not configured on this server ({', '.join(missing)} unset)"
    return None


def _transport_error(e: BaseException) -> bool:
    """A connection-level failure of livekit-api's HTTP client (aiohttp's errors, which
    this package does not import: livekit-api owns that dependency)."""
    return isinstance(e, OSError) or type(e).__module__.split(".")[0] == "aiohttp"


def _describe(err: api.ServerError) -> str:
    return f"{err.message or err.code} ({err.code})"


class Dialer:
    """Talks to LiveKit for one process; a client session per call keeps nothing open idle."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _client(self) -> api.LiveKitAPI:
        s = self.settings
        assert s.livekit_url and s.livekit_api_key and s.livekit_api_secret
        return api.LiveKitAPI(s.livekit_url, s.livekit_api_key.get_secret_value(),
                              s.livekit_api_secret.get_secret_value())

    async def place(self, store: ConfigStore, plan: CallPlan, *, ctx: ChangeContext = SYSTEM) -> CallRecord:
        """Store the call, dial it, store the outcome. `LiveKitUnavailable` when LiveKit
        could not take the call at all (the record is then `failed` with the reason)."""
        call_id = new_call_id()
        room = f"call-{plan.agent_id or plan.purpose or 'default'}-{secrets.token_hex(5)}"[:128]
        call = await store.create_call(CallRecord(
            id=call_id, to=plan.to, status=CallOutcome.dialing, agent_id=plan.agent_id, purpose=plan.purpose,
            version=plan.version, trunk=plan.trunk, room=room, variables=plan.variables,
            campaign_id=plan.campaign_id, contact_seq=plan.contact_seq,
            participant_identity=f"sip-{call_id}", created_at=utcnow()), ctx=ctx)  # the store stamps its own time
        try:
            fields = await self._dial(call, json.dumps(plan.metadata(call_id), separators=(",", ":")))
        except LiveKitUnavailable as e:
            await store.finish_call(call_id, CallOutcome.failed, error=e.message)
            raise
        outcome = fields.pop("outcome")
        return await store.finish_call(call_id, outcome, **fields)

    async def _dial(self, call: CallRecord, metadata: str) -> dict[str, Any]:
        ring = self.settings.call_ring_timeout
        created: list[str] = []
        dispatch_id: str | None = None
        async with self._client() as lk:
            try:
                await lk.room.create_room(api.CreateRoomRequest(
                    name=call.room, empty_timeout=ROOM_EMPTY_TIMEOUT_S, metadata=metadata))
                created.append("room")
                dispatch = await lk.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
                    agent_name=self.settings.agent_name, room=call.room, metadata=metadata))
                dispatch_id = dispatch.id
                info = await lk.sip.create_sip_participant(api.CreateSIPParticipantRequest(
                    sip_trunk_id=call.trunk, sip_call_to=call.to, room_name=call.room,
                    participant_identity=call.participant_identity or f"sip-{call.id}",
                    participant_name=call.to, participant_attributes={"call_id": call.id},
                    wait_until_answered=True, ringing_timeout={"seconds": int(ring)},
                ), timeout=ring + 5)
            except api.SipCallError as e:
                await self._clean_up(lk, call.room, dispatch_id, created)
                if e.sip_status_code is None:
                    return {"outcome": CallOutcome.failed, "error": _describe(e), "dispatch_id": dispatch_id}
                return {"outcome": outcome_of_sip(e.sip_status_code), "sip_status_code": e.sip_status_code,
                        "sip_status": e.sip_status, "dispatch_id": dispatch_id}
            except api.ServerError as e:
                await self._clean_up(lk, call.room, dispatch_id, created)
                if e.code == "deadline_exceeded" or e.status == 504:
                    return {"outcome": CallOutcome.no_answer, "error": _describe(e), "dispatch_id": dispatch_id}
                if e.status >= 500:
                    raise LiveKitUnavailable(f"LiveKit failed: {_describe(e)}", refused=False) from None
                raise LiveKitUnavailable(f"LiveKit refused the call: {_describe(e)}", refused=True) from None
            except TimeoutError:
                await self._clean_up(lk, call.room, dispatch_id, created)
                return {"outcome": CallOutcome.no_answer, "error": f"no answer within {ring:g} s",
                        "dispatch_id": dispatch_id}
            except Exception as e:
                if not _transport_error(e):
                    raise
                await self._clean_up(lk, call.room, dispatch_id, created)
                raise LiveKitUnavailable(f"LiveKit is unreachable ({type(e).__name__})", refused=False) from None
        return {"outcome": CallOutcome.answered, "dispatch_id": dispatch_id, "sip_call_id": info.sip_call_id,
                "participant_identity": info.participant_identity}

    @staticmethod
    async def _clean_up(lk: api.LiveKitAPI, room: str, dispatch_id: str | None, created: list[str]) -> None:
        """Best effort: a failure here is logged; the room's empty timeout ends it anyway."""
        try:
            if dispatch_id is not None:
                await lk.agent_dispatch.delete_dispatch(dispatch_id, room)
            if "room" in created:
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        except Exception as e:
            if not isinstance(e, api.ServerError | TimeoutError) and not _transport_error(e):
                raise
            log.warning("call room %s: clean-up after a failed dial failed (%s); its empty timeout will close it",
                        room, type(e).__name__)
