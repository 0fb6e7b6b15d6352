"""The voice sim's speech endpoints on the real local model server (`stt:`/`tts: local`).

The agent's OpenAI STT/TTS plugins get a client whose transport goes to the local model
server over loopback (Whisper, Piper) and records what crossed it exactly as
`FakeOpenAI` records its scripted answers (`speech_requests`, `transcriptions`), so the
voice checks read both the same way. `recognise()` is the test's own ear: it sends the
audio the simulated speaker played to the same Whisper (not recorded).
"""

from __future__ import annotations

import json

import httpx2
import numpy as np
import openai

from sim.fake_openai import CapturedTranscription, _multipart, _wav_seconds
from sim.voice.audio import wav_bytes


class _Recorder(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, sink: LocalAudio) -> None:
        self.inner = inner
        self.sink = sink

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith("/audio/speech"):
            body = await request.aread()
            try:
                doc = json.loads(body or b"{}")
            except ValueError:
                doc = {}
            self.sink.speech_requests.append(doc if isinstance(doc, dict) else {})
            return await self.inner.handle_async_request(request)
        if request.method == "POST" and path.endswith("/audio/transcriptions"):
            sent = await request.aread()
            response = await self.inner.handle_async_request(request)
            content = await response.aread()
            fields = _multipart(sent, request.headers.get("content-type", ""))
            audio = fields.get("file", b"")
            try:
                text = str(json.loads(content).get("text", "")) if response.status_code == 200 else ""
            except (ValueError, AttributeError):
                text = ""
            self.sink.transcriptions.append(CapturedTranscription(
                model=_text(fields.get("model")), language=_text(fields.get("language")),
                audio_bytes=len(audio), audio_s=_wav_seconds(audio), text=text))
            return httpx2.Response(response.status_code, headers=response.headers, content=content, request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None


class LocalAudio:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.speech_requests: list[dict[str, object]] = []
        self.transcriptions: list[CapturedTranscription] = []
        self._client: openai.AsyncClient | None = None

    def client(self) -> openai.AsyncClient:
        if self._client is None:
            self._client = openai.AsyncClient(
                api_key="sk-local", base_url=self.base_url, max_retries=0,
                http_client=httpx2.AsyncClient(transport=_Recorder(httpx2.AsyncHTTPTransport(), self), timeout=60.0))
        return self._client

    async def recognise(self, pcm: np.ndarray, rate: int) -> str:
        async with httpx2.AsyncClient(timeout=60.0) as c:  # not httpx: scenarios mock it (respx)
            r = await c.post(f"{self.base_url}/audio/transcriptions", data={"language": "en"},
                             files={"file": ("reply.wav", wav_bytes(pcm, rate), "audio/wav")})
        r.raise_for_status()
        return str(r.json()["text"])

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
