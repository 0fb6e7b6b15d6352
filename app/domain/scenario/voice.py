"""The voice parts of the scenario format (`io: voice`), validated like the rest.

Kept apart from `app.domain.scenario.format` (which imports these) so the text format stays readable:
`Scenario.voice` (options), `StartSpec.voice` / `TurnSpec.voice` (what the user's audio
is and what the voice path must show), `SessionSpec.voice` (the stored latency metrics).
Overview: `sim/voice/__init__.py`; the README's "Voice simulation" section.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class VoiceOptions(_M):
    """`voice:` at the top of an `io: voice` scenario."""

    speed: float = Field(80.0, gt=0, le=100)
    """Audio seconds per wall second for user speech, ambient audio and agent playback
    (offline tests run accelerated; 1 is real time). A session's one silero VAD
    stream (`app.agents.audio`) keeps up with ~40-100x real time on a loaded 2-core
    box: faster input just queues in front of it, while playback takes the full
    speed. Barge-ins and timers that race the audio want a slower clock (20)."""
    frame_ms: Literal[10, 20] = 20
    """Microphone frame size."""
    tail_s: float = Field(0.7, ge=0.6, le=5)
    """Silence after each utterance: the VAD needs the agent's `vad.min_silence_duration`
    of it (0.55 s by default) to end the turn."""
    realtime_tail: bool = False
    """Stream each turn's tail at real time (and its speech over at least 0.3 s), so
    LiveKit's end-of-turn timestamps agree with each other and it reports the
    end-of-turn and end-to-end figures (see `sim.voice.clock`): needed to check the
    stored latency metrics; costs ~0.7 s of wall time per user turn."""
    stt: Literal["scripted", "local"] = "scripted"
    """scripted: the STT answers each turn's `user` text. local: the user's audio goes
    through the real local speech recogniser (Whisper on the local model server, the
    `local` extra; such scenarios live in sim/scenarios/local/): what it heard is what
    the model gets, checked against `user` by word error rate (`sim.voice.wer`: case,
    punctuation, number words and digits normalised) within `max_wer`."""
    tts: Literal["scripted", "local"] = "scripted"
    """scripted: a tone as long as the text. local: the agent's words are synthesised by
    the local Piper voice, and every reply the speaker played is recognised back by the
    local Whisper and compared with the reply's text within `tts_max_wer`."""
    max_wer: float = Field(0.25, ge=0, le=1)
    """`stt: local`: the largest word error rate allowed between a turn's `user` text and
    its transcript (a turn's `voice.max_wer` overrides it)."""
    tts_max_wer: float = Field(0.25, ge=0, le=1)
    """`tts: local`: the largest word error rate allowed between a reply and what the
    recogniser heard of its audio."""
    away_timeout_s: float | None = Field(None, gt=0, le=120)
    """LiveKit's `user_away_timeout` in *audio* seconds (converted with `speed`): how long
    both sides must be silent before the user counts as away and the agent re-prompts
    (`attach_silence_reprompt`). Default: LiveKit's 15 s of wall time (never reached by
    an accelerated test)."""


class AudioPart(_M):
    """Audio before the user speaks: `silence_s`, or `noise_s` at `level_dbfs`."""

    silence_s: float | None = Field(None, gt=0, le=120)
    noise_s: float | None = Field(None, gt=0, le=120)
    level_dbfs: float = Field(-50.0, ge=-90, le=-10)
    """Noise RMS level (0 dBFS = full scale). Room tone is around -60..-50."""
    seed: int = 0
    until_agent_spoke: int | None = Field(None, ge=1, le=10)
    """After the part's duration, keep it going (in 0.5 s steps, up to 60 s more) until
    the agent has finished saying this many things since the turn began (re-prompts
    during a silence), so an accelerated clock cannot make the caller talk over them."""

    @model_validator(mode="after")
    def _one(self) -> AudioPart:
        if (self.silence_s is None) == (self.noise_s is None):
            raise ValueError("an audio part is exactly one of silence_s, noise_s")
        return self

    @property
    def seconds(self) -> float:
        return self.silence_s if self.silence_s is not None else self.noise_s  # type: ignore[return-value]


class VoiceExpect(_M):
    """Voice checks of a step, beyond its events. Always checked (offline and live):
    every assistant message of the step played audio; for a user turn also that VAD
    detected the speech (a start and an end of speech) and that the transcript reached
    the model as the user's message."""

    speech_segments: int | None = Field(None, ge=0)
    """Exactly this many VAD speech segments (user started, then stopped speaking) in the
    step, including any `before` audio: `1` proves background noise triggered nothing."""
    interrupted: bool | None = None
    """true: an agent reply of this step was cut by the user (barge-in): its playback was
    cleared before the end, and the assistant message is marked interrupted. false: none was."""
    audio: bool = True
    """Every assistant message of the step played audio (set false to skip)."""
    max_first_audio_ms: float | None = Field(None, gt=0)
    """Wall time from the end of the user's speech to the step's first agent audio frame
    (includes the VAD's 0.55 s of silence)."""


class VoiceTurn(VoiceExpect):
    """`voice:` on a turn: the user's audio (and the checks of `VoiceExpect`)."""

    audio_fixture: str | None = Field(None, alias="fixture", pattern=r"^[a-z0-9_]+$")
    """The WAV under sim/voice/fixtures/ (no extension). Default: `fixture_name(say or user)`."""
    say: str | None = Field(None, min_length=1)
    """What the fixture says, when espeak-ng should hear other words than the transcript
    (e.g. "A B 1 2 3" for "AB123"). `user` stays the transcript the STT returns."""
    before: list[AudioPart] = Field(default_factory=list)
    """Audio streamed before the speech: a long silence (re-prompts), background noise."""
    barge_in_s: float | None = Field(None, ge=0, le=60)
    """Start speaking this many audio seconds after the agent's reply to the previous
    turn started playing (instead of after it finished): a barge-in."""
    speaker: Literal["espeak", "piper"] = "espeak"
    """Who says the fixture: espeak-ng, or the `local` extra's Piper voice (a second,
    more natural voice for the real-recognition scenarios). A Piper fixture's default
    name ends in `_piper`."""
    max_wer: float | None = Field(None, ge=0, le=1)
    """`stt: local`: this turn's word error rate tolerance (default: the scenario's)."""

    @model_validator(mode="after")
    def _barge(self) -> VoiceTurn:
        if self.barge_in_s is not None and self.before:
            raise ValueError("a barge-in turn starts speaking over the agent: it takes no `before` audio")
        return self


class VoiceSessionExpect(_M):
    """`voice:` on a session: the per-turn latency metrics stored on its record."""

    metrics: int | None = Field(None, ge=0)
    """Number of entries in `SessionRecord.metrics` (one per agent message that played audio)."""
    metrics_complete: bool | None = None
    """Every entry that answers a user turn has eou_delay_ms, tts_ttfb_ms and total_ms
    (non-negative; llm_ttft_ms is null when the answer was not the model's, e.g. the
    greeting of an agent taking over after a handoff). Default: checked when the
    scenario streams `realtime_tail` (accelerated turns end too fast for LiveKit to
    report end-of-turn figures)."""
    interruptions: int | None = Field(None, ge=0)
    """Number of entries marked interrupted."""


def fixture_name(text: str, speaker: str = "espeak") -> str:
    """The default fixture for an utterance: a readable slug plus a short hash (and the
    speaker, when it is not espeak-ng)."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40].rstrip("_")
    tail = "" if speaker == "espeak" else f"_{speaker}"
    return f"{slug}_{hashlib.sha1(text.encode()).hexdigest()[:6]}{tail}"
