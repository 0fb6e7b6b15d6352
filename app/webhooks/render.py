"""The full `session.ended` payload, rendered once from the committed session record.

Why at fan-out and not at the finish: the finish is one small write on the session's
own path, and on MongoDB the transcript lives in another collection, so embedding it
would add reads and bytes to every session end; by the time the event is fanned out
the record is complete (a session's writes are applied in order, the finish last). The
rendered payload is then frozen in the journal (`ConfigStore.freeze_event`): every
attempt, resend and dispatcher process sends the same body.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from app.domain import NotFound, SessionRecord
from app.domain.events import CallTransferData, CollectedValidation, SessionEndedData
from app.domain.jsonschema_safe import validator_for, value_problems
from app.store.backend import JournalEntry
from app.store.base import ConfigStore

log = logging.getLogger(__name__)


def validation_state(schema: dict[str, Any] | None, collected: dict[str, Any]) -> CollectedValidation:
    """CPU-bound (bounded by the validator's budget): run it off the event loop."""
    if schema is None:
        return CollectedValidation(state="unknown")
    problems = value_problems(validator_for(schema), collected)
    missing = sorted(str(f) for f in schema.get("required", []) if f not in collected)
    # a missing required field is "incomplete", not "invalid": drop the validator's
    # reports of exactly that, keep every other problem
    problems = [p for p in problems if not (p.endswith("is a required property") and not p.count(":"))]
    state = "invalid" if problems else ("incomplete" if missing else "complete")
    return CollectedValidation(state=state, missing_required=missing, problems=problems)


async def session_ended_data(store: ConfigStore, record: SessionRecord) -> SessionEndedData:
    schema: dict[str, Any] | None = None
    if record.config_version is not None:
        try:
            schema = (await store.get_agent_config(record.agent_id, record.config_version)).schema_config
        except NotFound:  # the agent (or that version) was deleted since
            schema = None
    check = await asyncio.to_thread(validation_state, schema, record.collected)
    duration = (record.ended_at - record.started_at).total_seconds() if record.ended_at else None
    return SessionEndedData.model_validate({
        **record.model_dump(include={"session_id", "room", "agent_id", "config_version", "arm", "user_id", "end_reason",
                                     "error", "started_at", "ended_at", "degraded", "collected", "metrics",
                                     "usage"}),
        "analysis_requested": record.analysis is not None,
        "status": record.status.value,
        "duration_s": round(duration, 3) if duration is not None else None,
        "transcript": [t.model_dump() for t in record.turns],
        "collected_validation": check,
        "handoffs": [{"session_id": record.session_id, **h.model_dump()} for h in record.handoffs],
        "transfer": last_transfer(record),
    })


def last_transfer(record: SessionRecord) -> CallTransferData | None:
    """From the record's last transfer event (its detail is the tool's JSON, parsed
    defensively: an older or hand-edited record must not break the webhook)."""
    for ev in reversed(record.events):
        if ev.kind not in ("call_transferred", "transfer_failed"):
            continue
        try:
            doc = json.loads(ev.detail)
            return CallTransferData.model_validate({**doc, "at": ev.at}) if isinstance(doc, dict) else None
        except ValueError:
            return None
    return None


async def render_session_ended(store: ConfigStore, entry: JournalEntry) -> JournalEntry:
    """Render and freeze `entry` (a `session.ended` stub); the first renderer wins."""
    stub = entry.event.data
    try:
        record = await store.get_session(str(stub.get("session_id")))
    except NotFound:
        log.warning("session.ended %s: session %r is gone; sending the stub", entry.event.id, stub.get("session_id"))
        return await store.freeze_event(entry.event.id, entry.event.agent_id, stub)
    data = await session_ended_data(store, record)
    return await store.freeze_event(entry.event.id, record.agent_id, data.model_dump(mode="json"))
