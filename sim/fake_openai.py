"""A scripted OpenAI-compatible Chat Completions endpoint, for tests, the sim and offline runs.

Why at the HTTP boundary: the real `livekit-plugins-openai` code (request building, tool
schemas, instructions, SSE parsing) must run, so we fake the server, not the `llm.LLM`.
openai 3.x sends through `httpx2` (respx does not see it), so the fake plugs in as an
`httpx2.MockTransport` (in process) or as a tiny ASGI app (loopback, for `python -m app
dev`/`chat` offline).

Usage::

    fake = FakeOpenAI()
    fake.tool_call("record_name", {"value": "Ada"}).text("Thanks Ada!")
    llm = fake.llm()                      # livekit.plugins.openai.LLM on the fake
    ... run the session ...
    fake.requests[0].system               # the instructions the model saw
    fake.requests[0].tool_names           # the tools it was offered

Each chat completion request pops the next scripted reply; every request (including
ones that found the script empty) is captured. An empty script answers HTTP 400 — a
non-retryable error — so a test that under-scripts fails fast instead of retrying.

Like a real server, it honours a request's reply cap (`max_completion_tokens`, or
`max_tokens`): a scripted text longer than the cap is cut after that many tokens (here
a token is a whitespace-separated word) with `finish_reason: "length"`, unless the fake
was made with `honour_cap=False` (a server that ignores the parameter). Usage is
reported as a server would: prompt tokens about one per four characters of the
request's messages and tools, completion tokens one per word (or per four characters of
tool arguments), in the stream's last chunk as OpenAI sends it; a scripted reply may fix
both (`usage=(prompt, completion)`), and cached prompt tokens too
(`usage=Usage(120, 8, cached_tokens=64)`, reported as `prompt_tokens_details.cached_tokens`).

Audio (the voice sim): `POST …/audio/transcriptions` answers the next queued transcript
(`fake.transcript("...")`; an empty queue transcribes as "", as a real model does with
noise) and `POST …/audio/speech` answers raw 24 kHz 16-bit PCM (`audio/pcm`, which the
OpenAI TTS plugin decodes as is): a tone whose length is proportional to the text
(`speech_s_per_char`), or whatever `speech_audio(text) -> bytes` returns. Both are
captured (`transcriptions`, `speech_requests`). `delays` (seconds per route: `chat`,
`transcriptions`, `speech`) holds each answer back, for latency benchmarks.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx2
import openai

from app.localmodels import wire

if TYPE_CHECKING:
    from livekit.plugins.openai import LLM as OpenAILLM

__all__ = [
    "CapturedRequest",
    "CapturedTranscription",
    "FakeOpenAI",
    "ScriptedError",
    "ScriptedText",
    "ScriptedToolCalls",
    "ToolCall",
    "Usage",
]


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    """A dict (JSON-encoded on the wire) or a raw string (to script malformed JSON)."""
    call_id: str | None = None


@dataclass(frozen=True)
class Usage:
    """The token counts a reply reports (OpenAI's `usage`, in the stream's last chunk)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


ScriptedUsage = Usage | tuple[int, int] | None
"""What a scripted reply reports: `Usage`, `(prompt_tokens, completion_tokens)`, or None
(counted from the request and the reply, as a server would)."""


@dataclass(frozen=True)
class ScriptedText:
    text: str
    usage: ScriptedUsage = None
    """What to report (`ScriptedUsage`); None: counted from the request."""


@dataclass(frozen=True)
class ScriptedToolCalls:
    calls: tuple[ToolCall, ...]
    text: str = ""
    """Optional assistant text streamed before the tool calls."""
    usage: ScriptedUsage = None


@dataclass(frozen=True)
class ScriptedError:
    status: int = 500
    message: str = "scripted error"


Reply = ScriptedText | ScriptedToolCalls | ScriptedError
Responder = Callable[["CapturedRequest"], Reply]
"""Computes a reply from the request (an alternative to a fixed reply in the script)."""


