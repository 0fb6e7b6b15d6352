"""Session write rules, once for every backend: which fields `update_session` may set and
what values they take, and how a batch of queued writes folds into a few row writes.

A batch (`ConfigStore.apply_session_writes`) is folded into `Run`s, in order: a start,
a run of consecutive turns, or a run of consecutive row changes (data merges, handoffs,
field sets, finish), in which a later field overrides an earlier one (of several queued
`metrics` snapshots only the last is written). A backend that applies a batch atomically
may merge runs further (`merge_runs`); one that cannot applies run after run and reports
how many ops it got through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter

from app.domain import Handoff, InvalidInput, SessionRecord, SessionStatus, Turn
from app.domain.events import Event
from app.domain.models import deep_merge, worst_turn_ms
from app.domain.rollout import ArmSession
from app.store.base import (
    AppendTurn,
    FinishSession,
    RecordData,
    RecordHandoff,
    SessionWrite,
    StartSession,
    UpdateSession,
)

UPDATABLE_FIELDS = (
    "agent_id", "config_version", "user_id", "degraded", "route_reason", "metrics", "usage", "events", "error", "room",
    "analysis", "call",
)
"""Session fields `update_session` may set (the rest belong to start/finish)."""

QUEUE_FIELDS = ("analysis_status", "analysis_owner", "analysis_lease_until", "analysis_claims")
"""Stored beside a session's `analysis`, not part of the record: the claimable state of
its post-call analysis (`ConfigStore.claim_analyses`). Every write of `analysis` resets
them (`queue_fields`), so a newly requested analysis is free to claim."""

_FIELD_TYPES: dict[str, TypeAdapter[Any]] = {
    name: TypeAdapter(SessionRecord.model_fields[name].annotation)  # type: ignore[arg-type]  # declared fields
    for name in UPDATABLE_FIELDS
}


def session_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`update_session` fields, checked by name and validated as the record's own types."""
    unknown = set(fields) - set(UPDATABLE_FIELDS)
    if unknown:
        raise InvalidInput(f"cannot update session field(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, value in fields.items():
        try:
            checked = _FIELD_TYPES[name].validate_python(value)
        except ValueError as e:
            raise InvalidInput(f"bad value for session field {name}: {e}") from None
        # stored as JSON by every backend (events carry times, usage and analysis are models)
        values[name] = _FIELD_TYPES[name].dump_python(checked, mode="json")
    return values


def queue_fields(analysis: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `QUEUE_FIELDS` for a newly written `analysis` (its JSON form): its status, no lease."""
    status = analysis.get("status") if analysis is not None else None
    return {"analysis_status": status, "analysis_owner": None, "analysis_lease_until": None, "analysis_claims": 0}


def with_derived_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` (validated) plus what is stored beside them: the queue fields when they set
    `analysis`, the worst turn when they set `metrics`."""
    out = fields
    if "analysis" in fields:
        out = {**out, **queue_fields(fields["analysis"])}
    if "metrics" in fields:
        out = {**out, "worst_turn_ms": worst_turn_ms(fields["metrics"])}
    return out


def stored_json(record: SessionRecord) -> dict[str, Any]:
    """The record's JSON-document fields as stored (`usage`, `analysis`), and their queue fields."""
    analysis = record.analysis.model_dump(mode="json") if record.analysis is not None else None
    return {"usage": record.usage.model_dump(mode="json"), "analysis": analysis, **queue_fields(analysis)}


def must_be_str(value: Any, what: str) -> str:
    """Ids reach queries as strings only (a dict could become a query operator)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string")
    return value


@dataclass
class Run:
    """Consecutive writes a backend applies as one: a start (the row insert), turns, or row changes."""

    ops: int = 0
    """How many of the batch's ops this run covers."""
    start: SessionRecord | None = None
    turns: list[Turn] = field(default_factory=list)
    data: list[Mapping[str, Any]] = field(default_factory=list)
    handoffs: list[Handoff] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    """Journal events committed with this run (`app.store.event_rules.session_run_events`)."""

    @property
    def changes_row(self) -> bool:
        return bool(self.data or self.handoffs or self.fields)

    def merged_collected(self, collected: Mapping[str, Any]) -> dict[str, Any]:
        """`collected` with this run's `record_data` calls merged in, in order."""
        out = dict(collected)
        for data in self.data:
            out = deep_merge(out, data)
        return out


def stamp_start(record: SessionRecord, now: datetime) -> SessionRecord:
    """The record as inserted. The insert is itself a sign of life: a start written late
    (after an outage) must not look stale to `abandon_stale_sessions`. The worst turn is
    derived from the metrics it carries, never taken from the caller."""
    update: dict[str, Any] = {"worst_turn_ms": worst_turn_ms(record.metrics)}
    if record.owner is not None:
        update["heartbeat_at"] = max(record.heartbeat_at or now, now)
    return record.model_copy(update=update)


def fold(ops: list[SessionWrite], now: datetime) -> list[Run]:
    """`ops` as runs, in order; raises `InvalidInput` for a bad op before anything is written."""
    runs: list[Run] = []
    for op in ops:
        if isinstance(op, StartSession):
            runs.append(Run(ops=1, start=stamp_start(op.record, now)))
            continue
        is_turn = isinstance(op, AppendTurn)
        last = runs[-1] if runs else None
        if last is None or last.start is not None or bool(last.turns) != is_turn:
            last = Run()
            runs.append(last)
        last.ops += 1
        if isinstance(op, AppendTurn):
            last.turns.append(op.turn)
        elif isinstance(op, RecordData):
            last.data.append(op.data)
        elif isinstance(op, RecordHandoff):
            last.handoffs.append(op.handoff)
        elif isinstance(op, UpdateSession):
            last.fields.update(with_derived_fields(session_fields(op.fields)))
        elif isinstance(op, FinishSession):
            last.fields.update(
                status=SessionStatus(op.status).value, end_reason=op.reason, error=op.error,
                ended_at=op.ended_at or now,
            )
        else:
            raise InvalidInput(f"not a session write: {type(op).__name__}")
    return runs


def merge_runs(runs: list[Run]) -> list[Run]:
    """For a backend that applies a batch in one transaction: every run after a start (or
    the first) folded into it, so a batch costs one row write per start. Turns and row
    changes touch different records, so their relative order does not matter there."""
    out: list[Run] = []
    for run in runs:
        if not out or run.start is not None:
            out.append(Run(run.ops, run.start, list(run.turns), list(run.data), list(run.handoffs),
                           dict(run.fields), list(run.events)))
            continue
        seg = out[-1]
        seg.ops += run.ops
        seg.turns += run.turns
        seg.data += run.data
        seg.handoffs += run.handoffs
        seg.fields.update(run.fields)
        seg.events += run.events
    return out


ARM_FIELDS = ("arm", "config_version", "status", "end_reason", "collected", "handoffs", "events", "metrics")
"""The stored session fields the rollout figures read (`project_arm_session`)."""


def project_arm_session(doc: Mapping[str, Any]) -> ArmSession:
    """A stored session's `ARM_FIELDS` as the rollout figures need them: counts and
    latency figures instead of the whole event and metrics lists."""
    events = doc.get("events") or []
    metrics = doc.get("metrics") or []
    turn_ms = [
        float(m["total_ms"]) for m in metrics
        if isinstance(m, Mapping) and isinstance(m.get("total_ms"), (int, float)) and not isinstance(m["total_ms"], bool)
    ]
    return ArmSession(
        arm=str(doc.get("arm")), config_version=doc.get("config_version"), status=str(doc.get("status")),
        end_reason=doc.get("end_reason"), collected=dict(doc.get("collected") or {}),
        handoffs=len(doc.get("handoffs") or []),
        tool_errors=sum(1 for e in events if isinstance(e, Mapping) and e.get("kind") == "tool_error"),
        turn_ms=turn_ms,
    )
