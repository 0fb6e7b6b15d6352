"""Text-to-speech: a Piper voice (ONNX) in a child process, in OpenAI's speech formats.

Text is split into sentences and each is synthesised as its own request to the child,
so the first sentence's audio can be sent while the rest is being made. Audio is
resampled to 24 kHz (what OpenAI's `pcm` format means, and what the OpenAI TTS plugin
decodes every answer at) and encoded per `response_format`: `pcm` and `mp3` stream
sentence by sentence (independent MP3 frames concatenate); `wav`, `flac`, `opus` and
`aac` are one file, sent when complete.
"""

from __future__ import annotations

import io
import re
import wave
from collections.abc import AsyncIterator
from typing import Any

from app.localmodels.locate import PiperSource
from app.localmodels.settings import LocalModelSettings
from app.localmodels.wire import SPEECH_RATE
from app.localmodels.workers import ModelProcess

FORMATS = {"pcm": "audio/pcm", "mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac",
           "opus": "audio/ogg", "aac": "audio/aac"}
STREAMED = frozenset({"pcm", "mp3"})
_CONTAINERS = {"mp3": ("mp3", "libmp3lame"), "flac": ("flac", "flac"), "opus": ("ogg", "libopus"),
               "aac": ("adts", "aac")}
_ENCODE_RATES = {"opus": 48_000}
"""Opus encodes only at 48 kHz (and a few lower rates); the others take 24 kHz as is."""

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
MIN_SENTENCE_CHARS = 24
"""Short sentences are joined to the next: each synthesis call has a fixed cost."""


def sentences(text: str) -> list[str]:
    out: list[str] = []
    for part in _SENTENCE_END.split(text.strip()):
        if out and len(out[-1]) < MIN_SENTENCE_CHARS:
            out[-1] = f"{out[-1]} {part}"
        elif part:
            out.append(part)
    return out


def load_piper(source: PiperSource) -> Any:
    from piper import PiperVoice

    return PiperVoice.load(str(source.model), config_path=str(source.config))


def synthesize_in_child(voice: Any, text: str, speed: float, fmt: str) -> bytes:
    """One sentence → 24 kHz audio in `fmt` (raw s16le for pcm, a complete file otherwise)."""
    import numpy as np
    from piper import SynthesisConfig

    cfg = SynthesisConfig(length_scale=(voice.config.length_scale or 1.0) / speed)
    parts = [c.audio_int16_array for c in voice.synthesize(text, syn_config=cfg)]
    pcm = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
    pcm24 = resample(pcm, voice.config.sample_rate, SPEECH_RATE)
    return encode(pcm24, fmt)


def resample(pcm: Any, rate: int, to: int) -> Any:
    import numpy as np

    if rate == to or pcm.size == 0:
        return pcm.astype(np.int16)
    n = int(round(pcm.size * to / rate))
    x = np.linspace(0, pcm.size - 1, n)
    return np.interp(x, np.arange(pcm.size), pcm.astype(np.float32)).round().astype(np.int16)


def encode(pcm24: Any, fmt: str) -> bytes:
    """Mono int16 samples at 24 kHz → bytes of `fmt`."""
    if fmt == "pcm":
        return bytes(pcm24.astype("<i2").tobytes())
    if fmt == "wav":
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SPEECH_RATE)
            w.writeframes(pcm24.astype("<i2").tobytes())
        return buf.getvalue()
    import av

    container_fmt, codec = _CONTAINERS[fmt]
    rate = _ENCODE_RATES.get(fmt, SPEECH_RATE)
    samples = resample(pcm24, SPEECH_RATE, rate)
    from av.audio.stream import AudioStream

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        assert isinstance(stream, AudioStream)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):  # PyAV cuts the frame to the codec's frame size
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


class PiperTTS:
    def __init__(self, source: PiperSource, settings: LocalModelSettings) -> None:
        self.source = source
        self.settings = settings
        self.process = ModelProcess("text-to-speech", load_piper, (source,))

    @property
    def name(self) -> str:
        return self.source.model.stem

    async def start(self) -> None:
        await self.process.start()

    async def speak(self, text: str, *, speed: float, fmt: str) -> AsyncIterator[bytes]:
        if fmt not in STREAMED:
            pcm = b"".join([await self.process.run(synthesize_in_child, s, speed, "pcm") for s in sentences(text)])
            import numpy as np

            yield encode(np.frombuffer(pcm, dtype="<i2"), fmt)
            return
        for sentence in sentences(text):
            yield await self.process.run(synthesize_in_child, sentence, speed, fmt)

    def close(self) -> None:
        self.process.close()