@dataclass(frozen=True)
class CapturedRequest:
    """One POST /chat/completions body, with helpers for the parts tests assert on."""

    body: dict[str, Any]
    endpoint: str = "default"
    """Which fake answered it (`FakeOpenAI.name`: the sim's endpoint host)."""
    endpoint_failure: bool = False
    """Answered by the endpoint's scripted `fail_status`, not by a scripted reply."""

    @property
    def cap(self) -> int | None:
        """The reply cap the request carried (`max_completion_tokens` or `max_tokens`)."""
        for key in ("max_completion_tokens", "max_tokens"):
            value = self.body.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    @property
    def system(self) -> str | None:
        """The first system/developer message's text (the agent's instructions)."""
        for m in self.messages:
            if m.get("role") in ("system", "developer"):
                return _content_text(m.get("content"))
        return None

    @property
    def instructions(self) -> str:
        """Every system/developer message's text, in order: the agent's instructions and
        any LiveKit adds for one reply (`generate_reply(instructions=...)`)."""
        return "\n\n".join(
            _content_text(m.get("content")) or "" for m in self.messages if m.get("role") in ("system", "developer")
        )

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The `function` objects offered: [{"name", "description", "parameters", ...}]."""
        return [t.get("function", t) for t in self.body.get("tools", []) or []]

    @property
    def tool_names(self) -> list[str]:
        return [t["name"] for t in self.tools]

    def tool(self, name: str) -> dict[str, Any]:
        for t in self.tools:
            if t["name"] == name:
                return t
        raise KeyError(f"tool {name!r} not offered; offered: {self.tool_names}")

    @property
    def last_message(self) -> dict[str, Any] | None:
        msgs = self.messages
        return msgs[-1] if msgs else None

    def tool_outputs(self) -> list[str]:
        """Contents of the `tool` role messages, oldest first."""
        return [_content_text(m.get("content")) or "" for m in self.messages if m.get("role") == "tool"]


def script_asks(requests: list[CapturedRequest]) -> int:
    """How many of `requests` took a reply from the script: those an endpoint's scripted
    `fail_status` answered took none (an outage is scripted by the endpoint, not by replies)."""
    return sum(not r.endpoint_failure for r in requests)


def _content_text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


class FakeOpenAI:
    """A queue of scripted replies plus the list of captured requests. Thread-safe."""

    def __init__(
        self,
        script: Iterable[Reply | Responder] = (),
        *,
        model: str = "test",
        delays: Mapping[str, float] | None = None,
        speech_s_per_char: float = 0.06,
        speech_audio: Callable[[str], bytes] | None = None,
        honour_cap: bool = True,
        requests: list[CapturedRequest] | None = None,
        name: str = "default",
    ) -> None:
        """`requests`: the list captured requests go to (several fakes may share one, to
        keep their requests in arrival order); `name`: stamped on each of them."""
        self._script: deque[Reply | Responder] = deque(script)
        self._lock = threading.Lock()
        self._seq = 0
        self.model = model
        self.name = name
        self.honour_cap = honour_cap
        self.requests: list[CapturedRequest] = requests if requests is not None else []
        # audio (voice sim): queued transcripts, captured STT/TTS requests
        self.delays: dict[str, float] = dict(delays or {})
        self.speech_s_per_char = speech_s_per_char
        self.speech_audio = speech_audio
        self._transcripts: deque[str] = deque()
        self.transcriptions: list[CapturedTranscription] = []
        self.speech_requests: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ scripting

    def text(self, text: str, *, usage: ScriptedUsage = None) -> FakeOpenAI:
        """Queue a plain assistant text reply."""
        return self.add(ScriptedText(text, usage))

    def tool_call(
        self, name: str, arguments: Mapping[str, Any] | str | None = None, *, call_id: str | None = None
    ) -> FakeOpenAI:
        """Queue a reply consisting of one tool call."""
        return self.add(ScriptedToolCalls((ToolCall(name, arguments or {}, call_id),)))

    def tool_calls(self, *calls: ToolCall, text: str = "") -> FakeOpenAI:
        """Queue a reply with several (parallel) tool calls."""
        return self.add(ScriptedToolCalls(tuple(calls), text=text))

    def error(self, status: int = 500, message: str = "scripted error") -> FakeOpenAI:
        return self.add(ScriptedError(status, message))

    def add(self, reply: Reply | Responder) -> FakeOpenAI:
        with self._lock:
            self._script.append(reply)
        return self

    @property
    def pending(self) -> int:
        """Scripted replies not yet consumed."""
        return len(self._script)

    def clear(self) -> int:
        """Drop the scripted replies not yet consumed; returns how many were dropped
        (the sim scripts per turn and must not let one turn's leftovers leak into the next)."""
        with self._lock:
            dropped = len(self._script)
            self._script.clear()
        return dropped

    @property
    def last_request(self) -> CapturedRequest:
        return self.requests[-1]

    # ---------------------------------------------------------------------- audio

    def transcript(self, text: str) -> FakeOpenAI:
        """Queue what the next `/audio/transcriptions` request transcribes to."""
        with self._lock:
            self._transcripts.append(text)
        return self

    def clear_transcripts(self) -> int:
        with self._lock:
            n = len(self._transcripts)
            self._transcripts.clear()
        return n

    def transcribe(self, body: bytes, content_type: str) -> tuple[int, dict[str, str], bytes]:
        fields = _multipart(body, content_type)
        audio = fields.get("file", b"")
        with self._lock:
            text = self._transcripts.popleft() if self._transcripts else ""
            self.transcriptions.append(CapturedTranscription(
                model=_field_text(fields.get("model")), language=_field_text(fields.get("language")),
                audio_bytes=len(audio), audio_s=_wav_seconds(audio), text=text,
            ))
        fmt = _field_text(fields.get("response_format")) or "json"
        doc: dict[str, Any] = {"text": text}
        if fmt == "verbose_json":
            doc.update(language="english", duration=_wav_seconds(audio), segments=[])
        return 200, {"content-type": "application/json"}, json.dumps(doc).encode()

    def speak(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        text = str(body.get("input", ""))
        with self._lock:
            self.speech_requests.append(body)
        if self.speech_audio is not None:
            pcm = self.speech_audio(text)
        else:
            pcm = speech_tone(max(0.2, len(text) * self.speech_s_per_char))
        return 200, {"content-type": "audio/pcm", "x-request-id": f"speech-{len(self.speech_requests)}"}, pcm

    def route(self, method: str, path: str, body: bytes, content_type: str) -> tuple[int, dict[str, str], bytes]:
        """Answer one request (every route but the chat completions' JSON parsing)."""
        if method == "GET" and path.endswith("/models"):
            return 200, {"content-type": "application/json"}, b'{"object":"list","data":[]}'
        if method == "POST" and path.endswith("/audio/transcriptions"):
            return self.transcribe(body, content_type)
        if method == "POST" and (path.endswith("/chat/completions") or path.endswith("/audio/speech")):
            try:
                doc = json.loads(body or b"{}")
            except ValueError:
                doc = None
            if not isinstance(doc, dict):
                return 400, {"content-type": "application/json"}, b'{"error":{"message":"bad json"}}'
            return self.speak(doc) if path.endswith("/audio/speech") else self.respond(doc)
        return 404, {"content-type": "application/json"}, json.dumps({"error": {"message": f"no route {path}"}}).encode()

    def delay_for(self, path: str) -> float:
        for key in ("transcriptions", "speech", "chat"):
            if key in path:
                return self.delays.get(key, 0.0)
        return 0.0

    # ------------------------------------------------------------------- plumbing

    def respond(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """The core: capture a request body, pop the next reply, encode it."""
        req = CapturedRequest(body, self.name)
        with self._lock:
            self.requests.append(req)
            item = self._script.popleft() if self._script else None
            self._seq += 1
            seq = self._seq
        if item is None:
            item = ScriptedError(400, "FakeOpenAI: no scripted reply left for this request")
        reply = item(req) if callable(item) else item
        if isinstance(reply, ScriptedError):
            err = {"error": {"message": reply.message, "type": "fake_error", "code": None}}
            return reply.status, {"content-type": "application/json"}, json.dumps(err).encode()
        finish = None
        if self.honour_cap and req.cap is not None and isinstance(reply, ScriptedText):
            words = wire.text_pieces(reply.text)
            if len(words) > req.cap:
                reply, finish = ScriptedText("".join(words[: req.cap]).rstrip(), reply.usage), "length"
        usage = _usage(req, reply, cut=req.cap if finish else None)
        stream = bool(body.get("stream"))
        if not stream:
            return 200, {"content-type": "application/json"}, _completion(reply, seq, self.model, usage, finish)
        return 200, {"content-type": "text/event-stream"}, _sse(reply, seq, self.model, usage, finish)

    def fail(self, request: httpx2.Request, status: int) -> httpx2.Response:
        """Capture a chat request and answer it with HTTP `status`, leaving the script alone."""
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            body = {}
        with self._lock:
            self.requests.append(CapturedRequest(body if isinstance(body, dict) else {}, self.name, endpoint_failure=True))
        err = {"error": {"message": f"scripted failure ({status})", "type": "fake_error", "code": None}}
        return httpx2.Response(status, json=err)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        """Answer one request whose body has been read (`sim.endpoints` routes to this)."""
        return self._handle(request)

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and request.url.path.endswith("/models"):
            return httpx2.Response(200, json={"object": "list", "data": []})
        path = request.url.path
        if request.method == "POST" and (path.endswith("/audio/transcriptions") or path.endswith("/audio/speech")):
            status, headers, content = self.route("POST", path, request.content, request.headers.get("content-type", ""))
            return httpx2.Response(status, headers=headers, content=content)
        if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
            return httpx2.Response(404, json={"error": {"message": f"no route {request.url.path}"}})
        status, headers, content = self.respond(json.loads(request.content or b"{}"))
        return httpx2.Response(status, headers=headers, content=content)

    async def _ahandle(self, request: httpx2.Request) -> httpx2.Response:
        delay = self.delay_for(request.url.path)
        if delay > 0:
            await asyncio.sleep(delay)
        return self._handle(request)

    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self._ahandle if self.delays else self._handle)

    def client(self, *, base_url: str = "http://fake/v1", api_key: str = "sk-test") -> openai.AsyncClient:
        return openai.AsyncClient(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=self.transport()),
        )

    def llm(self, model: str | None = None) -> OpenAILLM:
        """A `livekit.plugins.openai.LLM` talking to this fake (imported lazily)."""
        from livekit.plugins import openai as lk_openai

        return lk_openai.LLM(model=model or self.model, client=self.client())

    # ------------------------------------------------------------------------ ASGI

    def asgi_app(self) -> Callable[..., Awaitable[None]]:
        """A raw ASGI app: POST …/chat/completions and GET …/models, for loopback use."""

        async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
            if scope["type"] == "lifespan":
                while True:
                    msg = await receive()
                    if msg["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif msg["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            if scope["type"] != "http":
                return
            chunks: list[bytes] = []
            more = True
            while more:
                msg = await receive()
                chunks.append(msg.get("body", b""))
                more = msg.get("more_body", False)
            path, method = scope["path"], scope["method"]
            if method == "POST" and (path.endswith("/audio/transcriptions") or path.endswith("/audio/speech")):
                if (delay := self.delay_for(path)) > 0:
                    await asyncio.sleep(delay)
                ctype = next((v.decode() for k, v in scope.get("headers", []) if k.lower() == b"content-type"), "")
                status, headers, content = self.route(method, path, b"".join(chunks), ctype)
            elif method == "GET" and path.endswith("/models"):
                status, headers, content = 200, {"content-type": "application/json"}, b'{"object":"list","data":[]}'
            elif method == "POST" and path.endswith("/chat/completions"):
                if (delay := self.delay_for(path)) > 0:
                    await asyncio.sleep(delay)
                try:
                    body = json.loads(b"".join(chunks) or b"{}")
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    status, headers, content = self.respond(body)
                else:
                    status, headers, content = 400, {"content-type": "application/json"}, b'{"error":{"message":"bad json"}}'
            else:
                status, headers, content = 404, {"content-type": "application/json"}, b'{"error":{"message":"not found"}}'
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
                }
            )
            await send({"type": "http.response.body", "body": content})

        return app


