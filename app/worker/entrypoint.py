"""The LiveKit job entrypoint and the session-start logic it shares with `chat` and the sim.

`prepare_session` is the whole decision from untrusted metadata to a built agent and
a started session record: route → config (from the in-memory cache; last known-good
or the built-in fallback agent when the store is down) → factory. It never raises
for bad input; whatever goes wrong, the caller gets an agent that can talk.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.agents.context import SessionContext
from app.agents.factory import AgentFactory, MissingVariables
from app.agents.fallback import FALLBACK_CONFIG
from app.agents.routing import MetadataSource, RouteDecision, RoutingTable, determine_agent_type
from app.domain import AgentConfig, SessionRecord, StoreUnavailable
from app.store.cache import ConfigSnapshot
from app.worker.drain import active_sessions
from app.worker.services import WorkerServices, ensure_services
from app.worker.sessions import SessionManager

log = logging.getLogger("app.worker")

_tables: dict[int, tuple[ConfigSnapshot, RoutingTable]] = {}


def routing_table(snapshot: ConfigSnapshot | None) -> RoutingTable:
    """The routing table of a snapshot, built once per snapshot (they are immutable)."""
    if snapshot is None:
        return RoutingTable()
    key = id(snapshot.configs)
    hit = _tables.get(key)
    if hit is not None and hit[0].configs is snapshot.configs:
        return hit[1]
    table = RoutingTable.build(snapshot.routes, snapshot.configs.values())
    _tables.clear()  # only the newest snapshot matters
    _tables[key] = (snapshot, table)
    return table


@dataclass
class PreparedSession:
    decision: RouteDecision
    config: AgentConfig
    agent: Any
    manager: SessionManager
    factory: AgentFactory
    context: SessionContext

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


def route_with(
    snapshot: ConfigSnapshot | None,
    sources: Sequence[MetadataSource],
    *,
    room: str,
    degraded: str | None = None,
) -> tuple[RouteDecision, AgentConfig]:
    """The synchronous half of a session start: untrusted metadata → routing decision →
    the config to run (an enabled agent of `snapshot`, or the fallback agent). Never
    raises; `prepare_session` calls it once it has the snapshot."""
    decision = determine_agent_type(sources, routing_table(snapshot), room=room)
    config = (snapshot.enabled(decision.agent_id) if snapshot and decision.agent_id else None) or FALLBACK_CONFIG
    if config is FALLBACK_CONFIG and degraded is None:
        log.warning("room %s: no routable agent (%s); using the fallback agent", room, decision.reason)
    return decision, config


async def prepare_session(
    services: WorkerServices,
    sources: Sequence[MetadataSource],
    *,
    room: str,
    session_id: str | None = None,
    user_id: str | None = None,
    audio: bool = True,
    llm_client: Any = None,
    http_client: Any = None,
    stt_client: Any = None,
    tts_client: Any = None,
) -> PreparedSession:
    session_id = session_id or uuid.uuid4().hex
    degraded: str | None = None
    snapshot: ConfigSnapshot | None = None

    if services.pte_mode:
        from app.agents.pte import PTE_AGENT_ID, load_pte_config

        config = load_pte_config()
        table = RoutingTable(default_agent_id=PTE_AGENT_ID, enabled=frozenset({PTE_AGENT_ID}),
                             known=frozenset({PTE_AGENT_ID}))
        decision = determine_agent_type(sources, table, room=room)
    else:
        try:
            snapshot = await services.snapshot()
            if snapshot.stale:
                degraded = "store unavailable: using last known-good config"
        except StoreUnavailable as e:
            degraded = f"store unavailable ({e.message}) and no config cached: fallback agent"
        except Exception:  # a bug or an unreadable stored config must not kill the call
            log.exception("room %s: loading configs failed; using the fallback agent", room)
            degraded = "config lookup failed: fallback agent"
        decision, config = route_with(snapshot, sources, room=room, degraded=degraded)

    if degraded:
        log.warning("room %s: %s", room, degraded)
    record = SessionRecord(
        session_id=session_id, room=room, agent_id=config.agent_id, config_version=config.version,
        user_id=decision.user_id or user_id, route_reason=decision.reason, degraded=degraded,
    )
    manager = SessionManager(services.store, record, call=services.call, spill=services.pending.adopt)
    factory = AgentFactory(
        services.settings, services.config_source,
        vad=services.vad if audio else None, llm_client=llm_client, http_client=http_client,
        stt_client=stt_client, tts_client=tts_client,
    )
    ctx = SessionContext(
        session_id=session_id, room=room, recorder=manager, user_id=record.user_id,
        variables=dict(decision.variables), audio=audio,
    )
    try:
        agent = factory.create_agent(config, ctx, extra_tools=_extra_tools(config, manager))
    except MissingVariables as e:
        fallback = _default_for(snapshot, exclude=config.agent_id)
        log.warning(
            "room %s: agent %s needs variable(s) %s; falling back to %s",
            room, config.agent_id, ", ".join(e.names), fallback.agent_id,
        )
        config = fallback
        record.agent_id, record.config_version = config.agent_id, config.version
        record.route_reason = f"{decision.reason}:missing_variables"
        manager.set_agent(config.agent_id, config.version)
        agent = factory.create_agent(config, ctx, extra_tools=_extra_tools(config, manager))
    await manager.start()
    return PreparedSession(
        decision=decision, config=config, agent=agent, manager=manager, factory=factory, context=ctx
    )


async def resolve_metadata(services: WorkerServices, metadata: str) -> Any:
    """The routing half of a session start (no agent built, nothing recorded): what the
    next session with this dispatch metadata would run. Backs `GET /api/v1/resolve`."""
    from app.api.resolve import Resolution

    if services.pte_mode:
        from app.agents.pte import load_pte_config

        cfg = load_pte_config()
        return Resolution(agent_id=cfg.agent_id, config_version=cfg.version, reason="pte_mode")
    snapshot: ConfigSnapshot | None = None
    try:
        snapshot = await services.snapshot()
    except StoreUnavailable:
        pass
    decision = determine_agent_type([MetadataSource("job", metadata)], routing_table(snapshot), room="resolve")
    cfg = (snapshot.enabled(decision.agent_id) if snapshot and decision.agent_id else None) or FALLBACK_CONFIG
    return Resolution(
        agent_id=cfg.agent_id, config_version=cfg.version, reason=decision.reason,
        source=decision.source, config_epoch=snapshot.epoch if snapshot else None,
        stale=bool(snapshot is None or snapshot.stale),
    )


def _extra_tools(config: AgentConfig, manager: SessionManager) -> list[Any]:
    from app.agents.pte import PTE_AGENT_ID, make_pte_tools

    return list(make_pte_tools(manager)) if config.agent_id == PTE_AGENT_ID else []


def _default_for(snapshot: ConfigSnapshot | None, *, exclude: str) -> AgentConfig:
    if snapshot is not None and snapshot.default_agent_id not in (None, exclude):
        cfg = snapshot.enabled(snapshot.default_agent_id)  # type: ignore[arg-type]
        if cfg is not None and not any(v.required and v.default is None for v in cfg.prompt_config.variables.values()):
            return cfg
    return FALLBACK_CONFIG


# ---------------------------------------------------------------------- LiveKit


def prewarm(proc: Any) -> None:
    """LiveKit's per-process setup hook. In THREAD mode the supervisor already loaded
    the VAD and store for the whole process; in PROCESS mode the job process opens its
    own on first use (`ensure_services`)."""
    from app.worker import services as svc

    if svc._services is not None:
        proc.userdata["vad"] = svc._services.load_vad()
    else:
        from livekit.plugins import silero

        proc.userdata["vad"] = silero.VAD.load()


def job_sources(ctx: Any, participant: Any = None) -> list[MetadataSource]:
    """DESIGN §4 order: dispatch metadata, room metadata snapshot, then the participant's."""
    sources = [
        MetadataSource("job", ctx.job.metadata),
        MetadataSource("room", ctx.job.room.metadata),
    ]
    if participant is not None:
        sources.append(MetadataSource("participant", participant.metadata))
    return sources


