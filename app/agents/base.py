"""`BaseAgent`: a LiveKit `Agent` that remembers the config it was built from.

What happens on entering (LiveKit calls `on_enter` when the agent becomes active, at
session start and after a handoff): first the enter hooks run (the `transfer` tool
records the handoff there, so a handoff LiveKit dropped is never recorded), then:
- a greeting is configured → it is spoken with `session.say(greeting)`. In a text
  session (no TTS, no audio output) `say` only adds the message to the transcript and
  chat context, which is what we want; it raises only when an audio output exists
  without a TTS, which we log and skip instead of failing the session.
- no greeting, but the agent was entered by a transfer (`reply_on_enter`) → it answers
  the carried-over conversation with `generate_reply()`, so the user is not left
  waiting after a handoff.
- otherwise nothing: the agent waits for the user.

`say`/`generate_reply` are not awaited: awaiting would hold `on_enter` (and with it
`session.start`) until the speech has played. Callers that need the greeting settled
before sending user input (tests, `chat`, the sim) use `session.start(agent,
capture_run=True)`, whose RunResult completes after the on-enter speech.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from livekit.agents import NOT_GIVEN, Agent, NotGivenOr, llm as lk_llm, stt as lk_stt, tts as lk_tts, vad as lk_vad

from app.domain import AgentConfig

logger = logging.getLogger(__name__)


class BaseAgent(Agent):
    def __init__(
        self,
        config: AgentConfig,
        *,
        instructions: str,
        greeting: str | None = None,
        tools: list[lk_llm.Tool | lk_llm.Toolset] | None = None,
        chat_ctx: lk_llm.ChatContext | None = None,
        reply_on_enter: bool = False,
        llm: NotGivenOr[lk_llm.LLM[Any]] = NOT_GIVEN,
        stt: NotGivenOr[lk_stt.STT[Any]] = NOT_GIVEN,
        tts: NotGivenOr[lk_tts.TTS[Any]] = NOT_GIVEN,
        vad: NotGivenOr[lk_vad.VAD] = NOT_GIVEN,
    ) -> None:
        """`llm`, `stt`, `tts`, `vad`: the models, as LiveKit's `Agent` takes them
        (not given: the session's)."""
        super().__init__(
            id=config.agent_id,
            instructions=instructions,
            tools=tools or [],
            chat_ctx=chat_ctx,
            llm=llm,
            stt=stt,
            tts=tts,
            vad=vad,
        )
        self.config = config
        self.greeting = greeting
        self.reply_on_enter = reply_on_enter
        self._enter_hooks: list[Callable[[], None]] = []

    def add_enter_hook(self, hook: Callable[[], None]) -> None:
        """Run `hook` when LiveKit activates this agent — not before: a handoff that is
        interrupted never enters, so whatever the hook records never happened."""
        self._enter_hooks.append(hook)

    @property
    def agent_id(self) -> str:
        return self.config.agent_id

    @property
    def version(self) -> int:
        return self.config.version

    async def on_enter(self) -> None:
        hooks, self._enter_hooks = self._enter_hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception:
                logger.exception("agent %s: enter hook failed", self.agent_id)
        if self.greeting:
            try:
                self.session.say(self.greeting)
            except RuntimeError as e:  # an audio output without a TTS
                logger.warning("agent %s: greeting not spoken: %s", self.agent_id, e)
            return
        if self.reply_on_enter:
            self.session.generate_reply()
