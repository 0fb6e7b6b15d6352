"""What a model server serves: chat completions, transcriptions, speech.

`ModelBackend` is the seam between the HTTP layer (`app.localmodels.server`) and the
models: `LocalBackend` runs real ones (llama.cpp, faster-whisper, Piper), the demo
backend (`app.localmodels.demo`) a scripted caller-support conversation. Both speak
OpenAI's chunk format (`app.localmodels.wire`) and raise `ModelError` for what the
client must be told.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from app.localmodels import wire
from app.localmodels.locate import ModelFiles
from app.localmodels.settings import ENV_NAMES, LocalModelSettings

log = logging.getLogger(__name__)


class ModelError(Exception):
    """A request the backend refuses or cannot serve; becomes an OpenAI error document."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return wire.error_body(self.message, kind=self.kind, code=self.code, param=self.param)


class StartupError(Exception):
    """A model that cannot be served; `str()` is the one line `models serve` prints."""


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    duration: float
    segments: list[dict[str, Any]]


class ModelBackend(Protocol):
    kind: str
    """"local" or "demo": reported on /health, so a client can tell which it reached."""

    def describe(self) -> dict[str, Any]: ...

    def chat(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Chat completion chunks (a usage chunk last); nothing is yielded before the model
        produced its first output, so a refusal can still be an HTTP error."""
        ...

    async def transcribe(self, audio: bytes, *, language: str | None, prompt: str | None,
                         temperature: float) -> Transcription: ...

    def speak(self, text: str, *, voice: str, speed: float, fmt: str) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class LocalBackend:
    """Real models: each loads at `start()`, which fails with the setting to fix."""

    kind = "local"

    def __init__(self, files: ModelFiles, settings: LocalModelSettings) -> None:
        from app.localmodels.llm import LlamaChat
        from app.localmodels.stt import WhisperSTT
        from app.localmodels.tts import PiperTTS

        self.settings = settings
        self.llm = LlamaChat(files.llm, settings)
        self.stt = WhisperSTT(files.stt, settings)
        self.tts = PiperTTS(files.tts, settings)

    async def start(self) -> None:
        from app.localmodels.workers import ModelLoadError

        async def llm() -> None:
            try:
                await asyncio.to_thread(self.llm.load)
            except Exception as e:
                raise StartupError(f"{ENV_NAMES['llm_model']}: llama.cpp cannot load {self.llm.gguf} ({e})") from None

        async def stt() -> None:
            try:
                await self.stt.start()
            except ModelLoadError as e:
                raise StartupError(f"{ENV_NAMES['stt_model']}: cannot load {self.stt.name} ({e})") from None

        async def tts() -> None:
            try:
                await self.tts.start()
            except ModelLoadError as e:
                raise StartupError(f"{ENV_NAMES['tts_voice']}: cannot load {self.tts.source.model} ({e})") from None

        results = await asyncio.gather(llm(), stt(), tts(), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.aclose()
            raise errors[0]

    def describe(self) -> dict[str, Any]:
        return {"llm": self.llm.name, "stt": self.stt.name, "tts": self.tts.name,
                "tool_calls": self.settings.llm_tool_calls}

    async def chat(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        from app.localmodels.llm import LLMError
        from app.localmodels.toolcalls import ChoiceDecoder, ToolRequestError, prepare_chat

        try:
            prepared = await asyncio.to_thread(
                prepare_chat, body, mode=self.settings.llm_tool_calls, grammar_of=self.llm.grammar_of,
                max_tokens=self.settings.llm_max_tokens, repeat_penalty=self.settings.llm_repeat_penalty)
        except ToolRequestError as e:
            raise ModelError(400, str(e), param=e.param) from None
        model = str(body.get("model") or self.llm.name)
        cid = wire.completion_id()
        decoder = ChoiceDecoder(prepared.plan) if prepared.plan is not None else None
        started = False
        finish: str | None = None
        usage: Any = None
        stream = self.llm.stream(prepared.body)
        try:
            async for c in stream:
                usage = c.get("usage") or usage
                for choice in c.get("choices") or []:
                    if not started:
                        started = True
                        yield wire.chunk(cid, model, {"role": "assistant", "content": ""})
                    finish = choice.get("finish_reason") or finish
                    delta = choice.get("delta") or {}
                    if decoder is not None:
                        text = decoder.feed(delta.get("content") or "")
                        if text:
                            yield wire.chunk(cid, model, {"content": text})
                    else:
                        passed = {k: v for k, v in delta.items() if k in ("content", "tool_calls") and v}
                        if passed:
                            yield wire.chunk(cid, model, passed)
        except LLMError as e:
            raise ModelError(e.status, e.message, kind=e.kind, code=e.code) from None
        finally:
            await stream.aclose()
        if not started:
            yield wire.chunk(cid, model, {"role": "assistant", "content": ""})
        if decoder is not None:
            decoded = decoder.finish()
            if decoded.tool_call is not None:
                call_id, name, args = decoded.tool_call
                yield wire.chunk(cid, model, wire.tool_call_delta(0, call_id, name, args))
                finish = "tool_calls"
            elif finish != "length":
                finish = "stop"
        yield wire.chunk(cid, model, {}, finish or "stop")
        if usage is not None:
            yield wire.usage_chunk(cid, model, usage)

    async def transcribe(self, audio: bytes, *, language: str | None, prompt: str | None,
                         temperature: float) -> Transcription:
        from app.localmodels.stt import AudioError
        from app.localmodels.workers import WorkerCrashed

        try:
            t = await self.stt.transcribe(audio, language=language, prompt=prompt, temperature=temperature)
        except AudioError as e:
            raise ModelError(e.status, e.message, param="file") from None
        except WorkerCrashed as e:
            raise ModelError(503, str(e), kind="server_error") from None
        return Transcription(t.text, t.language, t.duration, t.segments)

    async def speak(self, text: str, *, voice: str, speed: float, fmt: str) -> AsyncIterator[bytes]:
        from app.localmodels.workers import WorkerCrashed

        try:
            async for piece in self.tts.speak(text, speed=speed, fmt=fmt):
                yield piece
        except WorkerCrashed as e:
            raise ModelError(503, str(e), kind="server_error") from None

    async def aclose(self) -> None:
        self.stt.close()
        self.tts.close()
        await asyncio.to_thread(self.llm.close)
