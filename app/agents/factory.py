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
import httpx2
import openai
from livekit.agents import NOT_GIVEN, NotGivenOr, llm as lk_llm, stt as lk_stt, vad as lk_vad

from app.agents.audio import session_audio_models
from app.agents.base import BaseAgent
from app.agents.context import ConfigSource, SessionContext
from app.agents.providers import (
    PLACEHOLDER_API_KEY,
    Clients,
    build_llm,
    build_stt,
    build_tts,
    reply_limits,
    shared_tls_context,
)
from app.agents.tool_registry import build_tools
from app.domain import AgentConfig, PromptConfig, template_fields
from app.domain.models import MAX_VARIABLE_VALUE_CHARS
from app.settings import Settings

__all__ = [
    "PLACEHOLDER_API_KEY",
    "AgentFactory",
    "MissingVariables",
    "RenderedPrompt",
    "prompt_values",
    "render_prompt",
    "render_template",
    "shared_tls_context",
]


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
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        """`vad`: the process's shared VAD (loaded once in prewarm), used in audio mode.
        `llm_client`: an OpenAI client every agent's LLM (each member of its chain) uses
        instead of building one (tests point it at a scripted endpoint). `http_client`:
        shared client for HTTP tools (default: one lazily created per event loop).
        `stt_client` / `tts_client`: the same as `llm_client` for the audio models;
        never closed by the factory, like `llm_client`. `transport`: the HTTP transport
        the clients the factory builds send through instead of the network (the sim's
        scripted endpoints, which tell the members of a chain apart by base URL)."""
        self._settings = settings
        self._configs = configs
        self._vad = vad
        self._http_client = http_client
        key = settings.openai_api_key
        self._clients = Clients(
            settings=settings,
            api_key=key.get_secret_value() if key is not None else PLACEHOLDER_API_KEY,
            llm=llm_client, stt=stt_client, tts=tts_client, transport=transport,
        )

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
        llm = build_llm(config, ctx, self._clients)
        limits = reply_limits(config, self._settings)
        if not ctx.audio:
            return BaseAgent(
                config, instructions=prompt.instructions, greeting=prompt.greeting, tools=tools,
                chat_ctx=chat_ctx, reply_on_enter=reply_on_enter, llm=llm,
                reply_limits=limits, recorder=ctx.recorder,
            )
        raw_stt, batch = build_stt(config, ctx, self._clients, self._vad)
        tts = build_tts(config, ctx, self._clients)
        stt: lk_stt.STT[Any] = raw_stt
        vad: NotGivenOr[lk_vad.VAD] = NOT_GIVEN
        if self._vad is not None:
            # one VAD stream per session, shared by turn detection and the STT's
            # segmentation (app.agents.audio), instead of LiveKit's StreamAdapter
            # running a second one over the same audio
            stt, vad = session_audio_models(raw_stt, self._vad, config.vad, batch=batch)
            if stt is not raw_stt:
                ctx.add_closer(stt.aclose)
        return BaseAgent(
            config, instructions=prompt.instructions, greeting=prompt.greeting, tools=tools,
            chat_ctx=chat_ctx, reply_on_enter=reply_on_enter,
            llm=llm, stt=stt, tts=tts, vad=vad, reply_limits=limits, recorder=ctx.recorder,
        )
