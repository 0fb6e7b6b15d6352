"""The `transfer_call` tool in a real text-mode AgentSession (the model is the scripted
OpenAI fake behind the real plugin), transferring through the real `livekit-api`
client to the loopback LiveKit server, which decodes the TransferSIPParticipant request."""

from __future__ import annotations

import json

import pytest
from livekit import api
from livekit.agents import Agent, AgentSession
from livekit.protocol import sip
from pydantic import ValidationError

from app.agents.context import NullRecorder
from app.agents.phone_transfer import LiveKitCallControl, build_transfer_call_tool
from app.domain import SessionStatus
from app.domain.models import AgentConfigInput, TransferCallTool
from sim.fake_openai import FakeOpenAI
from sim.livekit_api import KEY, SECRET, Dial, LoopbackLiveKit

ROOM, CALLER = "call-room-1", "sip-call_1"


def caller_in_room(server: LoopbackLiveKit) -> None:
    server.participants[CALLER] = sip.SIPParticipantInfo(participant_identity=CALLER, room_name=ROOM)


async def test_transfer_call_hands_the_caller_over_and_records_why(fake: FakeOpenAI, recorder: NullRecorder) -> None:
    spec = TransferCallTool(to="+15557654321", handoff_message="Putting you through to a colleague now.")
    recorder.record_data({"order_id": "A-17"})
    fake.text("Of course.")
    fake.tool_call("transfer_call", {"reason": "caller asked for a person"})
    async with LoopbackLiveKit() as server, api.LiveKitAPI(server.url, KEY, SECRET) as lk:
        caller_in_room(server)
        tool = build_transfer_call_tool(spec, recorder, LiveKitCallControl(lk, ROOM, CALLER))
        async with AgentSession(llm=fake.llm()) as session:
            await session.start(Agent(instructions="You help.", tools=[tool]))
            first = await session.run(user_input="hello")
            first.expect.next_event().is_message(role="assistant")
            result = await session.run(user_input="I want to talk to a person")
        [req] = server.requests_for("TransferSIPParticipant")
    assert (req.transfer_to, req.room_name, req.participant_identity) == ("tel:+15557654321", ROOM, CALLER)
    result.expect.contains_function_call(name="transfer_call")
    said = [e.item.text_content for e in result.events if e.type == "message"]
    assert "Putting you through to a colleague now." in said  # the hand-off, before the transfer
    assert recorder.finished == (SessionStatus.completed, "transferred")
    [(kind, detail)] = recorder.events
    assert kind == "call_transferred"
    doc = json.loads(detail)
    assert doc["to"] == "tel:+15557654321" and doc["reason"] == "caller asked for a person"
    assert doc["status"] == "completed" and doc["transfer_id"].startswith("ST_")
    assert recorder.collected == {"order_id": "A-17"}  # kept for the record and session.ended


async def test_a_failed_transfer_is_a_tool_error_the_model_reads(fake: FakeOpenAI, recorder: NullRecorder) -> None:
    spec = TransferCallTool(to="sip:desk@pbx.example.com")
    fake.tool_call("transfer_call", {"reason": "billing question"})
    fake.text("Sorry, nobody is free; I can help you myself.")
    async with LoopbackLiveKit() as server, api.LiveKitAPI(server.url, KEY, SECRET) as lk:
        caller_in_room(server)
        server.transfers["sip:desk@pbx.example.com"] = Dial.busy()
        tool = build_transfer_call_tool(spec, recorder, LiveKitCallControl(lk, ROOM, CALLER))
        async with AgentSession(llm=fake.llm()) as session:
            await session.start(Agent(instructions="You help.", tools=[tool]))
            result = await session.run(user_input="transfer me")
    result.expect.next_event().is_function_call(name="transfer_call")
    out = result.expect.next_event().is_function_call_output(is_error=True).event().item
    assert "486" in out.output and "transfer failed" in out.output.lower()
    result.expect.next_event().is_message(role="assistant")
    assert recorder.finished is None
    [(kind, detail)] = recorder.events
    assert kind == "transfer_failed" and json.loads(detail)["reason"] == "billing question"


def test_transfer_targets_are_checked_when_the_config_is_written() -> None:
    base = {"agent_id": "desk-agent", "name": "Desk", "prompt_config": {"instructions": "Help."}}
    ok = AgentConfigInput.model_validate({**base, "tools": [{"type": "transfer_call", "to": "sip:desk@pbx.example.com"}]})
    assert ok.tools[0].transfer_to() == "sip:desk@pbx.example.com"  # type: ignore[union-attr]
    for bad in ("5551234567", "+0123456789", "http://x", ""):
        with pytest.raises(ValidationError) as e:
            AgentConfigInput.model_validate({**base, "tools": [{"type": "transfer_call", "to": bad}]})
        assert "tools.0.transfer_call.to" in str(e.value).replace("\n", ".").replace(" ", "") or "to" in str(e.value)


def test_session_ended_carries_the_last_transfer() -> None:
    from app.domain import SessionEvent, SessionRecord
    from app.webhooks.render import last_transfer

    detail = json.dumps({"to": "tel:+15557654321", "reason": "asked for a person", "status": "completed",
                         "transfer_id": "ST_1"})
    record = SessionRecord(session_id="s1", room="r", agent_id="a", events=[
        SessionEvent(kind="reply_capped"), SessionEvent(kind="call_transferred", detail=detail)])
    got = last_transfer(record)
    assert got is not None and (got.to, got.reason, got.status, got.transfer_id) == (
        "tel:+15557654321", "asked for a person", "completed", "ST_1")
    broken = record.model_copy(update={"events": [SessionEvent(kind="transfer_failed", detail="not json")]})
    assert last_transfer(broken) is None
    assert last_transfer(record.model_copy(update={"events": []})) is None
