"""`AgentFactory`: an `AgentConfig` + a session's context → a ready `BaseAgent`.

One factory per process (the worker builds it in prewarm, `chat` and the sim build
their own); `create_agent` is synchronous and does no I/O, so a session start costs
only prompt rendering and object construction. Handoff targets are built by the same
factory from inside the `transfer` tool, with the same `SessionContext`.

Prompt rendering: values are untrusted (they come from session metadata). Templates
may only contain plain `{name}` placeholders of declared variables (checked at write
time by `template_fields`, and again here), so `str.format_map` over a dict of plain
strings inserts each value literally — no attribute access, indexing or format specs
can be reached from a value, and a value containing `{x}` stays `{x}`.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import openai
from livekit.agents import NOT_GIVEN, NotGivenOr, llm as lk_llm, stt as lk_stt, vad as lk_vad
from livekit.plugins import openai as lk_openai

from app.agents.audio import session_audio_models
from app.agents.base import BaseAgent
from app.agents.context import ConfigSource, SessionContext
from app.agents.tool_registry import build_tools
from app.domain import AgentConfig, PromptConfig, template_fields
from app.domain.models import MAX_VARIABLE_VALUE_CHARS
from app.settings import Settings

PLACEHOLDER_API_KEY = "sk-unset"
"""Sent when no key is configured, so keyless OpenAI-compatible servers still work."""

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


class MissingVariables(ValueError):
    """A required prompt variable has no value and no default; the session can't start
    with this agent (the worker falls back, `transfer` refuses)."""

    def __init__(self, agent_id: str, names: Sequence[str]) -> None:
        self.agent_id = agent_id
        self.names: tuple[str, ...] = tuple(sorted(names))
        super().__init__(f"agent {agent_id!r} requires variable(s): {', '.join(self.names)}")


@dataclass(frozen=True)
class RenderedPrompt:
    instructions: str
    greeting: str | None


def prompt_values(prompt: PromptConfig, variables: Mapping[str, object], *, agent_id: str = "") -> dict[str, str]:
    """The value of every declared variable: the session's, else the default, else "".

    Undeclared session variables are ignored; non-string or oversized values count as
    not given. Raises `MissingVariables` naming every required variable left empty.
    """
    values: dict[str, str] = {}
    missing: list[str] = []
    for name, spec in prompt.variables.items():
        given = variables.get(name)
        if isinstance(given, str) and len(given) <= MAX_VARIABLE_VALUE_CHARS:
            values[name] = given
        elif spec.default is not None:
            values[name] = spec.default
        elif spec.required:
            missing.append(name)
        else:
            values[name] = ""
    if missing:
        raise MissingVariables(agent_id, missing)
    return values


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Fill `{name}` placeholders; raises ValueError on anything but plain declared names."""
    names = template_fields(template)
    unknown = names - values.keys()
    if unknown:
        raise ValueError(f"template uses undeclared variable(s): {', '.join(sorted(unknown))}")
    return template.format_map({n: str(values[n]) for n in names})


def render_prompt(config: AgentConfig, variables: Mapping[str, object]) -> RenderedPrompt:
    prompt = config.prompt_config
    values = prompt_values(prompt, variables, agent_id=config.agent_id)
    greeting = render_template(prompt.greeting, values) if prompt.greeting else None
    return RenderedPrompt(render_template(prompt.instructions, values), greeting or None)


