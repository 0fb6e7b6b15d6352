"""Usage aggregates on SQL: one GROUP BY over the sessions table, reading the figures out
of the `usage` and `analysis` JSON columns (SQLAlchemy's JSON paths: `json_extract` on
SQLite, `->>` on PostgreSQL), so the database sums and nothing is parsed per session."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.domain.usage import UsageGroup, UsageRow
from app.store.sql.database import SQLDatabase
from app.store.sql.tables import sessions_t

s = sessions_t

_INT_SUMS = ("llm_input_tokens", "llm_cached_tokens", "llm_output_tokens", "tts_characters")
_FLOAT_SUMS = ("stt_audio_s", "tts_audio_s", "cost_usd")


def _day(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


class SQLUsage:
    def __init__(self, db: SQLDatabase) -> None:
        self._db = db

    async def totals(
        self, group_by: Sequence[UsageGroup], agent_id: str | None, since: datetime | None, until: datetime | None
    ) -> list[UsageRow]:
        keys: list[Any] = []
        if UsageGroup.agent in group_by:
            keys.append(s.c.agent_id.label("agent_id"))
        if UsageGroup.version in group_by:
            keys.append(s.c.config_version.label("config_version"))
        if UsageGroup.day in group_by:
            keys.append(sa.func.date(s.c.started_at).label("day"))
        u, a = s.c.usage, s.c.analysis
        sums = [
            sa.func.count().label("sessions"),
            sa.func.count(u[("models", 0, "kind")].as_string()).label("sessions_with_usage"),
            sa.func.count(u[("unpriced_models", 0)].as_string()).label("sessions_unpriced"),
            *(sa.func.coalesce(sa.func.sum(u[k].as_integer()), 0).label(k) for k in _INT_SUMS),
            *(sa.func.coalesce(sa.func.sum(u[k].as_float()), 0.0).label(k) for k in _FLOAT_SUMS),
            sa.func.coalesce(sa.func.sum(a["cost_usd"].as_float()), 0.0).label("analysis_cost_usd"),
        ]
        cond: list[Any] = []
        if agent_id is not None:
            cond.append(s.c.agent_id == agent_id)
        if since is not None:
            cond.append(s.c.started_at >= since)
        if until is not None:
            cond.append(s.c.started_at < until)
        stmt = sa.select(*keys, *sums).where(*cond)
        if keys:
            stmt = stmt.group_by(*keys).order_by(*keys)

        def run(c: Connection) -> list[UsageRow]:
            rows = []
            for row in c.execute(stmt).mappings():
                doc = dict(row)
                if not doc["sessions"]:
                    continue  # an aggregate without GROUP BY over no rows
                if "day" in doc:
                    doc["day"] = _day(doc["day"])
                rows.append(UsageRow.model_validate(doc))
            return rows

        return await self._db.read(run)