async def prepare_job(ctx: Any, services: WorkerServices, participant: Any = None, **kw: Any) -> PreparedSession:
    """`prepare_session` for a LiveKit job context (real, or `fake_job_context` in tests)."""
    return await prepare_session(
        services, job_sources(ctx, participant),
        room=ctx.job.room.name or getattr(ctx.room, "name", "") or "room",
        user_id=getattr(participant, "identity", None), **kw,
    )


REPROMPT_INSTRUCTIONS = (
    "The caller has been silent for a while. In one short sentence, ask whether they are "
    "still there and offer to carry on."
)
MAX_REPROMPTS = 2


def attach_silence_reprompt(
    session: Any, *, max_reprompts: int = MAX_REPROMPTS, instructions: str = REPROMPT_INSTRUCTIONS
) -> None:
    """Re-prompt a silent caller instead of waiting forever.

    LiveKit marks the user "away" once user and agent have both been silent for the
    session's `user_away_timeout` (15 s by default). Then the agent asks, through the
    LLM with `instructions`, whether they are still there — at most `max_reprompts`
    times in a row (the count restarts when the caller speaks). The user is set back
    to "listening" first, so LiveKit arms the away timer again after the re-prompt.
    """
    count = 0

    def on_user_state(ev: Any) -> None:
        nonlocal count
        if ev.new_state == "speaking":
            count = 0
        if ev.new_state != "away" or count >= max_reprompts:
            return
        count += 1
        try:
            session.reset_away_timer()
            session.generate_reply(instructions=instructions)
        except RuntimeError as e:  # closing, or no activity any more
            log.info("silence re-prompt skipped: %s", e)

    session.on("user_state_changed", on_user_state)


async def entrypoint(ctx: Any) -> None:
    """Route the room, build the configured agent and run the voice session."""
    from livekit.agents import AgentSession

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
    session = AgentSession(vad=services.vad)
    prepared.manager.attach(session)
    attach_silence_reprompt(session)
    ctx.add_shutdown_callback(prepared.aclose)
    # SIGTERM drain (app/worker/drain.py) reaches live sessions through this registry.
    ctx.add_shutdown_callback(active_sessions.register(session, prepared).release)
    # end_session (or an error) closes the AgentSession; the job must end with it.
    session.on("close", lambda ev: ctx.shutdown(reason=getattr(ev.reason, "value", "session closed")))
    await session.start(agent=prepared.agent, room=ctx.room)
