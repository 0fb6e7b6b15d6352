"""Turn latency of an agent's past calls: percentiles per config version and per day,
from the per-turn metrics stored on session records (`SessionRecord.metrics`).

Pure and bounded: the caller hands over at most a fixed number of records (the newest),
and this says when it was given that many. Percentiles are nearest-rank (an actual
turn's figure, no interpolation), so a p95 over a handful of turns is honest about it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime

from pydantic import BaseModel, Field

from app.domain.models import SessionRecord

STAGES = {
    # report name: the per-turn metrics entry's field (milliseconds)
    "e2e": "total_ms",
    "eou": "eou_delay_ms",
    "llm_ttft": "llm_ttft_ms",
    "tts_ttfb": "tts_ttfb_ms",
}


class Percentiles(BaseModel):
    count: int = Field(description="turns with this figure")
    p50_ms: float | None = None
    p95_ms: float | None = None


class LatencyBucket(BaseModel):
    version: int | None = Field(None, description="config version (per-version rows)")
    day: date | None = Field(None, description="UTC day the sessions started (per-day rows)")
    sessions: int
    turns: int = Field(description="spoken agent turns with any figure")
    e2e: Percentiles = Field(description="end of user speech → first agent audio")
    eou: Percentiles = Field(description="end of user speech → turn committed")
    llm_ttft: Percentiles = Field(description="model time to first token")
    tts_ttfb: Percentiles = Field(description="TTS time to first audio")


class LatencyReport(BaseModel):
    agent_id: str
    since: datetime
    sessions: int = Field(description="sessions read (the newest first)")
    truncated: bool = Field(description="more sessions matched than were read")
    by_version: list[LatencyBucket]
    by_day: list[LatencyBucket]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _percentiles(values: list[float]) -> Percentiles:
    if not values:
        return Percentiles(count=0)
    values.sort()
    return Percentiles(count=len(values), p50_ms=percentile(values, 50), p95_ms=percentile(values, 95))


class _Acc:
    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.turns = 0
        self.values: dict[str, list[float]] = {name: [] for name in STAGES}

    def bucket(self, **key: int | date | None) -> LatencyBucket:
        return LatencyBucket(
            sessions=len(self.sessions), turns=self.turns,
            **{name: _percentiles(v) for name, v in self.values.items()}, **key,
        )


def summarize(agent_id: str, records: Iterable[SessionRecord], *, since: datetime, truncated: bool) -> LatencyReport:
    """Turns the agent spoke in sessions it started (a handoff target's turns belong to
    the sessions routed to it, whose version is on the record)."""
    by_version: dict[int, _Acc] = defaultdict(_Acc)
    by_day: dict[date, _Acc] = defaultdict(_Acc)
    count = 0
    for record in records:
        count += 1
        if record.agent_id != agent_id:
            continue
        day = record.started_at.date()
        for entry in record.metrics:
            if entry.get("agent_id", agent_id) != agent_id:
                continue
            figures = {name: entry.get(field) for name, field in STAGES.items()}
            if not any(isinstance(v, (int, float)) for v in figures.values()):
                continue
            for acc in (by_version[record.config_version or 0], by_day[day]):
                acc.sessions.add(record.session_id)
                acc.turns += 1
                for name, v in figures.items():
                    if isinstance(v, (int, float)):
                        acc.values[name].append(float(v))
    return LatencyReport(
        agent_id=agent_id, since=since, sessions=count, truncated=truncated,
        by_version=[by_version[v].bucket(version=v) for v in sorted(by_version)],
        by_day=[by_day[d].bucket(day=d) for d in sorted(by_day)],
    )
