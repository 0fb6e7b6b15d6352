"""The voice parts of the scenario format, defined in `app.domain.scenario.voice`;
re-exported for the sim."""

from app.domain.scenario.voice import (
    AudioPart as AudioPart,
    VoiceExpect as VoiceExpect,
    VoiceOptions as VoiceOptions,
    VoiceSessionExpect as VoiceSessionExpect,
    VoiceTurn as VoiceTurn,
    fixture_name as fixture_name,
)
