"""The model server's HTTP face: a loopback, OpenAI-compatible API (Litestar).

    GET  /health                   200 once the models are loaded ({"backend": "local" | "demo"})
    GET  /v1/models
    POST /v1/chat/completions      streamed (SSE) or not; tools, tool_choice, max_tokens
    POST /v1/audio/transcriptions  multipart upload, response_format json | text | verbose_json
    POST /v1/audio/speech          response_format pcm | mp3 | wav | flac | opus | aac

Errors are OpenAI's error document (`{"error": {"message", "type", "param", "code"}}`),
which the OpenAI SDK turns into `APIStatusError` with the message: non-audio uploads 400,
uploads over the size cap 413, a conversation longer than the model's context 400
`context_length_exceeded`. A streamed chat answers with its headers at once and sends SSE
comments while a long prompt is being read, so no client read timeout fires before the
first token; a refusal that arrives first is still a plain HTTP error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import HTTPException
from litestar.response import Stream
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from app.localmodels import wire
from app.localmodels.backend import ModelBackend, ModelError
from app.localmodels.settings import LocalModelSettings
from app.localmodels.tts import FORMATS

log = logging.getLogger(__name__)

FIRST_WAIT_S = 0.25
"""How long a streamed chat waits for the model's first output before sending headers:
long enough to turn an immediate refusal into an HTTP error, short enough not to add
latency to a fast answer (which arrives within it anyway)."""
KEEPALIVE_S = 2.0
TRANSCRIPT_FORMATS = ("json", "text", "verbose_json")
MULTIPART_OVERHEAD = 64 * 1024


def _error(e: ModelError) -> Response[Any]:
    return Response(e.body(), status_code=e.status, media_type=MediaType.JSON)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
    message = str(exc.detail)
    if exc.status_code == 413:
        limit = request.route_handler.resolve_request_max_body_size()
        what = "the upload" if "transcriptions" in request.url.path else "the request body"
        message = f"{what} is larger than {limit} bytes" + (
            " (LOCAL_STT_MAX_BYTES)" if "transcriptions" in request.url.path else "")
    return Response(wire.error_body(message, kind=kind), status_code=exc.status_code, media_type=MediaType.JSON)


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("model server request failed", exc_info=exc)
    return Response(wire.error_body("the model server failed to answer", kind="server_error"),
                    status_code=HTTP_500_INTERNAL_SERVER_ERROR, media_type=MediaType.JSON)


async def _json_object(request: Request[Any, Any, Any]) -> dict[str, Any]:
    raw = await request.body()
    try:
        doc = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ModelError(400, "the request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ModelError(400, "the request body must be a JSON object")
    return doc


async def _first(it: AsyncIterator[Any], wait: float) -> tuple[asyncio.Task[Any], bool]:
    """Start pulling the first item; (the task, whether it finished within `wait`)."""
    task: asyncio.Task[Any] = asyncio.ensure_future(it.__anext__())
    done, _ = await asyncio.wait({task}, timeout=wait)
    return task, bool(done)


def create_model_app(backend: ModelBackend, settings: LocalModelSettings) -> Litestar:
    @get("/health", sync_to_thread=False)
    def health() -> dict[str, Any]:
        return {"status": "ok", "backend": backend.kind, "models": backend.describe()}

    @get("/v1/models", sync_to_thread=False)
    def models() -> dict[str, Any]:
        names = backend.describe()
        return {"object": "list", "data": [{"id": str(names[k]), "object": "model", "owned_by": backend.kind}
                                           for k in ("llm", "stt", "tts") if k in names]}

    @post("/v1/chat/completions", status_code=200)
    async def chat(request: Request[Any, Any, Any]) -> Response[Any]:
        try:
            body = await _json_object(request)
        except ModelError as e:
            return _error(e)
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) if isinstance(
            body.get("stream_options"), dict) else False
        model = str(body.get("model") or backend.kind)
        it = backend.chat(body)
        task, done = await _first(it, FIRST_WAIT_S if stream else float("inf"))
        if done and task.exception() is not None and not isinstance(task.exception(), StopAsyncIteration):
            exc = task.exception()
            with contextlib.suppress(Exception):
                await it.aclose()  # type: ignore[attr-defined]
            if isinstance(exc, ModelError):
                return _error(exc)
            raise exc  # type: ignore[misc]
        if not stream:
            chunks = [] if isinstance(task.exception(), StopAsyncIteration) else [task.result()]
            try:
                chunks += [c async for c in it]
            except ModelError as e:
                return _error(e)
            return Response(wire.completion_from_chunks(chunks, model), media_type=MediaType.JSON)
        return Stream(_sse(it, task, include_usage), media_type="text/event-stream",
                      headers={"cache-control": "no-cache"})

    @post("/v1/audio/transcriptions", status_code=200,
          request_max_body_size=settings.stt_max_bytes + MULTIPART_OVERHEAD)
    async def transcriptions(request: Request[Any, Any, Any]) -> Response[Any]:
        try:
            form = await request.form()
        except HTTPException:
            raise
        except Exception:
            return _error(ModelError(400, "the body is not multipart/form-data", param="file"))
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return _error(ModelError(400, "`file` is required: the audio to transcribe", param="file"))
        data = await upload.read()
        if len(data) > settings.stt_max_bytes:
            return _error(ModelError(413, f"the audio file is larger than {settings.stt_max_bytes} bytes "
                                          "(LOCAL_STT_MAX_BYTES)", param="file"))
        if not data:
            return _error(ModelError(400, "the audio file is empty", param="file"))
        fmt = _field(form, "response_format") or "json"
        if fmt not in TRANSCRIPT_FORMATS:
            return _error(ModelError(400, f"response_format must be one of {', '.join(TRANSCRIPT_FORMATS)}",
                                     param="response_format"))
        try:
            temperature = float(_field(form, "temperature") or 0.0)
        except ValueError:
            return _error(ModelError(400, "temperature must be a number", param="temperature"))
        try:
            t = await backend.transcribe(data, language=_field(form, "language"), prompt=_field(form, "prompt"),
                                         temperature=temperature)
        except ModelError as e:
            return _error(e)
        if fmt == "text":
            return Response(t.text, media_type=MediaType.TEXT)
        doc: dict[str, Any] = {"text": t.text}
        if fmt == "verbose_json":
            doc.update(task="transcribe", language=t.language, duration=t.duration, segments=t.segments)
        return Response(doc, media_type=MediaType.JSON)

    @post("/v1/audio/speech", status_code=200)
    async def speech(request: Request[Any, Any, Any]) -> Response[Any]:
        try:
            body = await _json_object(request)
            text, voice, speed, fmt = _speech_request(body, settings)
        except ModelError as e:
            return _error(e)
        it = backend.speak(text, voice=voice, speed=speed, fmt=fmt)
        task, _ = await _first(it, float("inf"))
        exc = task.exception()
        if isinstance(exc, ModelError):
            return _error(exc)
        if exc is not None and not isinstance(exc, StopAsyncIteration):
            raise exc
        first = b"" if exc is not None else task.result()

        async def audio() -> AsyncIterator[bytes]:
            try:
                yield first
                async for piece in it:
                    yield piece
            finally:
                with contextlib.suppress(Exception):
                    await it.aclose()  # type: ignore[attr-defined]

        return Stream(audio(), media_type=FORMATS[fmt], headers={"x-request-id": f"speech-{secrets.token_hex(8)}"})

    return Litestar(
        route_handlers=[health, models, chat, transcriptions, speech],
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
        openapi_config=None,
        logging_config=None,  # the process's logging is ours (app.logging_setup)
        debug=False,
    )


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value.strip() else None


def _speech_request(body: dict[str, Any], settings: LocalModelSettings) -> tuple[str, str, float, str]:
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise ModelError(400, "`input` is required: the text to speak", param="input")
    if len(text) > settings.tts_max_chars:
        raise ModelError(400, f"`input` is longer than {settings.tts_max_chars} characters (LOCAL_TTS_MAX_CHARS)",
                         param="input")
    fmt = body.get("response_format", "mp3")
    if fmt not in FORMATS:
        raise ModelError(400, f"response_format must be one of {', '.join(FORMATS)}", param="response_format")
    speed = body.get("speed", 1.0)
    if not isinstance(speed, int | float) or isinstance(speed, bool) or not 0.25 <= speed <= 4.0:
        raise ModelError(400, "speed must be a number from 0.25 to 4.0", param="speed")
    voice = body.get("voice")
    return text, voice if isinstance(voice, str) else "", float(speed), str(fmt)


async def _sse(it: AsyncIterator[dict[str, Any]], first: asyncio.Task[Any], include_usage: bool) -> AsyncIterator[bytes]:
    """The SSE body: chunks as they come, keep-alive comments while none does, an error
    event if the model fails mid-stream, then [DONE]. Leaving early (the client hung
    up) closes the backend's iterator, which stops the generation."""
    pending: asyncio.Task[Any] | None = first
    try:
        while True:
            assert pending is not None
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
            if not done:
                yield wire.SSE_KEEPALIVE
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                pending = None
                break
            except ModelError as e:
                pending = None
                yield wire.sse(e.body())
                break
            pending = asyncio.ensure_future(it.__anext__())
            if item.get("usage") is not None and not item.get("choices") and not include_usage:
                continue
            yield wire.sse(item)
        yield wire.SSE_DONE
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        with contextlib.suppress(Exception):
            await it.aclose()  # type: ignore[attr-defined]
