"""The model a simulated session talks to: scripted (offline) or real (live).

Both give the factory an `openai.AsyncClient` (so the real `livekit-plugins-openai` LLM
builds every request) and expose the captured request bodies as `CapturedRequest`s, so
"what the LLM received" is checked the same way in both modes.

- `ScriptedLLM`: a `FakeOpenAI` per session behind an in-process `httpx2.MockTransport`;
  each step queues its scripted replies and must consume all of them.
- `LiveLLM`: a real OpenAI-compatible endpoint (`OPENAI_API_KEY`, optional
  `OPENAI_BASE_URL`), reached through `RecordingTransport`, which copies each chat
  completion request body before sending it on. Scripted replies are ignored.
  `SIM_LIVE=local` is the local model server instead (`sim.local_models`, the `local`
  extra): no key, and no judge (`intent:` checks are reported as not judged: a 135M
  model cannot grade another's reply).

Both honour a turn's `tool_choice:` (set on the turn's first chat request by the
transport, as `session.generate_reply(tool_choice=...)` would send it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2
import openai

from sim.fake_openai import (
    CapturedRequest,
    FakeOpenAI,
    ScriptedError,
    ScriptedText,
    ScriptedToolCalls,
    ToolCall,
    Usage,
)
from sim.scenario import DEFAULT_ENDPOINT, LLMReply

DEFAULT_LIVE_MODEL = "gpt-4.1-mini"
NO_KEY = (
    "SIM_LIVE=1 runs the scenarios against a real model and needs OPENAI_API_KEY "
    "(optionally OPENAI_BASE_URL, SIM_LIVE_MODEL, SIM_JUDGE_MODEL); none is set"
)


NO_LOCAL = "SIM_LIVE=local runs the scenarios against the local model server and needs the `local` extra (uv sync --extra local)"


def live_mode(environ: Mapping[str, str] | None = None) -> bool:
    """SIM_LIVE=1 (or true/yes/on), or SIM_LIVE=local, asks for live mode."""
    env = os.environ if environ is None else environ
    return env.get("SIM_LIVE", "").strip().lower() in ("1", "true", "yes", "on", "local")


def live_local(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("SIM_LIVE", "").strip().lower() == "local"


def live_skip_reason(environ: Mapping[str, str] | None = None) -> str | None:
    """Why a scenario must be skipped here: only live mode without a model, ever."""
    if live_local(environ):
        from sim.local_models import local_extra_installed

        return None if local_extra_installed() else NO_LOCAL
    if live_mode(environ) and LiveConfig.from_env(environ) is None:
        return NO_KEY
    return None


def tool_choice_param(choice: str) -> str | dict[str, Any]:
    """A scenario's `tool_choice:` as the Chat Completions parameter."""
    if choice in ("auto", "required", "none"):
        return choice
    return {"type": "function", "function": {"name": choice}}


class SessionLLM(Protocol):
    requests: list[CapturedRequest]

    def client(self) -> openai.AsyncClient: ...

    def script(self, replies: list[LLMReply]) -> None: ...

    @property
    def pending(self) -> int: ...

    def drop_pending(self) -> int: ...

    def force_tool_choice(self, choice: str | None) -> None:
        """The next chat request (the turn's first) carries this tool_choice."""
        ...

    async def aclose(self) -> None: ...


def to_reply(r: LLMReply) -> ScriptedText | ScriptedToolCalls | ScriptedError:
    usage = (
        Usage(r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.cached_tokens) if r.usage is not None else None
    )
    if r.error is not None:
        return ScriptedError(r.error, "scripted error")
    if r.tool is not None:
        return ScriptedToolCalls((ToolCall(r.tool, r.args if r.args is not None else {}),), usage=usage)
    if r.tools is not None:
        return ScriptedToolCalls(tuple(ToolCall(t.name, t.args) for t in r.tools), text=r.text or "", usage=usage)
    return ScriptedText(r.text or "", usage=usage)


class ScriptedLLM:
    """One `FakeOpenAI` per scripted endpoint (`sim.endpoints`), created on first use;
    their requests go to one list, in arrival order."""

    def __init__(self, model: str = "sim-model") -> None:
        self._model = model
        self.requests: list[CapturedRequest] = []
        self.fakes: dict[str, FakeOpenAI] = {}
        self.fake = self.endpoint(DEFAULT_ENDPOINT)
        self._client: openai.AsyncClient | None = None
        self._transport = RecordingTransport(self.fake.transport(), None)

    def endpoint(self, name: str) -> FakeOpenAI:
        """The fake scripting endpoint `name`'s chat completions."""
        fake = self.fakes.get(name)
        if fake is None:
            fake = self.fakes[name] = FakeOpenAI(model=self._model, requests=self.requests, name=name)
        return fake

    def client(self) -> openai.AsyncClient:
        """A client on the default endpoint alone (callers that inject one LLM client)."""
        if self._client is None:
            self._client = openai.AsyncClient(api_key="sk-test", base_url="http://fake/v1", max_retries=0,
                                              http_client=httpx2.AsyncClient(transport=self._transport))
        return self._client

    def force_tool_choice(self, choice: str | None) -> None:
        self._transport.tool_choice = choice

    def script(self, replies: list[LLMReply]) -> None:
        for r in replies:
            self.endpoint(r.endpoint or DEFAULT_ENDPOINT).add(to_reply(r))

    @property
    def pending(self) -> int:
        return sum(f.pending for f in self.fakes.values())

    def drop_pending(self) -> int:
        return sum(f.clear() for f in self.fakes.values())

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


