"""The LiveKit job entrypoint: route the room, build the configured agent, run the call."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from livekit.agents import AgentSession, CloseEvent, JobContext, JobProcess

from app.agents.providers import session_connect_options
from app.domain.routing import MetadataSource
from app.settings import Settings
from app.worker.budget import attach_budget_guard
from app.worker.drain import active_sessions
from app.worker.dtmf import DtmfInput
from app.worker.model_unavailable import ModelUnavailable
from app.worker.services import WorkerServices, ensure_services, installed_services
from app.worker.session_start import PreparedSession, prepare_session
from app.worker.silence import attach_silence_reprompt
from app.worker.sip import attach_keypad, is_sip, sip_call
from app.worker.tracing import start_tracing
from app.worker.voicemail import start_voicemail_detection

if TYPE_CHECKING:
    from livekit import rtc

log = logging.getLogger(__name__)


def prewarm(proc: JobProcess) -> None:
    """LiveKit's per-process setup hook. In THREAD mode the supervisor already loaded
    the VAD and store for the whole process; in PROCESS mode the job process opens its
    own on first use (`ensure_services`)."""
    services = installed_services()
    start_tracing(services.settings if services is not None else Settings())
    if services is not None:
        proc.userdata["vad"] = services.load_vad()
    else:
        from livekit.plugins import silero

        proc.userdata["vad"] = silero.VAD.load()


def job_sources(ctx: JobContext, participant: rtc.RemoteParticipant | None = None) -> list[MetadataSource]:
    """Where routing metadata comes from, first that parses wins: the dispatch metadata
    (what our token endpoint wrote), the room metadata snapshot, then the participant's."""
    sources = [
        MetadataSource("job", ctx.job.metadata),
        MetadataSource("room", ctx.job.room.metadata),
    ]
    if participant is not None:
        sources.append(MetadataSource("participant", participant.metadata))
    return sources


async def prepare_job(
    ctx: JobContext, services: WorkerServices, participant: rtc.RemoteParticipant | None = None, **kw: Any
) -> PreparedSession:
    """`prepare_session` for a LiveKit job context (real, or `fake_job_context` in tests).
    A SIP participant's attributes route by the dialled number and fill `caller_number`."""
    return await prepare_session(
        services, job_sources(ctx, participant),
        room=ctx.job.room.name or ctx.room.name or "room",
        user_id=participant.identity if participant is not None else None, sip=sip_call(participant), **kw,
    )


async def entrypoint(ctx: JobContext) -> None:
    """Route the room, build the configured agent and run the voice session."""
    services = await ensure_services()
    if services.vad is None:
        services.vad = ctx.proc.userdata.get("vad")
    await ctx.connect()
    participant = await ctx.wait_for_participant()
    prepared = await prepare_job(ctx, services, participant, audio=True)
    log.info(
        "room %s: session %s with %s v%s (%s)",
        ctx.room.name, prepared.record.session_id, prepared.config.agent_id,
        prepared.config.version, prepared.decision.reason,
    )
    session: AgentSession[None] = AgentSession(vad=services.vad, conn_options=session_connect_options())
    prepared.manager.attach(session)
    attach_silence_reprompt(session)
    attach_budget_guard(session, prepared.manager)
    # A model that fails for good: the caller hears an apology, the record says
    # failed / llm_unavailable (or stt_/tts_), the session closes (see on_close).
    ModelUnavailable.attach(session, prepared.manager, services.settings)
    ctx.add_shutdown_callback(prepared.aclose)
    # SIGTERM drain (app/worker/drain.py) reaches live sessions through this registry.
    ctx.add_shutdown_callback(active_sessions.register(session, prepared).release)

    def on_close(ev: CloseEvent) -> None:
        # end_session (or an error) closes the AgentSession; the job must end with it.
        ctx.shutdown(reason=ev.reason.value)

    session.on("close", on_close)
    await session.start(agent=prepared.agent, room=ctx.room)
    if is_sip(participant):
        keypad = attach_keypad(ctx.room, session, prepared.context, pause_s=services.settings.dtmf_pause_s)
        detection = start_voicemail_detection(session, prepared, participant)
        ctx.add_shutdown_callback(lambda: _detached(keypad, detection))


async def _detached(keypad: DtmfInput, detection: asyncio.Task[Any] | None) -> None:
    keypad.detach()
    if detection is not None and not detection.done():
        detection.cancel()
