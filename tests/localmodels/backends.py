"""A scripted `ModelBackend` for the model server's HTTP tests: what each call yields,
when, and what the server did with the iterator (closed early = generation stopped)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.localmodels import wire
from app.localmodels.backend import ModelError, Transcription


@dataclass
class ScriptedBackend:
    kind: str = "local"
    first_delay: float = 0.0
    refuse: ModelError | None = None
    fail_after: int | None = None
    pieces: list[str] = field(default_factory=lambda: ["Hello", " there"])
    tool_call: tuple[str, str] | None = None
    piece_delay: float = 0.0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False
    transcribed: list[bytes] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"llm": "scripted-llm", "stt": "scripted-stt", "tts": "scripted-tts"}

    async def chat(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            await asyncio.sleep(self.first_delay)
            if self.refuse is not None:
                raise self.refuse
            cid, model = "chatcmpl-test", str(body.get("model") or "m")
            yield wire.chunk(cid, model, {"role": "assistant", "content": ""})
            for i, p in enumerate(self.pieces):
                if self.fail_after is not None and i >= self.fail_after:
                    raise ModelError(500, "the model crashed", kind="server_error")
                await asyncio.sleep(self.piece_delay)
                yield wire.chunk(cid, model, {"content": p})
            if self.tool_call is not None:
                yield wire.chunk(cid, model, wire.tool_call_delta(0, "call_1", *self.tool_call))
            yield wire.chunk(cid, model, {}, "tool_calls" if self.tool_call else "stop")
            yield wire.usage_chunk(cid, model, {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
            self.finished = True
        finally:
            self.closed.set()

    async def transcribe(self, audio: bytes, *, language: str | None, prompt: str | None,
                         temperature: float) -> Transcription:
        self.transcribed.append(audio)
        if audio.startswith(b"NOTAUDIO"):
            raise ModelError(400, "the file is not audio that can be decoded", param="file")
        return Transcription("hello world", language or "en", 1.5, [{"id": 0, "text": "hello world"}])

    async def speak(self, text: str, *, voice: str, speed: float, fmt: str) -> AsyncIterator[bytes]:
        for word in text.split():
            yield word.encode()

    async def aclose(self) -> None:
        return None
