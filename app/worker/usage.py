"""LiveKit's usage figures (`AgentSession.usage`) as the session record's `SessionUsage`.

LiveKit collects them from its own metrics, one entry per provider and model (LLM prompt,
cached and completion tokens; STT audio seconds; TTS characters and audio seconds); we
keep the same lines, add totals, and price them (`app.domain.pricing`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.domain.pricing import PriceTable
from app.domain.usage import ModelUsage, SessionUsage

if TYPE_CHECKING:
    from livekit.agents.metrics import AgentSessionUsage


def session_usage(usage: AgentSessionUsage, prices: PriceTable) -> SessionUsage | None:
    """None when nothing was used (no model was called)."""
    from livekit.agents.metrics import LLMModelUsage, STTModelUsage, TTSModelUsage

    lines: list[ModelUsage] = []
    for u in usage.model_usage:
        if isinstance(u, LLMModelUsage):
            if u.input_tokens or u.output_tokens:
                lines.append(ModelUsage(
                    kind="llm", provider=u.provider, model=u.model, prompt_tokens=u.input_tokens,
                    prompt_cached_tokens=u.input_cached_tokens, completion_tokens=u.output_tokens,
                ))
        elif isinstance(u, STTModelUsage):
            if u.audio_duration or u.input_tokens or u.output_tokens:
                lines.append(ModelUsage(
                    kind="stt", provider=u.provider, model=u.model, audio_seconds=round(u.audio_duration, 3),
                    prompt_tokens=u.input_tokens, completion_tokens=u.output_tokens,
                ))
        elif isinstance(u, TTSModelUsage):
            if u.characters_count or u.audio_duration:
                lines.append(ModelUsage(
                    kind="tts", provider=u.provider, model=u.model, characters=u.characters_count,
                    audio_seconds=round(u.audio_duration, 3), prompt_tokens=u.input_tokens,
                    completion_tokens=u.output_tokens,
                ))
        # interruption and end-of-turn models: LiveKit Cloud inference, not used here
    return prices.priced(lines) if lines else None
