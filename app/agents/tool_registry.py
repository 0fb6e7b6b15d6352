"""Built-in tools by name, and the tool list an agent is built with.

A config names built-in tools (`{"type": "builtin", "name": ...}`; the domain model
lists the names it accepts); this registry maps each name to the function that builds
its LiveKit tool for a session, as pipecat-flows maps action names to handlers. A
feature brings its own tool by registering it here (the PTE examiner's `record_score`),
not by branching on which agent is running.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import httpx
from livekit.agents.llm import RawFunctionTool

from app.agents.context import ConfigSource, SessionContext
from app.agents.dtmf_tool import build_send_dtmf_tool
from app.agents.phone_transfer import CallControl, build_transfer_call_tool
from app.agents.pte import record_score_tool
from app.agents.tools import (
    BuildAgent,
    build_end_session_tool,
    build_http_tool,
    build_schema_tools,
    build_transfer_tool,
)
from app.domain import AgentConfig, HttpTool
from app.domain.models import BUILTIN_TOOL_NAMES, TransferCallTool


@dataclass(frozen=True)
class ToolContext:
    """What a built-in tool may use: the agent's config and the session around it."""

    config: AgentConfig
    session: SessionContext
    configs: ConfigSource
    build_agent: BuildAgent


BuiltinBuilder = Callable[[ToolContext], RawFunctionTool[..., Any]]

_builtins: dict[str, BuiltinBuilder] = {}


def register_builtin(name: str, builder: BuiltinBuilder) -> None:
    """Make `name` (one the domain model accepts) build its tool with `builder`."""
    if name not in BUILTIN_TOOL_NAMES:
        raise ValueError(f"{name!r} is not a built-in tool name configs may use ({', '.join(BUILTIN_TOOL_NAMES)})")
    _builtins[name] = builder


def builtin_tools() -> Mapping[str, BuiltinBuilder]:
    """The registered built-ins, read-only."""
    return MappingProxyType(_builtins)


register_builtin("end_session", lambda t: build_end_session_tool(t.session.recorder))
register_builtin(
    "transfer", lambda t: build_transfer_tool(t.config, t.session.recorder, t.configs, t.build_agent)
)
register_builtin("record_score", lambda t: record_score_tool(t.session.recorder))
register_builtin("send_dtmf", lambda t: build_send_dtmf_tool(t.session))


def build_tools(
    config: AgentConfig,
    ctx: SessionContext,
    *,
    configs: ConfigSource,
    build_agent: BuildAgent,
    http_client: httpx.AsyncClient | None = None,
    call_control: CallControl | None = None,
) -> list[RawFunctionTool[..., Any]]:
    """Schema tools, then the configured tools in config order."""
    tools = build_schema_tools(config.schema_config, ctx.recorder)
    deps = ToolContext(config=config, session=ctx, configs=configs, build_agent=build_agent)
    for spec in config.tools:
        if isinstance(spec, HttpTool):
            tools.append(build_http_tool(spec, http_client=http_client))
        elif isinstance(spec, TransferCallTool):
            tools.append(build_transfer_call_tool(spec, ctx.recorder, call_control))
        else:
            tools.append(_builtins[spec.name](deps))
    return tools