# ------------------------------------------------------------------------ encoding


def _chunk(seq: int, model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return wire.chunk(f"chatcmpl-fake-{seq}", model, delta, finish)


def _args_json(call: ToolCall) -> str:
    return call.arguments if isinstance(call.arguments, str) else json.dumps(dict(call.arguments))


def _usage(req: CapturedRequest, reply: ScriptedText | ScriptedToolCalls, *, cut: int | None) -> dict[str, Any]:
    cached = 0
    if isinstance(reply.usage, Usage):
        prompt, completion, cached = reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.cached_tokens
    elif reply.usage is not None:
        prompt, completion = reply.usage
    else:
        prompt = max(1, len(json.dumps([req.messages, req.body.get("tools") or []])) // 4)
        if isinstance(reply, ScriptedText):
            completion = len(wire.text_pieces(reply.text))
        else:
            completion = len(wire.text_pieces(reply.text)) + sum(max(1, len(_args_json(c)) // 4) for c in reply.calls)
        completion = max(1, completion)
    if cut is not None:
        completion = cut
    doc: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached:
        doc["prompt_tokens_details"] = {"cached_tokens": cached}
    return doc


def _sse(reply: ScriptedText | ScriptedToolCalls, seq: int, model: str, usage: dict[str, Any], finish: str | None) -> bytes:
    chunks: list[dict[str, Any]] = []
    if isinstance(reply, ScriptedText):
        chunks.append(_chunk(seq, model, {"role": "assistant", "content": ""}))
        for word in wire.text_pieces(reply.text):
            chunks.append(_chunk(seq, model, {"content": word}))
        chunks.append(_chunk(seq, model, {}, finish or "stop"))
    else:
        chunks.append(_chunk(seq, model, {"role": "assistant", "content": reply.text or None}))
        for i, call in enumerate(reply.calls):
            call_id = call.call_id or f"call_{seq}_{i}"
            head = {"index": i, "id": call_id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            chunks.append(_chunk(seq, model, {"tool_calls": [head]}))
            args = _args_json(call)
            for j in range(0, len(args), 16):  # stream arguments in fragments, as servers do
                chunks.append(_chunk(seq, model, {"tool_calls": [{"index": i, "function": {"arguments": args[j : j + 16]}}]}))
        chunks.append(_chunk(seq, model, {}, "tool_calls"))
    chunks.append(wire.usage_chunk(f"chatcmpl-fake-{seq}", model, usage))
    return b"".join(wire.sse(c) for c in chunks) + wire.SSE_DONE


def _completion(
    reply: ScriptedText | ScriptedToolCalls, seq: int, model: str, usage: dict[str, Any], cut: str | None
) -> bytes:
    if isinstance(reply, ScriptedText):
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        finish = cut or "stop"
    else:
        message = {
            "role": "assistant",
            "content": reply.text or None,
            "tool_calls": [
                {
                    "id": c.call_id or f"call_{seq}_{i}",
                    "type": "function",
                    "function": {"name": c.name, "arguments": _args_json(c)},
                }
                for i, c in enumerate(reply.calls)
            ],
        }
        finish = "tool_calls"
    return json.dumps(
        {
            "id": f"chatcmpl-fake-{seq}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
    ).encode()


# --------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class CapturedTranscription:
    """One POST /audio/transcriptions: what the STT plugin sent, and what it was told."""

    model: str | None
    language: str | None
    audio_bytes: int
    audio_s: float
    """Duration of the uploaded WAV (0 if it was not a WAV)."""
    text: str


SPEECH_RATE = wire.SPEECH_RATE
"""The OpenAI TTS plugin decodes every answer at 24 kHz mono."""


def speech_tone(seconds: float, *, freq: float = 220.0) -> bytes:
    """`seconds` (rounded to 10 ms) of a quiet sine as 24 kHz s16le PCM, with 10 ms fades."""
    return _tone(max(1, round(seconds * 100)), freq)


@functools.lru_cache(maxsize=512)
def _tone(centis: int, freq: float) -> bytes:
    import numpy as np

    n = centis * SPEECH_RATE // 100
    fade = min(n // 2, SPEECH_RATE // 100)
    gain = np.ones(n)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        gain[:fade], gain[-fade:] = ramp, ramp[::-1]
    wave_ = 8000 * gain * np.sin(2 * np.pi * freq * np.arange(n) / SPEECH_RATE)
    return wave_.astype("<i2").tobytes()


def _multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by field name (the values as bytes)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    if "multipart/form-data" not in content_type:
        return {}
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    out: dict[str, bytes] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            out[str(name)] = part.get_payload(decode=True) or b""
    return out


def _field_text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None


def _wav_seconds(data: bytes) -> float:
    import io
    import wave

    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError, ValueError):
        return 0.0
