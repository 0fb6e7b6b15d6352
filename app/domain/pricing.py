"""The price table: what each model costs, and the cost of a session's usage.

`DEFAULT_PRICES` are OpenAI's list prices (standard tier, US dollars) for the models
this platform uses by default, as published on https://openai.com/api/pricing; each
entry says when (`as_of`). Speech models are priced per minute with OpenAI's own
per-minute estimates (they bill audio tokens, which LiveKit does not report for them).
Prices change: `PRICE_TABLE` (a setting) adds models or replaces entries, and every
stored cost records the date of the price it used. A model with no price is not
guessed: its usage is stored and listed as `unpriced_models`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from app.domain.usage import ModelUsage, SessionUsage
from app.settings import ModelPrice, Settings

DEFAULT_PRICES_AS_OF = date(2025, 8, 1)


def _p(**units: float) -> ModelPrice:
    return ModelPrice(as_of=DEFAULT_PRICES_AS_OF, **units)


DEFAULT_PRICES: dict[str, ModelPrice] = {
    # language models: per million tokens (input, cached input, output)
    "gpt-4.1": _p(input_per_mtok=2.00, cached_input_per_mtok=0.50, output_per_mtok=8.00),
    "gpt-4.1-mini": _p(input_per_mtok=0.40, cached_input_per_mtok=0.10, output_per_mtok=1.60),
    "gpt-4.1-nano": _p(input_per_mtok=0.10, cached_input_per_mtok=0.025, output_per_mtok=0.40),
    "gpt-4o": _p(input_per_mtok=2.50, cached_input_per_mtok=1.25, output_per_mtok=10.00),
    "gpt-4o-mini": _p(input_per_mtok=0.15, cached_input_per_mtok=0.075, output_per_mtok=0.60),
    # speech to text: per minute of audio
    "gpt-4o-transcribe": _p(audio_per_minute=0.006),
    "gpt-4o-mini-transcribe": _p(audio_per_minute=0.003),
    "whisper-1": _p(audio_per_minute=0.006),
    # text to speech: per minute of audio (gpt-4o-mini-tts), per million characters (tts-1)
    "gpt-4o-mini-tts": _p(audio_per_minute=0.015),
    "tts-1": _p(per_mchars=15.00),
    "tts-1-hd": _p(per_mchars=30.00),
}

class PriceEntry(ModelPrice):
    """One row of the price table, as `GET /api/v1/usage/prices` lists it."""

    model: str


_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class PriceTable:
    prices: Mapping[str, ModelPrice]

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceTable:
        return cls({**DEFAULT_PRICES, **settings.price_table})

    @classmethod
    def defaults(cls) -> PriceTable:
        return cls(DEFAULT_PRICES)

    def entries(self) -> list[PriceEntry]:
        return [PriceEntry(model=name, **price.model_dump()) for name, price in sorted(self.prices.items())]

    def price_for(self, model: str) -> ModelPrice | None:
        """By exact name, else the name without a dated snapshot suffix
        (`gpt-4.1-mini-2025-04-14` is priced as `gpt-4.1-mini`)."""
        return self.prices.get(model) or self.prices.get(_SNAPSHOT.sub("", model))

    def cost(self, line: ModelUsage) -> ModelUsage:
        """`line` with its cost (None when the table has no price for the model)."""
        price = self.price_for(line.model)
        if price is None:
            return line.model_copy(update={"cost_usd": None, "price_as_of": None})
        return line.model_copy(update={"cost_usd": round(line_cost(line, price), 8), "price_as_of": price.as_of})

    def priced(self, usage: SessionUsage, lines: list[ModelUsage]) -> SessionUsage:
        """`usage` with `lines` priced and totalled (its `served_by` kept)."""
        return usage.with_models(self.cost(line) for line in lines)

    def tokens_cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """Cost of a language-model call by its token counts (the post-call analysis)."""
        line = ModelUsage(kind="llm", provider="", model=model, input_tokens=input_tokens,
                          output_tokens=output_tokens)
        return self.cost(line).cost_usd


def line_cost(line: ModelUsage, price: ModelPrice) -> float:
    cached = min(line.cached_tokens, line.input_tokens)
    cached_rate = price.input_per_mtok if price.cached_input_per_mtok is None else price.cached_input_per_mtok
    tokens = (
        (line.input_tokens - cached) * price.input_per_mtok
        + cached * cached_rate
        + line.output_tokens * price.output_per_mtok
        + line.characters * price.per_mchars
    ) / 1_000_000
    return tokens + line.audio_s / 60 * price.audio_per_minute
