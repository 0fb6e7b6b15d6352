"""Usage of one session (tokens, audio seconds, characters, cost) and the aggregates
`GET /api/v1/usage` returns.

The figures come from LiveKit's own usage metrics (`AgentSession.usage`); the worker
converts them (`app.worker.usage`) and prices them with the price table
(`app.domain.pricing`) when the session ends, so a stored cost does not change when
prices do later.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from enum import Enum
from typing import Literal, Self

from pydantic import BaseModel, Field

from app.domain.values import UtcDatetime

ModelKind = Literal["llm", "stt", "tts"]


class ModelUsage(BaseModel):
    """One model's share of a session (one per kind, provider and model)."""

    kind: ModelKind
    provider: str
    model: str
    prompt_tokens: int = Field(0, ge=0, description="Input tokens, cached ones included.")
    prompt_cached_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    audio_seconds: float = Field(0.0, ge=0, description="STT: audio transcribed; TTS: audio spoken.")
    characters: int = Field(0, ge=0, description="TTS: characters synthesised.")
    cost_usd: float | None = Field(None, description="None: the price table has no price for this model.")
    price_as_of: date | None = Field(None, description="The date of the price used.")


class SessionUsage(BaseModel):
    """Totals over `models`, and the cost of the models the price table knows."""

    llm_prompt_tokens: int = 0
    llm_prompt_cached_tokens: int = 0
    llm_completion_tokens: int = 0
    stt_audio_seconds: float = 0.0
    tts_characters: int = 0
    tts_audio_seconds: float = 0.0
    cost_usd: float = Field(0.0, description="Priced models only: see `unpriced_models`.")
    unpriced_models: list[str] = Field(
        default_factory=list, description="Models with usage but no price: the cost leaves them out."
    )
    models: list[ModelUsage] = Field(default_factory=list)

    @classmethod
    def of(cls, models: Iterable[ModelUsage]) -> SessionUsage:
        lines = list(models)
        llm = [m for m in lines if m.kind == "llm"]
        stt = [m for m in lines if m.kind == "stt"]
        tts = [m for m in lines if m.kind == "tts"]
        return cls(
            llm_prompt_tokens=sum(m.prompt_tokens for m in llm),
            llm_prompt_cached_tokens=sum(m.prompt_cached_tokens for m in llm),
            llm_completion_tokens=sum(m.completion_tokens for m in llm),
            stt_audio_seconds=round(sum(m.audio_seconds for m in stt), 3),
            tts_characters=sum(m.characters for m in tts),
            tts_audio_seconds=round(sum(m.audio_seconds for m in tts), 3),
            cost_usd=round(sum(m.cost_usd or 0.0 for m in lines), 8),
            unpriced_models=sorted({m.model for m in lines if m.cost_usd is None}),
            models=lines,
        )


# ----------------------------------------------------------------------- aggregates


class UsageGroup(str, Enum):
    agent = "agent"
    version = "version"
    day = "day"


class UsageTotals(BaseModel):
    """Sums over a set of sessions (a group of `UsageReport.rows`, or all of them)."""

    sessions: int = 0
    sessions_with_usage: int = Field(0, description="Sessions that recorded usage at all.")
    sessions_unpriced: int = Field(0, description="Sessions whose cost leaves out a model without a price.")
    llm_prompt_tokens: int = 0
    llm_prompt_cached_tokens: int = 0
    llm_completion_tokens: int = 0
    stt_audio_seconds: float = 0.0
    tts_characters: int = 0
    tts_audio_seconds: float = 0.0
    cost_usd: float = Field(0.0, description="The calls' cost.")
    analysis_cost_usd: float = Field(0.0, description="The post-call analyses' cost.")

    def add(self, other: UsageTotals) -> UsageTotals:
        data = {name: getattr(self, name) + getattr(other, name) for name in UsageTotals.model_fields}
        return UsageTotals.model_validate(data)

    def rounded(self) -> Self:
        return self.model_copy(update={
            "stt_audio_seconds": round(self.stt_audio_seconds, 3),
            "tts_audio_seconds": round(self.tts_audio_seconds, 3),
            "cost_usd": round(self.cost_usd, 6),
            "analysis_cost_usd": round(self.analysis_cost_usd, 6),
        })


class UsageRow(UsageTotals):
    """One group: the keys asked for in `group_by` are set, the others are null."""

    agent_id: str | None = None
    config_version: int | None = None
    day: date | None = Field(None, description="UTC day the sessions started.")


class UsageReport(BaseModel):
    group_by: list[UsageGroup]
    agent_id: str | None = None
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None
    rows: list[UsageRow]
    total: UsageTotals
