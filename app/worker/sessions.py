"""`SessionManager`: the durable record of one conversation.

Persistence never blocks the conversation: every write is an operation on a bounded
per-session queue, executed in order by one writer task. A failed write is retried
with capped backoff while later ones wait behind it (order matters: a turn must not
land before its session row); what still cannot be written when the session closes
is logged with the session id and the payload, never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from app.domain import (
    Handoff,
    SessionRecord,
    SessionStatus,
    StoreUnavailable,
    Turn,
)
from app.domain.models import utcnow
from app.store.base import ConfigStore
from app.store.sql import deep_merge

log = logging.getLogger("app.sessions")

Op = Callable[[], Coroutine[Any, Any, Any]]
Caller = Callable[[Coroutine[Any, Any, Any]], Coroutine[Any, Any, Any]]


async def _direct(coro: Coroutine[Any, Any, Any]) -> Any:
    return await coro


class SessionManager:
    """Implements `app.agents.context.SessionRecorder` on top of a `ConfigStore`."""

    def __init__(
        self,
        store: ConfigStore | None,
        record: SessionRecord,
        *,
        call: Caller = _direct,
        max_queue: int = 2000,
        retry_max_delay: float = 2.0,
        flush_timeout: float = 10.0,
    ) -> None:
        self._store = store
        self.record = record
        self._call = call
        self._queue: asyncio.Queue[tuple[str, Op]] = asyncio.Queue(maxsize=max_queue)
        self._retry_max_delay = retry_max_delay
        self._flush_timeout = flush_timeout
        self._writer: asyncio.Task[None] | None = None
        self._inflight: str | None = None
        self._seq = len(record.turns)
        self._collected: dict[str, Any] = dict(record.collected)
        self._agent_id = record.agent_id
        self._finish: tuple[SessionStatus, str, str | None] | None = None
        self._closed = False
        self.failed_writes = 0
        self.dropped: list[str] = []

    # ------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        # A copy: later turns/handoffs mutate self.record and have their own writes.
        record = self.record.model_copy(deep=True)
        self._enqueue("start_session", lambda: self._store.start_session(record))  # type: ignore[union-attr]
        self._writer = asyncio.create_task(self._write_loop(), name=f"session-writer-{record.session_id}")

    def attach(self, session: Any) -> None:
        """Subscribe to a LiveKit `AgentSession`'s events."""
        session.on("conversation_item_added", self._on_item)
        session.on("close", self._on_close)

    async def aclose(self, status: SessionStatus | None = None, reason: str | None = None) -> None:
        """Finish the record (unless already finished) and flush what is queued."""
        if self._closed:
            return
        if status is not None and self._finish is None:
            self._finish = (status, reason or status.value, None)
        status_, reason_, error = self._finish or (SessionStatus.completed, "closed", None)
        sid = self.record.session_id
        self._enqueue(
            "finish_session",
            lambda: self._store.finish_session(sid, status_, reason_, error),  # type: ignore[union-attr]
        )
        self._closed = True
        await self.flush(self._flush_timeout)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        lost_names = [self._inflight] if self._inflight else []
        while not self._queue.empty():
            lost_names.append(self._queue.get_nowait()[0])
        lost = len(lost_names)
        if lost:
            self.dropped.extend(lost_names)
            log.error(
                "session %s: %d record write(s) could not be stored before close: %s",
                sid, lost, ", ".join(self.dropped[-lost:]),
            )

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    # ------------------------------------------------- SessionRecorder protocol

    @property
    def collected(self) -> dict[str, Any]:
        return self._collected

    @property
    def agent_id(self) -> str:
        return self._agent_id

    def record_data(self, data: dict[str, Any]) -> None:
        self._collected = deep_merge(self._collected, data)
        sid, payload = self.record.session_id, dict(data)
        self._enqueue("record_data", lambda: self._store.record_data(sid, payload))  # type: ignore[union-attr]

    def record_handoff(self, from_agent: str, to_agent: str, reason: str | None) -> None:
        handoff = Handoff(from_agent=from_agent, to_agent=to_agent, reason=reason)
        self.record.handoffs.append(handoff)
        sid = self.record.session_id
        self._enqueue("record_handoff", lambda: self._store.record_handoff(sid, handoff))  # type: ignore[union-attr]

    def set_agent(self, agent_id: str, version: int) -> None:
        self._agent_id = agent_id

    def finish(self, status: SessionStatus, reason: str) -> None:
        if self._finish is None:
            self._finish = (status, reason, None)

    # -------------------------------------------------------------- turns

    def add_turn(self, role: str, text: str) -> Turn:
        turn = Turn(seq=self._seq, role=role, text=text, at=utcnow(), agent_id=self._agent_id)  # type: ignore[arg-type]
        self._seq += 1
        self.record.turns.append(turn)
        sid = self.record.session_id
        self._enqueue("append_turn", lambda: self._store.append_turn(sid, turn))  # type: ignore[union-attr]
        return turn

    def _on_item(self, ev: Any) -> None:
        item = getattr(ev, "item", None)
        if getattr(item, "type", None) != "message":
            return
        role = getattr(item, "role", None)
        text = getattr(item, "text_content", None)
        if role in ("user", "assistant") and text:
            self.add_turn(role, text)

    def _on_close(self, ev: Any) -> None:
        error = getattr(ev, "error", None)
        reason = getattr(getattr(ev, "reason", None), "value", None) or "closed"
        if self._finish is None:
            if error is not None:
                self._finish = (SessionStatus.failed, reason, str(error)[:1000])
            else:
                self._finish = (SessionStatus.completed, reason, None)

    # -------------------------------------------------------------- writer

    def _enqueue(self, name: str, op: Op) -> None:
        if self._store is None:
            return
        if self._closed:
            log.error("session %s: %s after close was not stored", self.record.session_id, name)
            self.dropped.append(name)
            return
        try:
            self._queue.put_nowait((name, op))
        except asyncio.QueueFull:
            # Bounded memory beats an unbounded backlog; say exactly what was lost.
            self.dropped.append(name)
            log.error(
                "session %s: write queue full (%d); %s not stored",
                self.record.session_id, self._queue.maxsize, name,
            )

    async def _write_loop(self) -> None:
        while True:
            name, op = await self._queue.get()
            self._inflight = name  # left set if we are cancelled mid-retry: aclose reports it
            try:
                await self._run_with_retry(name, op)
                self._inflight = None
            finally:
                self._queue.task_done()

    async def _run_with_retry(self, name: str, op: Op) -> None:
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._call(op())
                return
            except StoreUnavailable as e:
                self.failed_writes += 1
                if attempt == 1 or attempt % 20 == 0:
                    log.warning(
                        "session %s: %s failed (%s); retrying", self.record.session_id, name, e.message
                    )
            except Exception:
                # Not an outage (a bug or a constraint): retrying will not help.
                self.failed_writes += 1
                self.dropped.append(name)
                log.exception("session %s: %s failed permanently", self.record.session_id, name)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max_delay)