class AgentFactory:
    def __init__(
        self,
        settings: Settings,
        configs: ConfigSource,
        *,
        vad: lk_vad.VAD | None = None,
        llm_client: openai.AsyncClient | None = None,
        http_client: httpx.AsyncClient | None = None,
        stt_client: openai.AsyncClient | None = None,
        tts_client: openai.AsyncClient | None = None,
    ) -> None:
        """`vad`: the process's shared VAD (loaded once in prewarm), used in audio mode.
        `llm_client`: an OpenAI client every agent's LLM uses instead of building one
        (tests and the sim point it at a scripted endpoint). `http_client`: shared
        client for HTTP tools (default: one lazily created per event loop).
        `stt_client` / `tts_client`: the same as `llm_client` for the audio models
        (the voice sim points them at a scripted `/audio/transcriptions` and
        `/audio/speech`); never closed by the factory, like `llm_client`."""
        self._settings = settings
        self._configs = configs
        self._vad = vad
        self._llm_client = llm_client
        self._stt_client = stt_client
        self._tts_client = tts_client
        self._http_client = http_client
        key = settings.openai_api_key
        self._api_key = key.get_secret_value() if key is not None else PLACEHOLDER_API_KEY

    @property
    def configs(self) -> ConfigSource:
        return self._configs

    def create_agent(
        self,
        config: AgentConfig,
        ctx: SessionContext,
        *,
        extra_tools: Sequence[lk_llm.Tool] = (),
        chat_ctx: lk_llm.ChatContext | None = None,
        reply_on_enter: bool = False,
    ) -> BaseAgent:
        """Build the agent; raises `MissingVariables` (a ValueError) before building
        anything when a required variable is missing.

        `chat_ctx`: history to start from (a handoff). `reply_on_enter`: answer the
        conversation on entering when there is no greeting (set for handoff targets).
        """
        prompt = render_prompt(config, ctx.variables)

        def build_target(target: AgentConfig, history: lk_llm.ChatContext) -> BaseAgent:
            return self.create_agent(target, ctx, chat_ctx=history, reply_on_enter=True)

        tools: list[lk_llm.Tool | lk_llm.Toolset] = [
            *build_tools(
                config,
                ctx,
                configs=self._configs,
                build_agent=build_target,
                http_client=self._http_client,
            ),
            *extra_tools,
        ]
        llm = self._build_llm(config, ctx)
        if not ctx.audio:
            return BaseAgent(
                config, instructions=prompt.instructions, greeting=prompt.greeting, tools=tools,
                chat_ctx=chat_ctx, reply_on_enter=reply_on_enter, llm=llm,
            )
        raw_stt = self._build_stt(config, ctx)
        tts = self._build_tts(config, ctx)
        stt: lk_stt.STT[Any] = raw_stt
        vad: NotGivenOr[lk_vad.VAD] = NOT_GIVEN
        if self._vad is not None:
            # one VAD stream per session, shared by turn detection and the STT's
            # segmentation (app.agents.audio), instead of LiveKit's StreamAdapter
            # running a second one over the same audio
            stt, vad = session_audio_models(raw_stt, self._vad, config.vad)
            if stt is not raw_stt:
                ctx.add_closer(stt.aclose)
        return BaseAgent(
            config, instructions=prompt.instructions, greeting=prompt.greeting, tools=tools,
            chat_ctx=chat_ctx, reply_on_enter=reply_on_enter,
            llm=llm, stt=stt, tts=tts, vad=vad,
        )

    # ------------------------------------------------------------------------ models

    def _base_url(self, configured: object) -> str | None:
        return str(configured) if configured else self._settings.openai_base_url

    def _openai_client(self, base_url: str | None, ctx: SessionContext) -> openai.AsyncClient:
        """A client configured as the plugins configure their own, but on the shared TLS
        context; closed with the session (a plugin never closes a client it was given)."""
        client = openai.AsyncClient(
            api_key=self._api_key,
            base_url=base_url,
            max_retries=0,
            http_client=httpx2.AsyncClient(
                verify=shared_tls_context(),
                timeout=httpx2.Timeout(connect=15.0, read=5.0, write=5.0, pool=5.0),
                follow_redirects=True,
                limits=httpx2.Limits(max_connections=50, max_keepalive_connections=50, keepalive_expiry=120),
            ),
        )
        ctx.add_closer(client.close)
        return client

    def _build_llm(self, config: AgentConfig, ctx: SessionContext) -> lk_openai.LLM:
        cfg = config.llm
        kwargs: dict[str, Any] = {"model": cfg.model or self._settings.default_llm_model}
        if cfg.temperature is not None:
            kwargs["temperature"] = cfg.temperature
        if cfg.max_tokens is not None:
            kwargs["max_completion_tokens"] = cfg.max_tokens
        if self._llm_client is not None:
            return lk_openai.LLM(client=self._llm_client, **kwargs)
        client = self._openai_client(self._base_url(cfg.base_url), ctx)
        model = lk_openai.LLM(client=client, **kwargs)
        ctx.add_closer(model.aclose)  # closers run newest first: the model, then its client
        return model

    def _build_stt(self, config: AgentConfig, ctx: SessionContext) -> lk_openai.STT:
        cfg = config.stt
        model = lk_openai.STT(
            model=cfg.model or self._settings.default_stt_model,
            language=cfg.language,
            client=self._stt_client or self._openai_client(self._base_url(cfg.base_url), ctx),
        )
        ctx.add_closer(model.aclose)
        return model

    def _build_tts(self, config: AgentConfig, ctx: SessionContext) -> lk_openai.TTS:
        cfg = config.tts
        kwargs: dict[str, Any] = {
            "model": cfg.model or self._settings.default_tts_model,
            "voice": cfg.voice or self._settings.default_tts_voice,
            "speed": cfg.speed,
        }
        if cfg.instructions:
            kwargs["instructions"] = cfg.instructions
        client = self._tts_client or self._openai_client(self._base_url(cfg.base_url), ctx)
        model = lk_openai.TTS(client=client, **kwargs)
        ctx.add_closer(model.aclose)
        return model
