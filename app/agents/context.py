"""What an agent needs from the session around it, as narrow protocols.

Tools record data, handoffs and endings through a `SessionRecorder`, which must not
block (the worker's `SessionManager` queues writes); handoff targets are loaded
through a `ConfigSource` (the worker's version-checked cache). Keeping these as
protocols lets the factory run in the API process, the sim and `chat` unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.domain import AgentConfig, SessionStatus
from app.domain.models import SessionEventKind

log = logging.getLogger(__name__)


DtmfSender = Callable[[int, str], Awaitable[None]]


class SessionRecorder(Protocol):
    @property
    def collected(self) -> dict[str, Any]:
        """Fields recorded so far in this session (in memory, authoritative for tools)."""

    def record_data(self, data: dict[str, Any]) -> None:
        """Merge validated fields into the session's collected data. Never blocks."""

    def record_handoff(self, from_agent: str, to_agent: str, reason: str | None) -> None: ...

    def set_agent(self, agent_id: str, version: int) -> None:
        """The active agent changed (handoff); later turns are attributed to it."""

    def finish(self, status: SessionStatus, reason: str) -> None:
        """Mark the session finished; the record is flushed when the session closes."""

    def record_event(self, kind: SessionEventKind, detail: str = "") -> None:
        """Note something the platform did to the call (a provider failed over, a reply
        was cut, a budget warning) on the session record. Never blocks."""


class ConfigSource(Protocol):
    async def get_agent_config(self, agent_id: str) -> AgentConfig:
        """Current config of an enabled agent; raises `NotFound` otherwise."""


class NullRecorder:
    """Keeps collected data in memory only; for previews and tests without a store."""

    def __init__(self) -> None:
        self._collected: dict[str, Any] = {}
        self.handoffs: list[tuple[str, str, str | None]] = []
        self.finished: tuple[SessionStatus, str] | None = None
        self.agent: tuple[str, int] | None = None
        self.events: list[tuple[str, str]] = []

    @property
    def collected(self) -> dict[str, Any]:
        return self._collected

    def record_data(self, data: dict[str, Any]) -> None:
        self._collected.update(data)

    def record_handoff(self, from_agent: str, to_agent: str, reason: str | None) -> None:
        self.handoffs.append((from_agent, to_agent, reason))

    def set_agent(self, agent_id: str, version: int) -> None:
        self.agent = (agent_id, version)

    def finish(self, status: SessionStatus, reason: str) -> None:
        self.finished = (status, reason)

    def record_event(self, kind: SessionEventKind, detail: str = "") -> None:
        self.events.append((kind, detail))


@dataclass
class SessionContext:
    """Per-session facts the factory renders prompts and wires tools with."""

    session_id: str
    room: str
    recorder: SessionRecorder
    user_id: str | None = None
    variables: dict[str, str] = field(default_factory=dict)
    audio: bool = True
    """False in text mode (chat, sim): STT/TTS are not built."""
    dtmf_sender: DtmfSender | None = None
    """Phone calls: sends one key (code, digit) to the far end; set once the room is
    joined (the worker: the local participant's `publish_dtmf`). None: not a phone call."""
    _closers: list[Callable[[], Awaitable[object]]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    def add_closer(self, closer: Callable[[], Awaitable[object]]) -> None:
        """Register cleanup for a per-session resource (the factory's model clients).

        LiveKit never closes the LLM/STT/TTS an `Agent` was given, and a handoff creates
        more of them mid-session, so the factory registers each here and the worker calls
        `aclose()` once when the session has ended.
        """
        self._closers.append(closer)

    async def aclose(self) -> None:
        """Run the registered closers (newest first); errors are logged, not raised."""
        closers, self._closers = self._closers[::-1], []
        for closer in closers:
            try:
                await closer()
            except Exception:
                log.exception("closing a session resource failed")
