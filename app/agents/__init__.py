"""Agents: routing (metadata → agent id), the factory that builds LiveKit agents from
configs, the base agent class and the tools.

Exports are lazy: `app.agents.routing` imports no LiveKit, and importing it through
this package must not pull in LiveKit either (the API uses the routing table).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MetadataSource": "app.agents.routing",
    "RouteDecision": "app.agents.routing",
    "RoutingTable": "app.agents.routing",
    "determine_agent_type": "app.agents.routing",
    "AgentFactory": "app.agents.factory",
    "MissingVariables": "app.agents.factory",
    "render_prompt": "app.agents.factory",
    "BaseAgent": "app.agents.base",
    "ConfigSource": "app.agents.context",
    "NullRecorder": "app.agents.context",
    "SessionContext": "app.agents.context",
    "SessionRecorder": "app.agents.context",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'app.agents' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
