"""The `transfer_call` tool: hand a phone caller to a person through LiveKit SIP.

LiveKit does the transfer (`SIP.TransferSIPParticipant`, a SIP REFER to the target);
the tool finds the caller (the room's SIP participant), optionally has the agent say a
hand-off first, transfers, and records the outcome on the session: an event whose
detail is JSON `{to, reason, status, transfer_id|error}` (`session.ended` carries it as
`transfer`), the reason and the data collected so far. A transfer that worked ends the
session (`completed`, end reason `transferred`): the caller has left the room. One that
failed is a `ToolError` the model reads, so it can tell the caller and carry on.

`CallControl` is the seam: in a LiveKit job it is the job's own API client and room
(`JobCallControl`); tests pass a `LiveKitCallControl` on any `LiveKitAPI`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from livekit import api, rtc
from livekit.agents import get_job_context, llm
from livekit.agents.llm import RawFunctionTool, ToolError, function_tool
from livekit.agents.voice import RunContext

from app.agents.context import SessionRecorder
from app.domain import SessionStatus
from app.domain.models import TransferCallTool

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 200


@dataclass(frozen=True, slots=True)
class TransferResult:
    transfer_id: str
    ok: bool
    detail: str


class CallControl(Protocol):
    async def transfer(self, transfer_to: str, *, play_dialtone: bool) -> TransferResult:
        """Transfer the call's SIP participant; `ToolError` when there is no phone caller."""


class LiveKitCallControl:
    """TransferSIPParticipant for `participant_identity` in `room` through `lk`."""

    def __init__(self, lk: api.LiveKitAPI, room: str, participant_identity: str) -> None:
        self.lk, self.room, self.identity = lk, room, participant_identity

    async def transfer(self, transfer_to: str, *, play_dialtone: bool) -> TransferResult:
        try:
            res = await self.lk.sip.transfer_sip_participant(api.TransferSIPParticipantRequest(
                participant_identity=self.identity, room_name=self.room, transfer_to=transfer_to,
                play_dialtone=play_dialtone))
        except api.SipCallError as e:
            return TransferResult("", False, str(e))
        except api.ServerError as e:
            return TransferResult("", False, f"{e.message} ({e.code})")
        ok = res.status == api.SIPTransferStatus.STS_TRANSFER_SUCCESSFUL
        reason = api.SIPTransferReason.Name(res.reason)
        return TransferResult(res.transfer_id, ok, "completed" if ok else f"not completed ({reason})")


class JobCallControl:
    """The running job's room and API client; the caller is its SIP participant."""

    async def transfer(self, transfer_to: str, *, play_dialtone: bool) -> TransferResult:
        try:
            ctx = get_job_context()
        except RuntimeError:
            raise ToolError("This conversation is not a phone call; it cannot be transferred.") from None
        caller = next((p for p in ctx.room.remote_participants.values()
                       if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP), None)
        if caller is None:
            raise ToolError("No phone caller is in this conversation; it cannot be transferred.")
        return await LiveKitCallControl(ctx.api, ctx.room.name, caller.identity).transfer(
            transfer_to, play_dialtone=play_dialtone)


def _detail(spec: TransferCallTool, reason: str | None, result: TransferResult) -> str:
    doc: dict[str, Any] = {"to": spec.transfer_to(), "reason": reason, "status": "completed" if result.ok else "failed"}
    doc["transfer_id" if result.ok else "error"] = result.transfer_id if result.ok else result.detail[:200]
    return json.dumps(doc, separators=(",", ":"))[:500]


def build_transfer_call_tool(
    spec: TransferCallTool, recorder: SessionRecorder, control: CallControl | None = None
) -> RawFunctionTool[..., Any]:
    control = control or JobCallControl()
    busy = False

    async def transfer(raw_arguments: dict[str, object], context: RunContext[Any]) -> Any:
        nonlocal busy
        reason = raw_arguments.get("reason")
        if busy:
            return "A transfer is already under way; say nothing more."
        busy = True
        why = reason.strip()[:MAX_REASON_CHARS] if isinstance(reason, str) and reason.strip() else None
        try:
            if spec.handoff_message:
                await context.wait_for_playout()  # what the agent was saying first
                handle = context.session.say(spec.handoff_message)
                await asyncio.shield(handle.wait_for_playout())
            result = await control.transfer(spec.transfer_to(), play_dialtone=spec.play_dialtone)
        except BaseException:
            busy = False
            raise
        if not result.ok:
            busy = False
            recorder.record_event("transfer_failed", _detail(spec, why, result))
            raise ToolError(f"The transfer failed: {result.detail}. Tell the caller and offer to help further.")
        recorder.record_event("call_transferred", _detail(spec, why, result))
        recorder.finish(SessionStatus.completed, "transferred")
        session = context.session
        context.speech_handle.add_done_callback(lambda _: session.shutdown())
        return llm.ToolResult(f"transferred to {spec.transfer_to()}", reply_required=False)  # the caller left

    return function_tool(transfer, raw_schema={
        "name": spec.name, "description": spec.description,
        "parameters": {"type": "object", "properties": {
            "reason": {"type": "string", "description": "Why the caller is transferred, in a short sentence."}}},
    })
