"""Speech-to-text: faster-whisper (CTranslate2) in a child process.

The packaged Whisper base has its `model.bin` split over two wheels (PyPI's file size
limit); the halves are joined in the child's memory and handed to CTranslate2 as
in-memory files, so nothing is written to disk. Uploads are decoded with PyAV (any
format FFmpeg knows), resampled to 16 kHz mono, and refused when they are not audio or
run longer than `LOCAL_STT_MAX_SECONDS`; decoding stops at that limit, so a small file
that expands to hours of audio costs no more than the limit.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from app.localmodels.locate import WhisperSource
from app.localmodels.settings import LocalModelSettings
from app.localmodels.workers import ModelProcess

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """The upload is not audio we can decode, or is too long (a 4xx for the client)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration: float
    segments: list[dict[str, Any]]


def load_whisper(source: WhisperSource, threads: int) -> Any:
    from faster_whisper import WhisperModel

    if not source.model_parts:
        return WhisperModel(str(source.directory), device="cpu", compute_type="int8", cpu_threads=threads)
    files: dict[str, Any] = {"model.bin": b"".join(p.read_bytes() for p in source.model_parts)}
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        files[name] = (source.directory / name).read_bytes()
    return WhisperModel(str(source.directory), device="cpu", compute_type="int8", cpu_threads=threads, files=files)


def decode_audio(data: bytes, max_seconds: float) -> Any:
    """16 kHz mono float32 samples; raises `AudioError`."""
    import av
    import numpy as np

    limit = int(max_seconds * SAMPLE_RATE)
    chunks: list[Any] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError("the file has no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)
                    total += arr.size
                    if total > limit:
                        raise AudioError(f"the audio is longer than {max_seconds:g} s (LOCAL_STT_MAX_SECONDS)", 413)
                    chunks.append(arr)
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except AudioError:
        raise
    except Exception as e:  # av.error.* for anything FFmpeg cannot read
        raise AudioError(f"the file is not audio that can be decoded ({type(e).__name__})") from None
    if not chunks:
        raise AudioError("the file holds no audio samples")
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def transcribe_in_child(model: Any, data: bytes, language: str | None, prompt: str | None,
                        temperature: float, max_seconds: float) -> Transcript:
    audio = decode_audio(data, max_seconds)
    segments, info = model.transcribe(
        audio, language=language or None, initial_prompt=prompt or None, beam_size=1,
        temperature=temperature, condition_on_previous_text=False, vad_filter=False,
    )
    segs = [{"id": i, "start": round(s.start, 2), "end": round(s.end, 2), "text": s.text} for i, s in enumerate(segments)]
    text = "".join(s["text"] for s in segs).strip()
    return Transcript(text=text, language=info.language, duration=round(audio.size / SAMPLE_RATE, 3), segments=segs)


class WhisperSTT:
    def __init__(self, source: WhisperSource, settings: LocalModelSettings) -> None:
        self.source = source
        self.settings = settings
        self.process = ModelProcess("speech-to-text", load_whisper, (source, settings.stt_threads))

    @property
    def name(self) -> str:
        return self.source.label

    async def start(self) -> None:
        await self.process.start()

    async def transcribe(self, data: bytes, *, language: str | None, prompt: str | None,
                         temperature: float) -> Transcript:
        return await self.process.run(transcribe_in_child, data, language, prompt, temperature,
                                      self.settings.stt_max_seconds)

    def close(self) -> None:
        self.process.close()
