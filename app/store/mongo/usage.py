"""Usage aggregates on MongoDB: one aggregation pipeline (`$match`, `$group`) over the
sessions' `usage` and `analysis` subdocuments, so the server sums."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from app.domain.usage import UsageGroup, UsageRow
from app.store.mongo.client import MongoDatabase, mapped, ms

_SUMS = (
    "llm_input_tokens", "llm_cached_tokens", "llm_output_tokens", "tts_characters",
    "stt_audio_s", "tts_audio_s", "cost_usd",
)


def _num(path: str) -> dict[str, Any]:
    return {"$sum": {"$ifNull": [path, 0]}}


def _nonempty(path: str) -> dict[str, Any]:
    """Counts the documents whose array at `path` has an element."""
    return {"$sum": {"$cond": [{"$gt": [{"$size": {"$ifNull": [path, []]}}, 0]}, 1, 0]}}


class MongoUsage:
    def __init__(self, mdb: MongoDatabase) -> None:
        self.mdb = mdb

    @mapped
    async def totals(
        self, group_by: Sequence[UsageGroup], agent_id: str | None, since: datetime | None, until: datetime | None
    ) -> list[UsageRow]:
        db = await self.mdb.ready()
        match: dict[str, Any] = {}
        if agent_id is not None:
            match["agent_id"] = agent_id
        started: dict[str, Any] = {}
        if since is not None:
            started["$gte"] = ms(since)
        if until is not None:
            started["$lt"] = ms(until)
        if started:
            match["started_at"] = started
        key: dict[str, Any] = {}
        if UsageGroup.agent in group_by:
            key["agent_id"] = "$agent_id"
        if UsageGroup.version in group_by:
            key["config_version"] = "$config_version"
        if UsageGroup.day in group_by:
            key["day"] = {"$dateToString": {"format": "%Y-%m-%d", "date": "$started_at", "timezone": "UTC"}}
        group: dict[str, Any] = {
            "_id": key or None,
            "sessions": {"$sum": 1},
            "sessions_with_usage": _nonempty("$usage.models"),
            "sessions_unpriced": _nonempty("$usage.unpriced_models"),
            **{k: _num(f"$usage.{k}") for k in _SUMS},
            "analysis_cost_usd": _num("$analysis.cost_usd"),
        }
        pipeline: list[dict[str, Any]] = [{"$match": match}, {"$group": group}]
        if key:
            pipeline.append({"$sort": {f"_id.{k}": 1 for k in key}})
        rows = []
        async for doc in await db.sessions.aggregate(pipeline):
            keys = doc.pop("_id") or {}
            if "day" in keys:
                keys["day"] = date.fromisoformat(keys["day"])
            rows.append(UsageRow.model_validate({**doc, **keys}))
        return rows
