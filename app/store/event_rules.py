"""Which journal events a change produces, once for every backend.

The service (`app.store.service`) calls these while it builds a write and hands the
events to the backend with it; the backend commits them at the write's commit point.
Only `session.ended` is committed as a stub (who, how it ended) and rendered in full
later, from the committed record, when it is first fanned out (`RENDERED_LATER`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from app.domain import AgentConfig, Route, SessionRecord
from app.domain.analysis import AnalysisStatus, SessionAnalysis
from app.domain.events import (
    AGENT_CREATED,
    AGENT_DELETED,
    AGENT_PUBLISHED,
    AGENT_VERSION_CREATED,
    ROLLOUT_ABORTED,
    ROLLOUT_PROMOTED,
    ROLLOUT_STARTED,
    ROUTES_CHANGED,
    SESSION_ANALYZED,
    SESSION_ENDED,
    SESSION_HANDOFF,
    SESSION_STARTED,
    AgentCreatedData,
    AgentDeletedData,
    AgentPublishedData,
    AgentVersionCreatedData,
    ChangeContext,
    ChangeKind,
    Event,
    RolloutData,
    RouteData,
    RoutesChangedData,
    SessionAnalyzedData,
    SessionHandoffData,
    SessionStartedData,
    make_event,
)
from app.domain.models import Handoff
from app.domain.rollout import GUARD_ACTOR, Rollout
from app.store.session_rules import Run

RENDERED_LATER = frozenset({SESSION_ENDED.name})
"""Types whose payload is rendered after the commit (then frozen), not at it."""


def agent_created(cfg: AgentConfig, now: datetime, ctx: ChangeContext) -> list[Event]:
    return [
        make_event(AGENT_CREATED, AgentCreatedData(agent_id=cfg.agent_id, version=cfg.version, name=cfg.name),
                   at=now, agent_id=cfg.agent_id, ctx=ctx),
        version_created(cfg, "create", now, ctx)[0],
    ]


def version_created(
    cfg: AgentConfig, change: ChangeKind, now: datetime, ctx: ChangeContext, rolled_back_to: int | None = None
) -> list[Event]:
    data = AgentVersionCreatedData(agent_id=cfg.agent_id, version=cfg.version, change=change,
                                   rolled_back_to=rolled_back_to)
    return [make_event(AGENT_VERSION_CREATED, data, at=now, agent_id=cfg.agent_id, ctx=ctx)]


def published(
    agent_id: str, version: int, previous: int | None, change: str, now: datetime, ctx: ChangeContext
) -> list[Event]:
    data = AgentPublishedData.model_validate(
        {"agent_id": agent_id, "version": version, "previous_version": previous, "change": change})
    return [make_event(AGENT_PUBLISHED, data, at=now, agent_id=agent_id, ctx=ctx)]


def rollout_changed(
    agent_id: str, rollout: Rollout, now: datetime, ctx: ChangeContext, figures: dict[str, object] | None = None
) -> list[Event]:
    """`rollout.started`, `.promoted` or `.aborted`, by the rollout's status; a promote also
    publishes (`agent.published`)."""
    kind = {"running": ROLLOUT_STARTED, "promoted": ROLLOUT_PROMOTED, "aborted": ROLLOUT_ABORTED}[rollout.status]
    data = RolloutData(
        agent_id=agent_id, rollout_id=rollout.id, version=rollout.version, stable_version=rollout.stable_version,
        percent=rollout.percent, reason=rollout.reason, automatic=rollout.ended_by == GUARD_ACTOR and
        rollout.status == "aborted", figures=figures,
    )
    events = [make_event(kind, data, at=now, agent_id=agent_id, ctx=ctx)]
    if rollout.status == "promoted":
        events += published(agent_id, rollout.version, rollout.stable_version, "promote", now, ctx)
    return events


def agent_deleted(agent_id: str, now: datetime, ctx: ChangeContext) -> list[Event]:
    return [make_event(AGENT_DELETED, AgentDeletedData(agent_id=agent_id), at=now, agent_id=agent_id, ctx=ctx)]


def routes_changed(
    change: str, purpose: str | None, routes: Iterable[Route], now: datetime, ctx: ChangeContext
) -> list[Event]:
    table = [RouteData(purpose=r.purpose, agent_id=r.agent_id, is_default=r.is_default,
                       phone_numbers=list(r.phone_numbers)) for r in routes]
    data = RoutesChangedData.model_validate({"change": change, "purpose": purpose, "routes": table})
    return [make_event(ROUTES_CHANGED, data, at=now, ctx=ctx)]


def session_started(record: SessionRecord, now: datetime) -> Event:
    data = SessionStartedData(
        session_id=record.session_id, room=record.room, agent_id=record.agent_id,
        config_version=record.config_version, user_id=record.user_id, started_at=record.started_at,
        route_reason=record.route_reason, degraded=record.degraded, arm=record.arm,
    )
    return make_event(SESSION_STARTED, data, at=now, agent_id=record.agent_id)


def session_handoff(session_id: str, handoff: Handoff, now: datetime) -> Event:
    data = SessionHandoffData(session_id=session_id, from_agent=handoff.from_agent, to_agent=handoff.to_agent,
                              reason=handoff.reason, at=handoff.at)
    return make_event(SESSION_HANDOFF, data, at=now, agent_id=handoff.from_agent)


def session_ended(
    session_id: str, agent_id: str | None, status: str, reason: str | None, error: str | None,
    ended_at: datetime | None, now: datetime,
) -> Event:
    """The stub committed with the finish; rendered in full at fan-out."""
    stub = {"session_id": session_id, "agent_id": agent_id, "status": status, "end_reason": reason,
            "error": error, "ended_at": ended_at.isoformat() if ended_at else None}
    return make_event(SESSION_ENDED, stub, at=now, agent_id=agent_id)


def session_analyzed(record: SessionRecord, analysis: SessionAnalysis, now: datetime) -> Event:
    """Committed with the finished analysis (`ConfigStore.finish_analysis`), in full."""
    data = SessionAnalyzedData(
        session_id=record.session_id, agent_id=record.agent_id, config_version=record.config_version,
        status="done" if analysis.status == AnalysisStatus.done else "failed", summary=analysis.summary, success=analysis.success,
        extracted=analysis.extracted, error=analysis.error, model=analysis.request.model,
        attempts=analysis.attempts, finished_at=analysis.finished_at, cost_usd=analysis.cost_usd,
    )
    return make_event(SESSION_ANALYZED, data, at=now, agent_id=record.agent_id)


def session_run_events(session_id: str, runs: list[Run], now: datetime) -> None:
    """Attach to each folded run the events it produces: a start makes `session.started`,
    each handoff `session.handoff`, a finish `session.ended`."""
    agent_id: str | None = None
    for run in runs:
        if run.start is not None:
            agent_id = run.start.agent_id
            run.events.append(session_started(run.start, now))
        agent_id = run.fields.get("agent_id", agent_id)
        for h in run.handoffs:
            run.events.append(session_handoff(session_id, h, now))
        if "status" in run.fields:
            f = run.fields
            run.events.append(session_ended(session_id, agent_id, f["status"], f.get("end_reason"),
                                            f.get("error"), f.get("ended_at"), now))
