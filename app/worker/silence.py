"""Re-prompt a silent caller instead of waiting forever."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livekit.agents import AgentSession, UserStateChangedEvent

log = logging.getLogger(__name__)

REPROMPT_INSTRUCTIONS = (
    "The caller has been silent for a while. In one short sentence, ask whether they are "
    "still there and offer to carry on."
)
MAX_REPROMPTS = 2


def attach_silence_reprompt(
    session: AgentSession[Any], *, max_reprompts: int = MAX_REPROMPTS, instructions: str = REPROMPT_INSTRUCTIONS
) -> None:
    """LiveKit marks the user "away" once user and agent have both been silent for the
    session's `user_away_timeout` (15 s by default). Then the agent asks, through the
    LLM with `instructions`, whether they are still there — at most `max_reprompts`
    times in a row (the count restarts when the caller speaks). The user is set back
    to "listening" first, so LiveKit arms the away timer again after the re-prompt.
    """
    count = 0

    def on_user_state(ev: UserStateChangedEvent) -> None:
        nonlocal count
        if ev.new_state == "speaking":
            count = 0
        if ev.new_state != "away" or count >= max_reprompts:
            return
        count += 1
        try:
            session.reset_away_timer()
            session.generate_reply(instructions=instructions)
        except RuntimeError as e:  # closing, or no activity any more
            log.info("silence re-prompt skipped: %s", e)

    session.on("user_state_changed", on_user_state)
