"""An agent's LLM, STT and TTS, built from its config's provider chains.

Each of `llm`, `stt`, `tts` is a primary provider plus ordered `fallbacks`. A chain of
one is the plugin itself; a longer chain is LiveKit's own `FallbackAdapter` over the
members (tried in order; a member that errs or times out is marked unavailable and
probed in the background until it answers again). Every member gets its own OpenAI
client whose transport enforces that member's timeouts (`app.agents.provider_timeouts`),
so "first token within 6 s" means the next member is asked after 6 s.

When every member fails, the adapter raises LiveKit's `APIConnectionError`, the same
LLM/STT/TTS error a single provider raises: the session handles it through its one
error path. Which member served each turn is what LiveKit writes into each message's
`metrics` (`llm_metadata`, `tts_metadata`, `stt_metadata`): the worker counts it on the
session record; a member becoming unavailable or recovering is recorded as an event.

The reply cap is sent as `max_completion_tokens` to OpenAI itself and as `max_tokens`
(in `extra_body`) to any other OpenAI-compatible server (`MaxTokensParam`).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai
from livekit.agents import APIConnectOptions, llm as lk_llm, stt as lk_stt, tts as lk_tts, vad as lk_vad
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.plugins import openai as lk_openai

from app.agents.context import SessionContext
from app.agents.provider_timeouts import Limits, TimeoutTransport
from app.agents.reply_guard import ReplyLimits
from app.domain import AgentConfig, AudioTimeouts, LLMTimeouts
from app.domain.models import MaxTokensParam, SessionEventKind
from app.settings import DEFAULT_REPLY_MAX_TOKENS, Settings

log = logging.getLogger(__name__)

PLACEHOLDER_API_KEY = "sk-unset"
"""Sent when no key is configured, so keyless OpenAI-compatible servers still work."""

OPENAI_HOSTS = ("api.openai.com",)
AZURE_OPENAI_SUFFIX = ".openai.azure.com"

CHAIN_RETRY = APIConnectOptions(max_retry=1, retry_interval=0.5, timeout=10.0)
"""The session's retry of a whole failed LLM chain: once, half a second later. A chain
already hands a failing provider's request to the next one, so LiveKit's default (three
retries two seconds apart) would only add dead air before the caller hears about it."""

_tls_context: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


def shared_tls_context() -> ssl.SSLContext:
    """The process's one verifying TLS context for model clients.

    Why: left to themselves, the OpenAI plugins build a new HTTP client, and with it a
    new TLS context, for every LLM/STT/TTS object; loading the CA bundle costs ~15-40 ms
    of CPU each, so a voice session start paid it three times (measured by
    `sim.bench.session_start`). An `SSLContext` is safe to share across threads and event
    loops; clients (whose connection pools belong to a loop) stay per session.
    """
    global _tls_context
    if _tls_context is None:
        with _tls_lock:
            if _tls_context is None:
                _tls_context = httpx2.create_ssl_context()  # same trust rules as httpx2's default
    return _tls_context


def session_connect_options() -> SessionConnectOptions:
    """The `AgentSession(conn_options=...)` every session is built with (`CHAIN_RETRY`)."""
    return SessionConnectOptions(llm_conn_options=CHAIN_RETRY)


def is_openai(base_url: str | None) -> bool:
    """Does this base URL reach OpenAI's own API (None: the SDK's default, OpenAI)?"""
    if not base_url:
        return True
    host = (urlsplit(base_url).hostname or "").lower()
    return host in OPENAI_HOSTS or host.endswith(AZURE_OPENAI_SUFFIX)


def cap_kwargs(max_tokens: int, param: MaxTokensParam, base_url: str | None) -> dict[str, Any]:
    """The plugin arguments that send the reply cap the way this server expects it."""
    if param == "auto":
        param = "max_completion_tokens" if is_openai(base_url) else "max_tokens"
    if param == "max_completion_tokens":
        return {"max_completion_tokens": max_tokens}
    return {"extra_body": {"max_tokens": max_tokens}}


def _limits(t: LLMTimeouts | AudioTimeouts) -> Limits:
    first = t.first_token_s if isinstance(t, LLMTimeouts) else t.first_byte_s
    return Limits(connect_s=t.connect_s, first_byte_s=first, total_s=t.total_s)


@dataclass(frozen=True)
class Clients:
    """How a session's model clients are made. `llm`/`stt`/`tts`: one client every
    member of that chain uses instead (tests and the sim's scripted endpoints; never
    closed here). `transport`: the HTTP transport every client built here sends through
    instead of the network (the sim's endpoints, addressed by each member's base URL)."""

    settings: Settings
    api_key: str
    llm: openai.AsyncClient | None = None
    stt: openai.AsyncClient | None = None
    tts: openai.AsyncClient | None = None
    transport: httpx2.AsyncBaseTransport | None = None

    def base_url(self, configured: object) -> str | None:
        return str(configured) if configured else self.settings.openai_base_url

    def build(self, base_url: str | None, limits: Limits, ctx: SessionContext) -> openai.AsyncClient:
        """A client configured as the plugins configure their own, but on the shared TLS
        context and with this provider's limits; closed with the session (a plugin never
        closes a client it was given)."""
        inner = self.transport or httpx2.AsyncHTTPTransport(
            verify=shared_tls_context(),
            limits=httpx2.Limits(max_connections=50, max_keepalive_connections=50, keepalive_expiry=120),
        )
        client = openai.AsyncClient(
            api_key=self.api_key,
            base_url=base_url,
            max_retries=0,
            http_client=httpx2.AsyncClient(
                transport=TimeoutTransport(inner, limits),
                timeout=httpx2.Timeout(limits.first_byte_s, connect=limits.connect_s),
                follow_redirects=True,
            ),
        )
        ctx.add_closer(client.close)
        return client


def reply_limits(config: AgentConfig, settings: Settings) -> ReplyLimits:
    return ReplyLimits(
        max_tokens=config.llm.max_tokens or settings.default_llm_max_tokens,
        repetition_limit=config.llm.repetition_limit or None,
    )


def _served(kind: str, recorder_event: Callable[[SessionEventKind, str], None]) -> Callable[[Any], None]:
    def on_change(ev: Any) -> None:
        model = getattr(ev, kind)
        what = f"{kind} {model.provider}/{model.model}"
        recorder_event("provider_recovered" if ev.available else "provider_unavailable", what)

    return on_change


# --------------------------------------------------------------------------------- LLM


def build_llm(config: AgentConfig, ctx: SessionContext, clients: Clients) -> lk_llm.LLM[Any]:
    cfg = config.llm
    cap = reply_limits(config, clients.settings).max_tokens
    members: list[lk_llm.LLM[Any]] = []
    chain = [(cfg.model, cfg.base_url, cfg.timeouts, cfg.max_tokens_param)]
    chain += [(f.model, f.base_url, f.timeouts or cfg.timeouts, f.max_tokens_param or cfg.max_tokens_param)
              for f in cfg.fallbacks]
    for model, base_url, timeouts, param in chain:
        client = clients.llm
        if client is None:
            client = clients.build(clients.base_url(base_url), _limits(timeouts), ctx)
        kwargs: dict[str, Any] = {"model": model or clients.settings.default_llm_model}
        if cfg.temperature is not None:
            kwargs["temperature"] = cfg.temperature
        kwargs.update(cap_kwargs(cap, param, str(client.base_url)))
        member = lk_openai.LLM(client=client, **kwargs)
        ctx.add_closer(member.aclose)  # closers run newest first: the model, then its client
        members.append(member)
    if len(members) == 1:
        return members[0]
    adapter = lk_llm.FallbackAdapter(
        members,
        # each member's own limits apply on its client; this bounds the attempt as a whole
        attempt_timeout=max(t.total_s for _, _, t, _ in chain),
        max_retry_per_llm=0,
        retry_interval=0.5,
    )
    adapter.on("llm_availability_changed", _served("llm", ctx.recorder.record_event))
    ctx.add_closer(adapter.aclose)
    return adapter


# --------------------------------------------------------------------------------- STT


def build_stt(
    config: AgentConfig, ctx: SessionContext, clients: Clients, vad: lk_vad.VAD | None
) -> tuple[lk_stt.STT[Any], bool]:
    """The agent's STT, and whether every member is a non-streaming (batch) STT, which
    the session's segmenter (`app.agents.audio`) drives through `recognize()`. A chain
    needs `vad` (LiveKit's adapter requires it for non-streaming members); without one
    only the primary is used."""
    cfg = config.stt
    chain = [(cfg.model, cfg.base_url, cfg.timeouts)]
    chain += [(f.model, f.base_url, f.timeouts or cfg.timeouts) for f in cfg.fallbacks]
    if len(chain) > 1 and vad is None:
        log.warning("agent %s: STT fallbacks need a VAD; using the primary only", config.agent_id)
        chain = chain[:1]
    members: list[lk_stt.STT[Any]] = []
    for model, base_url, timeouts in chain:
        client = clients.stt or clients.build(clients.base_url(base_url), _limits(timeouts), ctx)
        member = lk_openai.STT(
            model=model or clients.settings.default_stt_model, language=cfg.language, client=client,
        )
        ctx.add_closer(member.aclose)
        members.append(member)
    batch = all(not m.capabilities.streaming for m in members)
    if len(members) == 1:
        return members[0], batch
    # LiveKit wraps each non-streaming member in its own StreamAdapter (with `vad`); those
    # never stream here: the session's segmenter calls the adapter's `recognize`.
    adapter = lk_stt.FallbackAdapter(members, vad=vad, attempt_timeout=max(t.total_s for _, _, t in chain),
                                     max_retry_per_stt=0, retry_interval=0.5)
    adapter.on("stt_availability_changed", _served("stt", ctx.recorder.record_event))
    ctx.add_closer(adapter.aclose)
    return adapter, batch


# --------------------------------------------------------------------------------- TTS


def build_tts(config: AgentConfig, ctx: SessionContext, clients: Clients) -> lk_tts.TTS[Any]:
    cfg = config.tts
    chain = [(cfg.model, cfg.voice, cfg.base_url, cfg.timeouts)]
    chain += [(f.model, f.voice or cfg.voice, f.base_url, f.timeouts or cfg.timeouts) for f in cfg.fallbacks]
    members: list[lk_tts.TTS[Any]] = []
    for model, voice, base_url, timeouts in chain:
        kwargs: dict[str, Any] = {
            "model": model or clients.settings.default_tts_model,
            "voice": voice or clients.settings.default_tts_voice,
            "speed": cfg.speed,
        }
        if cfg.instructions:
            kwargs["instructions"] = cfg.instructions
        client = clients.tts or clients.build(clients.base_url(base_url), _limits(timeouts), ctx)
        member = lk_openai.TTS(client=client, **kwargs)
        ctx.add_closer(member.aclose)
        members.append(member)
    if len(members) == 1:
        return members[0]
    adapter = lk_tts.FallbackAdapter(members, max_retry_per_tts=0)
    adapter.on("tts_availability_changed", _served("tts", ctx.recorder.record_event))
    ctx.add_closer(adapter.aclose)
    return adapter


__all__ = [
    "CHAIN_RETRY",
    "DEFAULT_REPLY_MAX_TOKENS",
    "PLACEHOLDER_API_KEY",
    "Clients",
    "build_llm",
    "build_stt",
    "build_tts",
    "cap_kwargs",
    "is_openai",
    "reply_limits",
    "session_connect_options",
    "shared_tls_context",
]