class RecordingTransport(httpx2.AsyncBaseTransport):
    """Forwards to `inner`, keeping a copy of every chat completion request body (when
    given a `sink`), and setting `tool_choice` on the next one that offers tools."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, sink: list[CapturedRequest] | None) -> None:
        self.inner = inner
        self.sink = sink
        self._first: str | None = None
        self._rest: str | None = None

    @property
    def tool_choice(self) -> str | None:
        return self._first

    @tool_choice.setter
    def tool_choice(self, choice: str | None) -> None:
        """Set at each turn's start: its first request that offers tools carries `choice`;
        after a named tool or `required`, the turn's later requests (the reply to the tool's
        output) carry `none`, the shape of the turn's script (that tool, then words). A
        small model otherwise goes on calling tools of its own choosing in those steps."""
        self._first = choice
        self._rest = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST" and request.url.path.endswith("/chat/completions"):
            body = await request.aread()
            try:
                doc = json.loads(body or b"{}")
            except ValueError:
                doc = {}
            choice = self._first if self._first is not None else self._rest
            if isinstance(doc, dict) and choice is not None and doc.get("tools"):
                doc["tool_choice"] = tool_choice_param(choice)
                if self._first is not None:
                    self._rest = None if self._first in ("auto", "none") else "none"
                    self._first = None
                headers = [(k, v) for k, v in request.headers.items() if k.lower() != "content-length"]
                request = httpx2.Request(request.method, request.url, headers=headers,
                                         content=json.dumps(doc).encode(), extensions=request.extensions)
            if isinstance(doc, dict) and self.sink is not None:
                self.sink.append(CapturedRequest(doc))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass(frozen=True)
class LiveConfig:
    api_key: str
    base_url: str | None = None
    model: str = DEFAULT_LIVE_MODEL
    judge_model: str = DEFAULT_LIVE_MODEL
    judge: bool = True
    """False: `intent:` checks are reported as not judged (the model is too small to judge)."""
    timeout_s: float = 60.0

    @classmethod
    def local(cls) -> LiveConfig:
        """The local model server of this process (started on first use)."""
        from sim.local_models import local_model_server

        server = local_model_server()
        # a cold prompt of a long agent prompt takes tens of seconds on 2 busy cores
        return cls(api_key="sk-local", base_url=server.base_url, model="local-llm", judge_model="local-llm",
                   judge=False, timeout_s=180.0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LiveConfig | None:
        """From OPENAI_API_KEY / OPENAI_BASE_URL / SIM_LIVE_MODEL / SIM_JUDGE_MODEL; None without a key.
        SIM_LIVE=local: the local model server (`local()`)."""
        if live_local(environ):
            return cls.local()
        env = os.environ if environ is None else environ
        key = (env.get("OPENAI_API_KEY") or "").strip()
        if not key:
            return None
        model = env.get("SIM_LIVE_MODEL") or DEFAULT_LIVE_MODEL
        return cls(
            api_key=key,
            base_url=env.get("OPENAI_BASE_URL") or None,
            model=model,
            judge_model=env.get("SIM_JUDGE_MODEL") or model,
        )

    def openai_client(self, sink: list[CapturedRequest] | None = None, *,
                      transport: httpx2.AsyncBaseTransport | None = None) -> openai.AsyncClient:
        transport = transport or httpx2.AsyncHTTPTransport()
        if sink is not None:
            transport = RecordingTransport(transport, sink)
        return openai.AsyncClient(
            api_key=self.api_key,
            base_url=self.base_url,
            max_retries=2,
            http_client=httpx2.AsyncClient(transport=transport, timeout=self.timeout_s),
        )

    def judge_llm(self) -> Any:
        if not self.judge:
            return None
        from livekit.plugins import openai as lk_openai

        return lk_openai.LLM(model=self.judge_model, client=self.openai_client())


class LiveLLM:
    def __init__(self, config: LiveConfig) -> None:
        self.config = config
        self.requests: list[CapturedRequest] = []
        self._client: openai.AsyncClient | None = None
        self._transport: RecordingTransport | None = None

    def client(self) -> openai.AsyncClient:
        if self._client is None:
            self._transport = RecordingTransport(httpx2.AsyncHTTPTransport(), self.requests)
            self._client = self.config.openai_client(transport=self._transport)
        return self._client

    def force_tool_choice(self, choice: str | None) -> None:
        self.client()
        if self._transport is not None:
            self._transport.tool_choice = choice

    def script(self, replies: list[LLMReply]) -> None:
        """Scripted replies are ignored in live mode: the real model answers."""

    @property
    def pending(self) -> int:
        return 0

    def drop_pending(self) -> int:
        return 0

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
