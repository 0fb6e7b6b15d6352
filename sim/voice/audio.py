"""PCM helpers for the voice sim: WAV fixtures, silence, low-level noise, tones, frames.

Everything is 16-bit signed mono PCM held as numpy int16 arrays. User audio is 16 kHz
(what silero VAD runs at, so no resampling on the input path); the scripted TTS answers
24 kHz (the OpenAI plugin's fixed output rate).
"""

from __future__ import annotations

import io
import math
import wave
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
from livekit import rtc

INPUT_RATE = 16_000
TTS_RATE = 24_000
FIXTURES = Path(__file__).resolve().parent / "fixtures"


class FixtureMissing(FileNotFoundError):
    """A voice scenario names a fixture that is not committed (run sim/voice/make_fixtures.py)."""


def fixture_path(name: str) -> Path:
    return FIXTURES / (name if name.endswith(".wav") else f"{name}.wav")


@lru_cache(maxsize=128)
def load_fixture(name: str) -> np.ndarray:
    """A committed 16 kHz mono fixture (cached: read-only, shared by sessions)."""
    path = fixture_path(name)
    if not path.exists():
        raise FixtureMissing(f"voice fixture {path.name} is missing: run `uv run python -m sim.voice.make_fixtures`")
    pcm, rate = read_wav(path.read_bytes())
    if rate != INPUT_RATE:
        raise ValueError(f"{path.name}: {rate} Hz, fixtures are {INPUT_RATE} Hz mono")
    pcm.setflags(write=False)
    return pcm


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV bytes -> (mono int16 samples, sample rate)."""
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError("only 16-bit PCM WAV is supported")
        channels, rate = w.getnchannels(), w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return pcm.copy(), rate


def wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(pcm, dtype=np.int16).tobytes())
    return buf.getvalue()


def silence(seconds: float, rate: int = INPUT_RATE) -> np.ndarray:
    return np.zeros(max(0, round(seconds * rate)), dtype=np.int16)


def noise(seconds: float, level_dbfs: float = -50.0, *, seed: int = 0, rate: int = INPUT_RATE) -> np.ndarray:
    """Low-level background noise: pink-ish (white noise through a one-pole low-pass),
    RMS at `level_dbfs` (0 dBFS = full scale), reproducible for a seed."""
    n = max(0, round(seconds * rate))
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(n)
    # y[k] = a*y[k-1] + (1-a)*x[k], vectorised by an IIR filter via cumulative trick is
    # overkill: a short FIR smoothing is enough to take the hiss off the top octave.
    shaped = np.convolve(white, np.ones(4) / 4, mode="same") if n >= 4 else white
    rms = float(np.sqrt(np.mean(shaped**2))) if n else 1.0
    target = 32767 * 10 ** (level_dbfs / 20)
    return np.clip(shaped * (target / (rms or 1.0)), -32768, 32767).astype(np.int16)


def tone(seconds: float, rate: int = TTS_RATE, *, freq: float = 220.0, level_dbfs: float = -12.0) -> np.ndarray:
    """A sine with 10 ms fades: the scripted TTS's "speech" (audible, cheap, exact length)."""
    n = max(0, round(seconds * rate))
    t = np.arange(n) / rate
    amp = 32767 * 10 ** (level_dbfs / 20)
    out = amp * np.sin(2 * math.pi * freq * t)
    fade = min(n // 2, round(0.01 * rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        out[:fade] *= ramp
        out[-fade:] *= ramp[::-1]
    return out.astype(np.int16)


def rms_dbfs(pcm: np.ndarray) -> float:
    if len(pcm) == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    return 20 * math.log10(rms / 32767) if rms else -math.inf


def frames(pcm: np.ndarray, rate: int = INPUT_RATE, frame_ms: int = 10) -> Iterator[rtc.AudioFrame]:
    """Split into `frame_ms` frames (the last one zero-padded), as a microphone track delivers them."""
    step = rate * frame_ms // 1000
    for i in range(0, len(pcm), step):
        chunk = pcm[i : i + step]
        if len(chunk) < step:
            chunk = np.concatenate([chunk, np.zeros(step - len(chunk), dtype=np.int16)])
        yield rtc.AudioFrame(chunk.tobytes(), rate, 1, step)


def resample(pcm: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    """`pcm` at `to_rate` (LiveKit's high-quality resampler), e.g. a 16 kHz fixture as a
    24 kHz room track delivers it."""
    if rate == to_rate:
        return pcm
    rs = rtc.AudioResampler(input_rate=rate, output_rate=to_rate, quality=rtc.AudioResamplerQuality.HIGH)
    out = [frame_pcm(f) for f in rs.push(rtc.AudioFrame(np.asarray(pcm, np.int16).tobytes(), rate, 1, len(pcm)))]
    out += [frame_pcm(f) for f in rs.flush()]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)


def frame_pcm(frame: rtc.AudioFrame) -> np.ndarray:
    return np.frombuffer(bytes(frame.data), dtype=np.int16)
