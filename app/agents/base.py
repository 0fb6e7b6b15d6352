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

Every reply the LLM generates runs through `llm_node`, LiveKit's default node behind a
`ReplyGuard` (`app.agents.reply_guard`): a reply that repeats one sentence, or that a
server let run past the cap, ends there; a reply the server cut at the cap is noted.
Both are recorded on the session as events.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from typing import Any

from livekit.agents import (
    NOT_GIVEN,
    Agent,
    FlushSentinel,
    ModelSettings,
    NotGivenOr,
    llm as lk_llm,
    stt as lk_stt,
    tts as lk_tts,
    vad as lk_vad,
)

from app.agents.context import SessionRecorder
from app.agents.reply_guard import ReplyGuard, ReplyLimits
from app.domain import AgentConfig
from app.domain.models import SessionEventKind

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
        reply_limits: ReplyLimits | None = None,
        recorder: SessionRecorder | None = None,
    ) -> None:
        """`llm`, `stt`, `tts`, `vad`: the models, as LiveKit's `Agent` takes them
        (not given: the session's). `reply_limits`: the reply cap sent to the server and
        the repetition limit (None: no guard). `recorder`: where the guard's events go."""
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
        self.reply_limits = reply_limits
        self._recorder = recorder
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

    async def llm_node(
        self, chat_ctx: lk_llm.ChatContext, tools: list[lk_llm.Tool], model_settings: ModelSettings
    ) -> AsyncGenerator[lk_llm.ChatChunk | str | FlushSentinel, None]:
        """LiveKit's default LLM node behind the reply guard (module docstring)."""
        source = Agent.default.llm_node(self, chat_ctx, tools, model_settings)
        if self.reply_limits is None:
            async for chunk in source:
                yield chunk
            return
        async for chunk in self._guarded(source, self.reply_limits):
            yield chunk

    async def _guarded(
        self, source: AsyncIterable[lk_llm.ChatChunk | str | FlushSentinel], limits: ReplyLimits
    ) -> AsyncGenerator[lk_llm.ChatChunk | str | FlushSentinel, None]:
        guard = ReplyGuard(limits)
        async with contextlib.aclosing(source) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                if isinstance(chunk, lk_llm.ChatChunk) and chunk.usage is not None:
                    if chunk.usage.completion_tokens >= limits.max_tokens:
                        self._event("reply_capped", f"the server ended the reply at the cap "
                                    f"({limits.max_tokens} tokens)")
                if isinstance(chunk, str):
                    chunk = guard.feed(chunk)
                elif isinstance(chunk, lk_llm.ChatChunk) and chunk.delta is not None and chunk.delta.content:
                    passed = guard.feed(chunk.delta.content)
                    chunk = chunk.model_copy(update={"delta": chunk.delta.model_copy(update={"content": passed})})
                if not isinstance(chunk, str) or chunk:
                    yield chunk
                if guard.stopped is not None:
                    break
        if guard.stopped is None:
            tail = guard.finish()
            if tail:
                yield tail
        if guard.stopped == "repetition":
            self._event("repetition_stopped", f"said {limits.repetition_limit} times: {guard.repeated or ''}"[:500])
        elif guard.stopped == "length":
            self._event("reply_capped", f"cut after {limits.max_chars} characters: the server did not "
                        f"apply the cap of {limits.max_tokens} tokens")

    def _event(self, kind: SessionEventKind, detail: str) -> None:
        logger.info("agent %s: %s (%s)", self.agent_id, kind, detail)
        if self._recorder is not None:
            self._recorder.record_event(kind, detail)
