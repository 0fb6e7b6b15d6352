"""Answering machines on outbound calls: LiveKit's AMD decides, the agent's `voicemail`
settings say what to do.

Only a session whose metadata says `call.direction: outbound` (set by the outbound call
API) and whose agent has `voicemail` settings runs detection. LiveKit's `AMD` listens to
the callee's greeting (STT) and classifies it with an LLM; while it listens, the agent's
speech is held. On its verdict:

- `human`, `uncertain`: the conversation goes on (an uncertain verdict is more often a
  person who said little than a machine; hanging up on a person is the worse mistake);
- `machine-ivr`: the conversation goes on too: an automated menu is navigated by the
  agent itself (its `send_dtmf` tool), so LiveKit's own IVR mode is left off;
- `machine-vm`: `leave_message` says the rendered message, then ends the call;
  `hang_up` ends it at once;
- `machine-unavailable` (mailbox full or not set up): the call ends; no message can be left.

The verdict and the action are stored on the session's `call.voicemail`; a call ended
here is `completed` with end reason `voicemail_left` or `voicemail_hang_up`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from app.agents.factory import prompt_values, render_template
from app.domain import SessionStatus
from app.domain.phone import AnsweredBy, VoicemailConfig, VoicemailOutcome

if TYPE_CHECKING:
    from livekit import rtc
    from livekit.agents import AgentSession
    from livekit.agents.voice.amd.detector import DetectionOptions

    from app.worker.session_start import PreparedSession

log = logging.getLogger(__name__)

MACHINE_CATEGORIES = ("machine-vm", "machine-unavailable", "machine-ivr")


def wants_detection(prepared: PreparedSession) -> VoicemailConfig | None:
    call = prepared.record.call
    cfg = prepared.config.voicemail
    if cfg is None or call is None or call.direction != "outbound":
        return None
    return cfg


async def apply_verdict(session: AgentSession[Any], prepared: PreparedSession, category: str) -> VoicemailOutcome:
    """Act on an AMD category (see the module docstring) and store the outcome."""
    cfg = prepared.config.voicemail or VoicemailConfig()
    answered_by: AnsweredBy = (
        "machine" if category in MACHINE_CATEGORIES else "human" if category == "human" else "uncertain"
    )
    outcome = VoicemailOutcome(answered_by=answered_by, category=category[:40])
    end_reason: str | None = None
    if category == "machine-vm" and cfg.action == "leave_message" and cfg.message:
        values = prompt_values(prepared.config.prompt_config, prepared.context.variables)
        message = render_template(cfg.message, values)
        outcome = outcome.model_copy(update={"action": "leave_message", "message": message})
        end_reason = "voicemail_left"
    elif category in ("machine-vm", "machine-unavailable"):
        outcome = outcome.model_copy(update={"action": "hang_up"})
        end_reason = "voicemail_hang_up"
    call = prepared.record.call
    if call is not None:
        prepared.manager.record_call(call.model_copy(update={"voicemail": outcome}))
    log.info("session %s: answered by %s (%s): %s", prepared.record.session_id, answered_by, category, outcome.action)
    if end_reason is None:
        return outcome
    prepared.manager.finish(SessionStatus.completed, end_reason)
    if outcome.message:
        handle = session.say(outcome.message, allow_interruptions=False)
        await handle.wait_for_playout()
    session.shutdown()
    return outcome


async def detect(
    session: AgentSession[Any], prepared: PreparedSession, identity: str, *,
    options: DetectionOptions | None = None,
) -> VoicemailOutcome | None:
    """Run LiveKit's AMD on the callee's audio and act on its verdict. `options`: AMD's
    thresholds (LiveKit's defaults when None)."""
    from livekit.agents import AMD, NOT_GIVEN
    from livekit.agents.llm import LLM

    agent_llm = prepared.agent.llm
    try:
        # The agent's own LLM (its configured model and fallbacks) and the session's STT
        # transcripts, not LiveKit Cloud's inference gateway, which self-hosted
        # deployments lack. (The LLM is the agent's, not the session's: our sessions
        # carry none of their own.)
        async with AMD(
            session, llm=agent_llm if isinstance(agent_llm, LLM) else None, stt=None,
            participant_identity=identity, ivr_detection=False,
            detection_options=options if options is not None else NOT_GIVEN,
        ) as amd:
            verdict = await amd.execute()
    except Exception:
        log.exception("session %s: answering-machine detection failed; carrying on", prepared.record.session_id)
        return None
    return await apply_verdict(session, prepared, verdict.category.value)


def start_voicemail_detection(
    session: AgentSession[Any], prepared: PreparedSession, participant: rtc.RemoteParticipant | None
) -> asyncio.Task[VoicemailOutcome | None] | None:
    """Start detection beside the call when the session wants it (outbound + settings)."""
    if participant is None or wants_detection(prepared) is None:
        return None
    return asyncio.create_task(detect(session, prepared, participant.identity), name="voicemail-detection")
