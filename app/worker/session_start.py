"""The start of a session, shared by the LiveKit entrypoint, `chat` and the sim.

`prepare_session` goes from untrusted metadata to a built agent and a started session
record: the resolver (`app.store.resolver`: route → config, from the in-memory
snapshot; last known-good or the built-in fallback agent when the store is down) →
`AgentFactory`. It never raises for bad input; whatever goes wrong, the caller gets
an agent that can talk.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace

from app.agents.analysis import analysis_request
from app.agents.base import BaseAgent
from app.agents.context import SessionContext
from app.agents.factory import AgentFactory, MissingVariables
from app.domain import AgentConfig, NotFound, SessionRecord, StoreUnavailable
from app.domain.phone import CALLER_NUMBER, CallInfo, SipCall
from app.domain.routing import MetadataSource, RouteDecision
from app.observability import tracing
from app.store.resolver import resolve_current
from app.worker.services import WorkerServices
from app.worker.sessions import SessionManager

if TYPE_CHECKING:
    import httpx
    import httpx2
    import openai

log = logging.getLogger(__name__)


@dataclass
class PreparedSession:
    decision: RouteDecision
    config: AgentConfig
    agent: BaseAgent
    manager: SessionManager
    factory: AgentFactory
    context: SessionContext
    span: trace.Span | None = None

    @property
    def record(self) -> SessionRecord:
        return self.manager.record

    async def aclose(self) -> None:
        """Finish and flush the record, then close the models the factory built
        (LiveKit does not close an Agent's own LLM/STT/TTS, and handoffs add more)."""
        from app.agents.tools import aclose_default_http_client

        try:
            await self.manager.aclose()
        finally:
            await self.context.aclose()
            await aclose_default_http_client()
            if self.span is not None:
                self.span.end()


def call_info(sip: SipCall | None, decision: RouteDecision) -> CallInfo | None:
    """What the record keeps of a phone call. LiveKit's `sip.phoneNumber` is the far end:
    the caller on an inbound call, the callee on an outbound one (whose metadata says
    `call.direction: outbound`), and `sip.trunkPhoneNumber` is our number."""
    if sip is None:
        return None
    if decision.direction == "outbound":
        return CallInfo(direction="outbound", called_number=sip.caller_number,
                        caller_number=sip.called_number, call_id=sip.call_id)
    return CallInfo(direction="inbound", called_number=sip.called_number,
                    caller_number=sip.caller_number, call_id=sip.call_id)


def call_variables(variables: Mapping[str, str], call: CallInfo | None) -> dict[str, str]:
    """The session's prompt variables, plus `caller_number` on an inbound call (used by an
    agent that declares it). The SIP attribute wins over a metadata value of that name:
    LiveKit's SIP service set it, while metadata is whatever the dispatcher wrote."""
    out = dict(variables)
    if call is not None and call.direction == "inbound" and call.caller_number:
        out[CALLER_NUMBER] = call.caller_number
    return out


async def prepare_session(
    services: WorkerServices,
    sources: Sequence[MetadataSource],
    *,
    room: str,
    session_id: str | None = None,
    user_id: str | None = None,
    audio: bool = True,
    llm_client: openai.AsyncClient | None = None,
    http_client: httpx.AsyncClient | None = None,
    stt_client: openai.AsyncClient | None = None,
    tts_client: openai.AsyncClient | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    sip: SipCall | None = None,
) -> PreparedSession:
    """`llm_client` / `stt_client` / `tts_client` / `transport`: see `AgentFactory`
    (tests and the sim replace the model servers; production passes none). `sip`: the
    call's facts when the participant is a phone caller (LiveKit SIP)."""
    session_id = session_id or uuid.uuid4().hex
    configs = services.config_source
    called = sip.called_number if sip is not None else None
    resolution = await resolve_current(configs, sources, room=room, called_number=called, user_id=user_id)
    decision, config, arm = resolution.decision, resolution.config, resolution.arm
    if resolution.degraded:
        log.warning("room %s: %s", room, resolution.degraded)
    route_reason: str = decision.reason
    if decision.version is not None and decision.agent_id == config.agent_id and decision.version != config.version:
        pinned = await _pinned_version(services, config.agent_id, decision.version, room)
        config, arm = (pinned, None) if pinned is not None else (config, arm)
        route_reason += ":pinned_version" if pinned is not None else ":unknown_version"
    record = SessionRecord(
        session_id=session_id, room=room, agent_id=config.agent_id, config_version=config.version,
        user_id=decision.user_id or user_id, route_reason=route_reason, degraded=resolution.degraded, arm=arm,
        call=call_info(sip, decision),
    )
    manager = SessionManager(
        services.store, record, call=services.call, spill=services.pending.adopt,
        analysis=analysis_request(services.settings, config), prices=services.prices,
        on_closed=services.session_closed,
        trace_slow_write=services.settings.trace_slow_store_write_ms / 1000,
    )
    factory = AgentFactory(
        services.settings, configs,
        vad=services.vad if audio else None, llm_client=llm_client, http_client=http_client,
        stt_client=stt_client, tts_client=tts_client, transport=transport,
    )
    ctx = SessionContext(
        session_id=session_id, room=room, recorder=manager, user_id=record.user_id,
        variables=call_variables(decision.variables, record.call), audio=audio,
    )
    try:
        agent = factory.create_agent(config, ctx)
    except MissingVariables as e:
        fallback = resolution.replacement()
        log.warning(
            "room %s: agent %s needs variable(s) %s; falling back to %s",
            room, config.agent_id, ", ".join(e.names), fallback.agent_id,
        )
        config = fallback
        record.agent_id, record.config_version, record.arm = config.agent_id, config.version, None
        record.route_reason = f"{decision.reason}:missing_variables"
        manager.set_agent(config.agent_id, config.version)
        manager.analysis = analysis_request(services.settings, config)
        agent = factory.create_agent(config, ctx)
    # The call's span, current from here on: the session writer started next, the
    # AgentSession's spans and every task of the call belong to it.
    span = tracing.call_started(session_id, config.agent_id, config.version)
    span.set_attributes({"route_reason": record.route_reason or "", "degraded": bool(record.degraded),
                         "arm": record.arm or "none"})
    await manager.start()
    return PreparedSession(
        decision=decision, config=config, agent=agent, manager=manager, factory=factory, context=ctx, span=span
    )


async def _pinned_version(services: WorkerServices, agent_id: str, version: int, room: str) -> AgentConfig | None:
    """A version asked for by name (a draft tried from the console or `chat --version`):
    one store read, off the routing hot path; None (the routed version runs) if it is
    not there or the store cannot say."""
    if services.store is None:
        return None
    try:
        return await services.call(services.store.get_agent_config(agent_id, version))
    except (NotFound, StoreUnavailable) as e:
        log.warning("room %s: %s version %s cannot be loaded (%s); running the routed version",
                    room, agent_id, version, e.message)
        return None
