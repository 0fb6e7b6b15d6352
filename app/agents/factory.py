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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from livekit.agents import llm as lk_llm
from livekit.plugins import openai as lk_openai

from app.agents.base import BaseAgent
from app.agents.context import ConfigSource, SessionContext
from app.agents.tools import build_tools
from app.domain import AgentConfig, PromptConfig, template_fields
from app.domain.models import MAX_VARIABLE_VALUE_CHARS
from app.settings import Settings

PLACEHOLDER_API_KEY = "sk-unset"
"""Sent when no key is configured, so keyless OpenAI-compatible servers still work."""


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
        vad: Any = None,
        llm_client: openai.AsyncClient | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        """`vad`: the process's shared VAD (loaded once in prewarm), used in audio mode.
        `llm_client`: an OpenAI client every agent's LLM uses instead of building one
        (tests and the sim point it at a scripted endpoint). `http_client`: shared
        client for HTTP tools (default: one lazily created per event loop)."""
        self._settings = settings
        self._configs = configs
        self._vad = vad
        self._llm_client = llm_client
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
        extra_tools: Sequence[Any] = (),
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

        tools: list[Any] = [
            *build_tools(
                config,
                ctx,
                configs=self._configs,
                build_agent=build_target,
                http_client=self._http_client,
            ),
            *extra_tools,
        ]
        models: dict[str, Any] = {"llm": self._build_llm(config, ctx)}
        if ctx.audio:
            models["stt"] = self._build_stt(config, ctx)
            models["tts"] = self._build_tts(config, ctx)
            if self._vad is not None:
                models["vad"] = self._vad
        return BaseAgent(
            config,
            instructions=prompt.instructions,
            greeting=prompt.greeting,
            tools=tools,
            chat_ctx=chat_ctx,
            reply_on_enter=reply_on_enter,
            **models,
        )

    # ------------------------------------------------------------------------ models

    def _base_url(self, configured: object) -> str | None:
        return str(configured) if configured else self._settings.openai_base_url

    def _build_llm(self, config: AgentConfig, ctx: SessionContext) -> lk_openai.LLM:
        cfg = config.llm
        kwargs: dict[str, Any] = {"model": cfg.model or self._settings.default_llm_model}
        if cfg.temperature is not None:
            kwargs["temperature"] = cfg.temperature
        if cfg.max_tokens is not None:
            kwargs["max_completion_tokens"] = cfg.max_tokens
        if self._llm_client is not None:
            return lk_openai.LLM(client=self._llm_client, **kwargs)
        base_url = self._base_url(cfg.base_url)
        if base_url:
            kwargs["base_url"] = base_url
        model = lk_openai.LLM(api_key=self._api_key, **kwargs)
        ctx.add_closer(model.aclose)  # it owns its HTTP client
        return model

    def _build_stt(self, config: AgentConfig, ctx: SessionContext) -> lk_openai.STT:
        cfg = config.stt
        kwargs: dict[str, Any] = {
            "model": cfg.model or self._settings.default_stt_model,
            "language": cfg.language,
            "api_key": self._api_key,
        }
        if base_url := self._base_url(cfg.base_url):
            kwargs["base_url"] = base_url
        model = lk_openai.STT(**kwargs)
        ctx.add_closer(model.aclose)
        return model

    def _build_tts(self, config: AgentConfig, ctx: SessionContext) -> lk_openai.TTS:
        cfg = config.tts
        kwargs: dict[str, Any] = {
            "model": cfg.model or self._settings.default_tts_model,
            "voice": cfg.voice or self._settings.default_tts_voice,
            "speed": cfg.speed,
            "api_key": self._api_key,
        }
        if cfg.instructions:
            kwargs["instructions"] = cfg.instructions
        if base_url := self._base_url(cfg.base_url):
            kwargs["base_url"] = base_url
        model = lk_openai.TTS(**kwargs)
        ctx.add_closer(model.aclose)
        return model
