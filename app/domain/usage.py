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
    input_tokens: int = Field(0, ge=0, description="Input (prompt) tokens, cached ones included.")
    cached_tokens: int = Field(0, ge=0, description="Input tokens served from the provider's prompt cache.")
    output_tokens: int = Field(0, ge=0)
    audio_s: float = Field(0.0, ge=0, description="STT: audio transcribed; TTS: audio spoken (seconds).")
    characters: int = Field(0, ge=0, description="TTS: characters synthesised.")
    cost_usd: float | None = Field(None, description="None: the price table has no price for this model.")
    price_as_of: date | None = Field(None, description="The date of the price used.")


class ServedBy(BaseModel):
    """How many agent turns (LLM, TTS) or user turns (STT) one provider's model served."""

    kind: ModelKind
    provider: str
    model: str
    turns: int = Field(0, ge=0)


class SessionUsage(BaseModel):
    """What a session consumed, as LiveKit counts it (`AgentSession.usage`, one line per
    provider and model in `models`), the totals over those lines, their cost, and which
    providers served its turns. Budgets (`SessionBudget`) are checked against the totals."""

    llm_input_tokens: int = Field(0, ge=0, description="LLM input (prompt) tokens, cached ones included.")
    llm_cached_tokens: int = Field(0, ge=0, description="Of those, served from the prompt cache.")
    llm_output_tokens: int = Field(0, ge=0, description="LLM output (completion) tokens.")
    stt_audio_s: float = Field(0.0, ge=0, description="Seconds of audio transcribed.")
    tts_characters: int = Field(0, ge=0, description="Characters synthesised.")
    tts_audio_s: float = Field(0.0, ge=0, description="Seconds of audio synthesised.")
    cost_usd: float = Field(0.0, ge=0, description="Priced models only: see `unpriced_models`.")
    unpriced_models: list[str] = Field(
        default_factory=list, description="Models with usage but no price: the cost leaves them out."
    )
    models: list[ModelUsage] = Field(default_factory=list)
    served_by: list[ServedBy] = Field(default_factory=list)

    @property
    def llm_tokens(self) -> int:
        return self.llm_input_tokens + self.llm_output_tokens

    def with_models(self, models: Iterable[ModelUsage]) -> SessionUsage:
        """These figures replaced by the totals over `models` (`served_by` kept)."""
        lines = list(models)
        llm = [m for m in lines if m.kind == "llm"]
        stt = [m for m in lines if m.kind == "stt"]
        tts = [m for m in lines if m.kind == "tts"]
        return self.model_copy(update=dict(
            llm_input_tokens=sum(m.input_tokens for m in llm),
            llm_cached_tokens=sum(m.cached_tokens for m in llm),
            llm_output_tokens=sum(m.output_tokens for m in llm),
            stt_audio_s=round(sum(m.audio_s for m in stt), 3),
            tts_characters=sum(m.characters for m in tts),
            tts_audio_s=round(sum(m.audio_s for m in tts), 3),
            cost_usd=round(sum(m.cost_usd or 0.0 for m in lines), 8),
            unpriced_models=sorted({m.model for m in lines if m.cost_usd is None}),
            models=lines,
        ))


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
    llm_input_tokens: int = 0
    llm_cached_tokens: int = 0
    llm_output_tokens: int = 0
    stt_audio_s: float = 0.0
    tts_characters: int = 0
    tts_audio_s: float = 0.0
    cost_usd: float = Field(0.0, description="The calls' cost.")
    analysis_cost_usd: float = Field(0.0, description="The post-call analyses' cost.")

    def add(self, other: UsageTotals) -> UsageTotals:
        data = {name: getattr(self, name) + getattr(other, name) for name in UsageTotals.model_fields}
        return UsageTotals.model_validate(data)

    def rounded(self) -> Self:
        return self.model_copy(update={
            "stt_audio_s": round(self.stt_audio_s, 3),
            "tts_audio_s": round(self.tts_audio_s, 3),
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
