"""The built-in agent a caller gets when no configured agent can be loaded.

Why: a store outage with nothing cached, or a routing table with no default, must
not leave a caller in silence. This agent apologises, takes a message (name,
callback number, reason) and ends politely; it needs no database.
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.domain.models import AgentConfig

FALLBACK_AGENT_ID = "fallback-agent"

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

FALLBACK_CONFIG = AgentConfig.model_validate(
    {
        "agent_id": FALLBACK_AGENT_ID,
        "name": "Fallback message taker",
        "description": "Used when no configured agent can be loaded.",
        "version": 1,
        "created_at": _EPOCH,
        "updated_at": _EPOCH,
        "prompt_config": {
            "instructions": (
                "You are a polite assistant answering while our systems are having trouble. "
                "Apologise briefly that you cannot help with the request right now. "
                "Offer to take a message so that someone calls back. Ask one question at a time: "
                "the caller's name, a callback phone number, and the reason for the call. "
                "Record each answer with the matching record tool as soon as you hear it, and "
                "read the phone number back to confirm it. Keep every reply short and plain: "
                "this is a voice call, so no lists, markdown or emojis. When you have all three, "
                "thank the caller, say someone will call back, and call end_session."
            ),
            "greeting": (
                "Hello, thanks for calling. I'm sorry, our systems are having trouble right now, "
                "but I can take a message so someone calls you back."
            ),
        },
        "schema_config": {
            "type": "object",
            "properties": {
                "caller_name": {"type": "string", "minLength": 1, "maxLength": 200,
                                "description": "The caller's name."},
                "callback_number": {"type": "string", "pattern": "^[+0-9 ()-]{6,24}$",
                                    "description": "Phone number to call back, digits only or with +, spaces, dashes."},
                "reason": {"type": "string", "minLength": 1, "maxLength": 1000,
                           "description": "Why the caller called, in their words."},
            },
            "required": ["caller_name", "callback_number", "reason"],
        },
        "tools": [{"type": "builtin", "name": "end_session"}],
    }
)
