"""A phone call in the worker: the caller's keys through a real `rtc.Room`'s event, the
`send_dtmf` tool on a real AgentSession (key codes as LiveKit sends them), and LiveKit's
own AMD run on a session and its verdict stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.testing import fake_job_context

from app.domain import AgentConfigInput, PromptConfig
from app.domain.models import BuiltinTool
from app.domain.phone import VoicemailConfig
from app.seed import seed
from app.settings import Settings
from app.store.sql import SQLStore
from app.worker import dtmf
from app.worker.dtmf import DtmfInput
from app.worker.entrypoint import prepare_job
from app.worker.services import WorkerServices
from app.worker.voicemail import detect, start_voicemail_detection
from sim.fake_openai import FakeOpenAI


def key(digit: str) -> rtc.SipDTMF:
    return rtc.SipDTMF(code=0, digit=digit)


async def test_keys_become_one_input_at_hash_or_after_a_pause() -> None:
    room = rtc.Room()  # not connected: its event emitter is what LiveKit's SIP events arrive on
    got: list[str] = []

    async def submit(text: str) -> str:
        got.append(text)
        return text

    keypad = DtmfInput(submit, pause_s=0.1).attach(room)
    for d in "12*":
        room.emit("sip_dtmf_received", key(d))
    room.emit("sip_dtmf_received", key("#"))
    assert await (await keypad.submitted.get()) == "(keypad) 1 2 *"

    room.emit("sip_dtmf_received", key("#"))  # nothing pressed: nothing submitted
    for junk in ("x", "12", ""):
        room.emit("sip_dtmf_received", key(junk))
    room.emit("sip_dtmf_received", key("9"))
    await asyncio.sleep(0.05)
    room.emit("sip_dtmf_received", key("8"))  # restarts the pause
    await asyncio.sleep(0.07)
    assert got == ["(keypad) 1 2 *"]  # 0.12 s since the first key, 0.07 since the last
    assert await asyncio.wait_for(await keypad.submitted.get(), 1) == "(keypad) 9 8"

    for _ in range(dtmf.MAX_DIGITS):  # a stuck key: submitted at the cap, not held forever
        room.emit("sip_dtmf_received", key("5"))
    assert await (await keypad.submitted.get()) == "(keypad) " + " ".join("5" * dtmf.MAX_DIGITS)

    keypad.detach()
    room.emit("sip_dtmf_received", key("1"))
    room.emit("sip_dtmf_received", key("#"))
    assert keypad.submitted.empty()


@pytest.fixture
async def services(tmp_path) -> AsyncIterator[WorkerServices]:  # type: ignore[no-untyped-def]
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/w.db")
    await store.start()
    await seed(store)
    await store.create_agent_config(AgentConfigInput(
        agent_id="phone-agent", name="Phone", prompt_config=PromptConfig(instructions="Phone calls.", greeting="Hello."),
        tools=[BuiltinTool(name="send_dtmf")], voicemail=VoicemailConfig(action="hang_up"),
    ))
    svc = WorkerServices(Settings(cache_poll_interval=0.05), store)
    await svc.start()
    yield svc
    await svc.aclose()
    await store.aclose()


def sip_participant(**attributes: str) -> SimpleNamespace:
    return SimpleNamespace(identity="callee", metadata="", kind=rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
                           attributes=attributes)


async def test_send_dtmf_presses_keys_with_livekit_codes(services: WorkerServices) -> None:
    fake = FakeOpenAI().tool_call("send_dtmf", {"keys": "*#A1"}).text("Done.")
    sent: list[tuple[int, str]] = []

    async def publish(code: int, digit: str) -> None:
        sent.append((code, digit))

    with fake_job_context(job_metadata=json.dumps({"agent_id": "phone-agent"})) as ctx:
        prepared = await prepare_job(ctx, services, sip_participant(), audio=False, llm_client=fake.client())  # type: ignore[arg-type]
        prepared.context.dtmf_sender = publish
        async with AgentSession() as session:
            await session.start(prepared.agent)
            result = await session.run(user_input="Press star, hash, A and 1.")
        await prepared.aclose()
    result.expect.next_event().is_function_call(name="send_dtmf")
    result.expect.next_event().is_function_call_output(output="Pressed *#A1.", is_error=False)
    assert sent == [(10, "*"), (11, "#"), (12, "A"), (1, "1")]


async def test_amd_runs_only_on_outbound_calls_and_its_verdict_is_stored(services: WorkerServices) -> None:
    fake = FakeOpenAI()
    inbound = json.dumps({"agent_id": "phone-agent"})
    outbound = json.dumps({"agent_id": "phone-agent", "call": {"direction": "outbound"}})
    with fake_job_context(job_metadata=inbound) as ctx:
        prepared = await prepare_job(ctx, services, sip_participant(), audio=False, llm_client=fake.client())  # type: ignore[arg-type]
        async with AgentSession() as session:
            assert start_voicemail_detection(session, prepared, sip_participant()) is None  # type: ignore[arg-type]
        await prepared.aclose()

    with fake_job_context(job_metadata=outbound) as ctx:
        prepared = await prepare_job(
            ctx, services, sip_participant(**{"sip.phoneNumber": "+15557654321"}), audio=False,  # type: ignore[arg-type]
            llm_client=fake.client(),
        )
        assert prepared.record.call is not None and prepared.record.call.direction == "outbound"
        async with AgentSession() as session:
            await session.start(prepared.agent)
            # LiveKit's AMD on a session without audio: no speech within its no-speech
            # threshold is an `uncertain` verdict, which keeps the call going
            outcome = await asyncio.wait_for(
                detect(session, prepared, "callee", options={"no_speech_threshold": 0.2, "timeout": 2.0}), 10
            )
        await prepared.aclose()
    assert outcome is not None and (outcome.answered_by, outcome.category, outcome.action) == (
        "uncertain", "uncertain", "none")
    rec = await services.store.get_session(prepared.record.session_id)
    assert rec.call is not None and rec.call.voicemail == outcome
    assert rec.call.called_number == "+15557654321"
