"""LiveKit's usage figures (`AgentSession.usage`) as the session record's usage lines.

LiveKit collects them from its own metrics, one entry per provider and model (LLM input,
cached and output tokens; STT audio seconds; TTS characters and audio seconds); we keep
the same lines (`app.domain.usage.ModelUsage`), and the price table totals and prices
them (`PriceTable.priced`). The session recorder and the budget guard both read them
through here, so there is one reading of LiveKit's usage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.domain.usage import ModelUsage, SessionUsage

if TYPE_CHECKING:
    from livekit.agents.metrics import AgentSessionUsage


def model_lines(usage: AgentSessionUsage) -> list[ModelUsage]:
    """One line per LLM/STT/TTS provider and model that was used (unused ones left out)."""
    from livekit.agents.metrics import LLMModelUsage, STTModelUsage, TTSModelUsage

    lines: list[ModelUsage] = []
    for u in usage.model_usage:
        if isinstance(u, LLMModelUsage):
            if u.input_tokens or u.output_tokens:
                lines.append(ModelUsage(
                    kind="llm", provider=u.provider, model=u.model, input_tokens=u.input_tokens,
                    cached_tokens=u.input_cached_tokens, output_tokens=u.output_tokens,
                ))
        elif isinstance(u, STTModelUsage):
            if u.audio_duration or u.input_tokens or u.output_tokens:
                lines.append(ModelUsage(
                    kind="stt", provider=u.provider, model=u.model, audio_s=round(u.audio_duration, 3),
                    input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                ))
        elif isinstance(u, TTSModelUsage):
            if u.characters_count or u.audio_duration:
                lines.append(ModelUsage(
                    kind="tts", provider=u.provider, model=u.model, characters=u.characters_count,
                    audio_s=round(u.audio_duration, 3), input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                ))
        # interruption and end-of-turn models: LiveKit Cloud inference, not used here
    return lines


def usage_totals(usage: AgentSessionUsage) -> SessionUsage:
    """The totals (unpriced) of LiveKit's usage: what budgets are checked against."""
    return SessionUsage().with_models(model_lines(usage))
