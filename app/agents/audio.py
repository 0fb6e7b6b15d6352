"""The audio models a voice agent gets: one silero VAD stream per session, shared by
turn detection and the STT's segmentation, with the agent's `VADConfig` applied.

Why: LiveKit would otherwise wrap the (non-streaming) OpenAI STT in its own
`StreamAdapter`, running a second VAD stream over the same audio. The adaptations
that avoid it live in `app.adapters.silero` (`SessionVAD`) and
`app.adapters.livekit_agents` (`SegmentingSTT`); when either is not active (a library
version they were not written for), agents get LiveKit's own path.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import stt as lk_stt, vad as lk_vad
from livekit.plugins import silero

from app.adapters import livekit_agents as lk_adapter, silero as silero_adapter
from app.adapters.livekit_agents import SegmentingSTT
from app.adapters.silero import SessionVAD
from app.domain import VADConfig


def vad_options(inner: silero.VAD, config: VADConfig | None) -> dict[str, float]:
    """The loaded silero options an agent's `VADConfig` changes (empty: none). A new
    activation threshold moves the deactivation one as silero derives it."""
    if config is None:
        return {}
    loaded = inner._opts
    wanted = {
        "min_speech_duration": float(config.min_speech_duration),
        "min_silence_duration": float(config.min_silence_duration),
        "activation_threshold": float(config.activation_threshold),
    }
    changed = {k: v for k, v in wanted.items() if getattr(loaded, k) != v}
    if "activation_threshold" in changed:
        changed["deactivation_threshold"] = max(changed["activation_threshold"] - 0.15, 0.01)
    return changed


def session_audio_models(
    stt: lk_stt.STT[Any], vad: lk_vad.VAD, config: VADConfig | None = None, *, batch: bool | None = None
) -> tuple[lk_stt.STT[Any], lk_vad.VAD]:
    """The (STT, VAD) an audio agent gets: with the process's silero VAD, one shared
    VAD stream (`SessionVAD` + `SegmentingSTT`) with the agent's `VADConfig` applied;
    any other VAD, a streaming STT, or adapters not active, as given (LiveKit then
    wraps a non-streaming STT in its own `StreamAdapter`, and the process's VAD
    options apply). `batch`: the STT is driven through `recognize()` (default: it does
    not stream; a fallback chain of non-streaming STTs reports streaming but is one)."""
    adapted = silero_adapter.active() and lk_adapter.active()
    if batch is None:
        batch = not stt.capabilities.streaming
    if adapted and isinstance(vad, silero.VAD) and batch:
        svad = SessionVAD(vad, vad_options(vad, config))
        return SegmentingSTT(stt=stt, vad=svad), svad
    return stt, vad

