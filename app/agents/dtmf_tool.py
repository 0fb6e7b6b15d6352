"""`send_dtmf`: the agent presses keys on a phone call (menus of an IVR it called).

Uses LiveKit's own key codes (`beta.workflows.utils.dtmf_event_to_code`: 0-9, `*` 10,
`#` 11, A-D 12-15) and its pacing between keys; the keys go out through the session's
`dtmf_sender` (the room's local participant `publish_dtmf`), so the tool works the same
in the sim, where the sender records them. Failures are `ToolError`s: the model is told,
and the record counts a failed call.
"""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import RunContext, ToolError
from livekit.agents.beta.workflows.utils import DtmfEvent, dtmf_event_to_code
from livekit.agents.llm import RawFunctionTool, function_tool

from app.agents.context import SessionContext

KEY_PAUSE_S = 0.3
"""Between keys, as LiveKit's `send_dtmf_events` does: IVRs miss keys sent back to back."""
MAX_KEYS = 32

PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "keys": {
            "type": "string",
            "pattern": f"^[0-9*#A-D]{{1,{MAX_KEYS}}}$",
            "description": "The keys to press, in order, e.g. '1' or '4321#'.",
        }
    },
    "required": ["keys"],
    "additionalProperties": False,
}


def build_send_dtmf_tool(ctx: SessionContext, *, key_pause_s: float = KEY_PAUSE_S) -> RawFunctionTool[..., Any]:
    async def handler(raw_arguments: dict[str, object], context: RunContext[Any]) -> str:
        keys = raw_arguments.get("keys")
        if not isinstance(keys, str) or not 0 < len(keys) <= MAX_KEYS:
            raise ToolError(f"keys must be 1 to {MAX_KEYS} of 0-9, *, #, A-D")
        try:
            events = [DtmfEvent(k) for k in keys]
        except ValueError:
            raise ToolError("keys may only be 0-9, *, #, A-D") from None
        sender = ctx.dtmf_sender
        if sender is None:
            raise ToolError("this session is not a phone call: there is no keypad")
        for i, ev in enumerate(events):
            if i:
                await asyncio.sleep(key_pause_s)
            try:
                await sender(dtmf_event_to_code(ev), ev.value)
            except Exception as e:
                raise ToolError(f"pressing {ev.value} failed after {i} key(s): {type(e).__name__}") from None
        return f"Pressed {keys}."

    return function_tool(
        handler,
        raw_schema={
            "name": "send_dtmf",
            "description": "Press keys on the phone keypad (DTMF), e.g. to choose an option in an automated "
            "phone menu. Only on phone calls.",
            "parameters": PARAMETERS,
        },
    )
