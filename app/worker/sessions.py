"""`SessionManager`: the durable record of one conversation.

Persistence never blocks the conversation: every write is a typed operation
(`app.store.base.SessionWrite`) on a bounded per-session queue, and one writer task
per session drains whatever is queued and applies it, in order, as one batch
(`ConfigStore.apply_session_writes`: one transaction on SQL), so a busy store sees one
write per batch instead of one per turn. A batch that fails because the store is
unavailable is retried whole, with capped backoff, while later writes wait behind it
(order matters: a turn must not land before its session row). A batch that fails for
any other reason (a bug, a constraint) is re-applied one op at a time, so only the bad
op is lost, and it is logged. What still cannot be written when the session closes (a
store outage outlasting the call) is handed, in order, to the process's
`PendingWrites` buffer, which keeps retrying on the worker's own loop and flushes when
the store is back; only what overflows that bound, or is left at process exit, is
dropped — and then logged as an ERROR with the session id and the payload (turn text,
fields), so it can be recovered from the logs. Never silently.

Each session row names its `owner` (`instance_id()`, one per container) and carries a
`heartbeat_at` that the supervisor refreshes, so another process can tell a crashed
owner's sessions from live ones (`ConfigStore.abandon_stale_sessions`).

Beyond turns and collected data the record keeps `usage` and `events` (fail-overs, cut
replies, budget warnings), each stored as a snapshot like `metrics`. `usage` is the one
place a session's consumption is collected: LiveKit's own count (`session_usage_updated`,
`AgentSession.usage`: LLM input/cached/output tokens, STT audio seconds, TTS characters
and audio seconds, per provider and model), priced with the price table, plus which
provider served each turn (from each message's `metrics`). It is written when it changes
and once more, final, with the end. When the agent has analysis settings, the pending
analysis is written in that same last batch, so the end of a call and its analysis
request are stored together; `on_closed` then tells the analysis runner.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Literal

from app.domain import (
    AlreadyExists,
    Handoff,
    ServedBy,
    SessionEvent,
    SessionRecord,
    SessionStatus,
    StoreUnavailable,
    Turn,
)
from app.domain.analysis import AnalysisRequest, AnalysisStatus, SessionAnalysis
from app.domain.models import MAX_SESSION_EVENTS, SessionEventKind, deep_merge
from app.domain.phone import CallInfo
from app.domain.pricing import PriceTable
from app.domain.values import utcnow
from app.observability import metrics, tracing
from app.store.base import (
    AppendTurn,
    ConfigStore,
    FinishSession,
    RecordData,
    RecordHandoff,
    SessionWrite,
    StartSession,
    UpdateSession,
    ops_applied_before,
)

if TYPE_CHECKING:  # the supervisor imports this module before the LiveKit stack is loaded
    from livekit.agents import AgentSession, CloseEvent, ConversationItemAddedEvent, FunctionToolsExecutedEvent
    from livekit.agents.llm import ChatMessage
    from livekit.agents.metrics import AgentSessionUsage
    from livekit.agents.voice.events import SessionUsageUpdatedEvent

log = logging.getLogger(__name__)

Caller = Callable[[Coroutine[Any, Any, Any]], Coroutine[Any, Any, Any]]
Item = SessionWrite
"""A queued write: a typed op whose `payload()` is what it carries, for the logs."""
Spill = Callable[[str, list[Item], ConfigStore], None]
"""Takes a closing session's unwritten items, in order, and the store they are for
(`PendingWrites.adopt`)."""
Failed = Callable[[Item, BaseException], None]

MAX_BATCH = 256
"""Ops per `apply_session_writes` call: bounds one transaction after a long outage."""

WRITER_STOP_TIMEOUT = 2.0
"""At close, how long the cancelled writer may take to stop (a store call in flight)."""

INSTANCE_ENV = "APP_INSTANCE_ID"


def instance_id(*, fresh: bool = False) -> str:
    """This container's owner id for session rows: hostname, pid and a random part,
    made once. Kept in the environment so PROCESS-executor job processes (started
    later, from this process) record the same owner the supervisor heartbeats for.
    The supervisor, the root of a container's processes, asks for a `fresh` one: an id
    inherited from whatever launched it (a shell, a test run) names another process."""
    value = None if fresh else os.environ.get(INSTANCE_ENV)
    if not value:
        value = f"{socket.gethostname()[:200]}:{os.getpid()}:{secrets.token_hex(4)}"
        os.environ[INSTANCE_ENV] = value
    return value


def _payload_text(payload: Any, limit: int = 4000) -> str:
    try:
        text = json.dumps(payload, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(payload)
    return text if len(text) <= limit else text[:limit] + f"...(+{len(text) - limit} chars)"


def log_lost(session_id: str, items: list[Item], why: str) -> None:
    """The last resort: one ERROR line per write, with its payload."""
    for op in items:
        log.error("session %s: %s not stored (%s); payload: %s", session_id, op.name, why, _payload_text(op.payload()))


async def _direct(coro: Coroutine[Any, Any, Any]) -> Any:
    return await coro


async def write_in_order(
    call: Caller, store: ConfigStore, session_id: str, pending: deque[Item], failed: Failed, *, retried: bool
) -> None:
    """Apply up to `MAX_BATCH` ops from the front of `pending` as one batch, removing
    each from `pending` once it is written (or has failed for good).

    `StoreUnavailable` propagates with the unwritten ops still in `pending` (retry
    them). Any other error makes us re-apply the batch one op at a time, so one bad op
    costs only itself: it goes to `failed`. A `start_session` that finds its row already
    there after a `retried` attempt was itself written by that attempt (its
    acknowledgement was lost), so it counts as written."""
    batch = list(pending)[:MAX_BATCH]
    try:
        await call(store.apply_session_writes(session_id, batch))
    except StoreUnavailable as e:
        for _ in range(ops_applied_before(e)):
            pending.popleft()
        raise
    except Exception as e:  # not an outage: find the op that failed
        done = ops_applied_before(e)
        for _ in range(done):
            pending.popleft()
        if len(batch) - done == 1:
            _failed_op(pending.popleft(), e, failed, retried=retried)
            return
        for _ in range(len(batch) - done):
            op = pending[0]
            try:
                await call(store.apply_session_writes(session_id, [op]))
            except StoreUnavailable:
                raise
            except Exception as e1:
                _failed_op(op, e1, failed, retried=retried)
            pending.popleft()
        return
    for _ in batch:
        pending.popleft()


def _failed_op(op: Item, e: BaseException, failed: Failed, *, retried: bool) -> None:
    if retried and isinstance(op, StartSession) and isinstance(e, AlreadyExists):
        return
    failed(op, e)


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
        spill: Spill | None = None,
        analysis: AnalysisRequest | None = None,
        prices: PriceTable | None = None,
        on_closed: Callable[[SessionRecord], None] | None = None,
        trace_slow_write: float = 0.1,
    ) -> None:
        """`analysis`: what to ask after the call (None: the agent has no analysis).
        `prices`: to price the usage (None: the built-in price table). `on_closed`:
        called once the last writes are flushed (or handed on). `trace_slow_write`:
        seconds from which a write batch that went fine gets a trace span (`_trace_write`)."""
        self._store = store
        self.record = record
        self._call = call
        self._spill = spill
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=max_queue)
        self._retry_max_delay = retry_max_delay
        self._flush_timeout = flush_timeout
        self._trace_slow_write = trace_slow_write
        self._writer: asyncio.Task[None] | None = None
        self._inflight: deque[Item] = deque()
        """The batch being written, in order; what is left of it if we are cancelled
        mid-retry is handed on by `aclose`."""
        self._seq = len(record.turns)
        self._collected: dict[str, Any] = dict(record.collected)
        self._agent_id = record.agent_id
        self._version = record.config_version or 0
        self._started_as: str | None = None
        """The agent the session started with once `start` ran: its metrics' label."""
        self._finish: tuple[SessionStatus, str, str | None] | None = None
        self._user_metrics: tuple[int, dict[str, Any]] | None = None
        """The last user turn's seq and LiveKit metrics, until an assistant turn answers it."""
        self._closed = False
        self._stopping = False
        """Set by `aclose` with the writer's cancel: a driver that swallows the
        cancellation (seen with pymongo mid-operation) must not keep it retrying."""
        self.analysis = analysis
        self._prices = prices or PriceTable.defaults()
        self._on_closed = on_closed
        self._session: AgentSession[Any] | None = None
        self.failed_writes = 0
        self._lost_ops = 0
        """Ops that failed for good in the writer (`_failed`), for the write spans."""
        self.dropped: list[str] = []
        self.spilled = 0
        """Writes handed to the process buffer at close (the store was down)."""

    # ------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self.record.owner is None:  # this container runs it and heartbeats for it
            self.record.owner = instance_id()
            self.record.heartbeat_at = utcnow()
        self._started_as = self.record.agent_id
        metrics.session_started(self._started_as)
        # A copy: later turns/handoffs mutate self.record and have their own writes.
        self._enqueue(StartSession(self.record.model_copy(deep=True)))
        self._writer = asyncio.create_task(self._write_loop(), name=f"session-writer-{self.record.session_id}")

    def attach(self, session: AgentSession[Any]) -> None:
        """Subscribe to a LiveKit `AgentSession`'s events."""
        self._session = session
        session.on("conversation_item_added", self._on_item)
        session.on("session_usage_updated", self._on_usage)
        session.on("close", self._on_close)
        session.on("function_tools_executed", functools.partial(self._on_tools, session))

    async def aclose(self, status: SessionStatus | None = None, reason: str | None = None) -> None:
        """Finish the record (unless already finished) and flush what is queued."""
        if self._closed:
            return
        if status is not None and self._finish is None:
            self._finish = (status, reason or status.value, None)
        status_, reason_, error = self._finish or (SessionStatus.completed, "closed", None)
        sid = self.record.session_id
        last: dict[str, Any] = {}
        if self._session is not None and self._update_usage(self._session.usage):
            last["usage"] = self.record.usage  # the final figures (readable after LiveKit closed it)
        if self.analysis is not None:
            self.record.analysis = SessionAnalysis(
                status=AnalysisStatus.pending, request=self.analysis, requested_at=utcnow()
            )
            last["analysis"] = self.record.analysis
        if last:
            self._enqueue(UpdateSession(last))
        self._enqueue(FinishSession(status_, reason_, error))
        self._closed = True
        if self._started_as is not None:
            metrics.session_ended(self._started_as, status_.value)
        try:
            await self._close_writes(sid)
        finally:
            if self._on_closed is not None:
                try:
                    self._on_closed(self.record)
                except Exception:
                    log.exception("session %s: on_closed callback failed", sid)

    async def _close_writes(self, sid: str) -> None:
        await self.flush(self._flush_timeout)
        if self._writer is not None:
            self._stopping = True
            self._writer.cancel()
            done, _ = await asyncio.wait({self._writer}, timeout=WRITER_STOP_TIMEOUT)
            if not done:  # stuck in a store call: hand its batch on anyway (writes are idempotent)
                log.warning("session %s: record writer did not stop within %gs", sid, WRITER_STOP_TIMEOUT)
        left = list(self._inflight)
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        if not left:
            return
        metrics.STORE_WRITES_BUFFERED.dec(len(left))  # handed on or lost, below
        names = [op.name for op in left]
        if self._spill is not None and self._store is not None:
            self._spill(sid, left, self._store)
            self.spilled += len(left)
            log.warning(
                "session %s: %d record write(s) not stored by close (store unavailable or backed "
                "up); handed to the process buffer to retry: %s", sid, len(left), ", ".join(names),
            )
            return
        self.dropped.extend(names)
        log.error(
            "session %s: %d record write(s) could not be stored before close: %s",
            sid, len(left), ", ".join(names),
        )
        log_lost(sid, left, "session closed while the store was unavailable")

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
        self._enqueue(RecordData(dict(data)))

    def record_handoff(self, from_agent: str, to_agent: str, reason: str | None) -> None:
        handoff = Handoff(from_agent=from_agent, to_agent=to_agent, reason=reason)
        self.record.handoffs.append(handoff)
        self._enqueue(RecordHandoff(handoff))

    def set_agent(self, agent_id: str, version: int) -> None:
        self._agent_id = agent_id
        self._version = version

    def finish(self, status: SessionStatus, reason: str, error: str | None = None) -> None:
        """The first call decides how the record ends (written at `aclose`)."""
        if self._finish is None:
            self._finish = (status, reason, error)

    def record_call(self, call: CallInfo) -> None:
        """The phone side of the call changed (e.g. the voicemail verdict). Never blocks."""
        self.record.call = call
        self._enqueue(UpdateSession({"call": call.model_dump(mode="json")}))

    def record_event(self, kind: SessionEventKind, detail: str = "") -> None:
        events = self.record.events
        if len(events) >= MAX_SESSION_EVENTS:
            log.warning("session %s: event %s not kept (%d events already)", self.record.session_id, kind, len(events))
            return
        events.append(SessionEvent(kind=kind, agent_id=self._agent_id, detail=detail[:500]))
        self._enqueue(UpdateSession({"events": [e.model_dump(mode="json") for e in events]}))

    @property
    def finished_reason(self) -> str | None:
        """The end reason set so far (`finish`), None while the session runs on."""
        return self._finish[1] if self._finish is not None else None

    # -------------------------------------------------------------- turns

    def add_turn(self, role: Literal["user", "assistant", "system", "tool"], text: str) -> Turn:
        turn = Turn(seq=self._seq, role=role, text=text, at=utcnow(), agent_id=self._agent_id)
        self._seq += 1
        self.record.turns.append(turn)
        self._enqueue(AppendTurn(turn))
        return turn

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if item.type != "message":  # a handoff marker
            return
        text = item.text_content
        if text and item.role in ("user", "assistant"):
            turn = self.add_turn("user" if item.role == "user" else "assistant", text)
            self._on_turn_metrics(turn, item)
            self._count_served(item)

    # ------------------------------------------------------------ usage

    def _count_served(self, item: ChatMessage) -> None:
        """Which provider's model served this turn: LiveKit names it in the message's
        metrics (the instance a fallback chain actually used)."""
        m: Mapping[str, Any] = item.metrics or {}
        keys = ("stt",) if item.role == "user" else ("llm", "tts")
        changed = False
        for kind in keys:
            meta = m.get(f"{kind}_metadata")
            if not isinstance(meta, Mapping):
                continue
            provider, model = str(meta.get("model_provider") or "unknown"), str(meta.get("model_name") or "unknown")
            served = self.record.usage.served_by
            entry = next((e for e in served if (e.kind, e.provider, e.model) == (kind, provider, model)), None)
            if entry is None:
                entry = ServedBy(kind=kind, provider=provider, model=model)
                served.append(entry)
            entry.turns += 1
            changed = True
        if changed:
            self._store_usage()

    def _on_usage(self, ev: SessionUsageUpdatedEvent) -> None:
        """LiveKit's running totals for the session (`AgentSession.usage`)."""
        if self._update_usage(ev.usage):
            self._store_usage()

    def _update_usage(self, usage: AgentSessionUsage) -> bool:
        """`record.usage` from LiveKit's totals, priced; False when nothing changed."""
        from app.worker.usage import model_lines

        updated = self._prices.priced(self.record.usage, model_lines(usage))
        if updated == self.record.usage:
            return False
        self.record.usage = updated
        return True

    def _store_usage(self) -> None:
        self._enqueue(UpdateSession({"usage": self.record.usage.model_dump(mode="json")}))

    # ------------------------------------------------------------ metrics

    def _on_turn_metrics(self, turn: Turn, item: ChatMessage) -> None:
        """Per-turn voice latency, from LiveKit's `ChatMessage.metrics` (1.8: the
        `metrics_collected` event is deprecated in favour of these).

        A user message carries the end-of-turn figures; the assistant message that
        answers it carries the model/TTS figures and `e2e_latency` (end of user speech
        → first agent audio frame played). One entry per assistant message that played
        audio (voice sessions only: text sessions write nothing extra), appended to
        `SessionRecord.metrics` and stored by rewriting that list (`update_session`); of
        several snapshots queued in one batch the store writes only the last.
        """
        m: Mapping[str, Any] = item.metrics or {}
        if turn.role == "user":
            self._user_metrics = (turn.seq, dict(m))
            return
        if "started_speaking_at" not in m and "e2e_latency" not in m:
            return  # no audio played: a text session, or interrupted before the first frame
        user_seq, um = self._user_metrics or (None, {})
        self._user_metrics = None
        entry = turn_metrics_entry(turn, dict(m), um, user_seq=user_seq, interrupted=item.interrupted)
        self.record.metrics.append(entry)
        metrics.turn_observed(turn.agent_id or self._agent_id, self._version, entry)
        # Entries are never changed once appended: a shallow copy is a stable snapshot.
        self._enqueue(UpdateSession({"metrics": list(self.record.metrics)}))

    def _on_tools(self, session: AgentSession[Any], ev: FunctionToolsExecutedEvent) -> None:
        from livekit.agents.llm.tool_context import get_fnc_tool_names  # loaded with the session

        known = frozenset(get_fnc_tool_names(session.current_agent.tools))
        calls = [(call.name, out.is_error) for call, out in ev.zipped()]
        metrics.tool_calls(self._agent_id, calls, known)
        for name, failed in calls:
            if failed:  # on the record: a canary's tool error rate is counted from it
                self.record_event("tool_error", name if name in known else "unknown tool")

    def _on_close(self, ev: CloseEvent) -> None:
        error = ev.error
        reason = ev.reason.value or "closed"
        if self._finish is None:
            if error is not None:
                self._finish = (SessionStatus.failed, reason, str(error)[:1000])
            elif reason == "job_shutdown":
                # The worker ended the job under a live conversation (PROCESS-executor
                # shutdown, no goodbye possible): the caller did not finish.
                self._finish = (SessionStatus.abandoned, "server shutting down", None)
            else:
                self._finish = (SessionStatus.completed, reason, None)

    # -------------------------------------------------------------- writer

    def _enqueue(self, op: Item) -> None:
        if self._store is None:
            return
        if self._closed:
            self.dropped.append(op.name)
            log_lost(self.record.session_id, [op], "written after the session closed")
            return
        try:
            self._queue.put_nowait(op)
            metrics.STORE_WRITES_BUFFERED.inc()
        except asyncio.QueueFull:
            # Bounded memory beats an unbounded backlog; say exactly what was lost.
            self.dropped.append(op.name)
            log.error(
                "session %s: write queue full (%d); %s not stored",
                self.record.session_id, self._queue.maxsize, op.name,
            )
            log_lost(self.record.session_id, [op], "session write queue full")

    def _take_queued(self) -> None:
        """Move what is queued now behind the batch being written (same order)."""
        while len(self._inflight) < MAX_BATCH and not self._queue.empty():
            self._inflight.append(self._queue.get_nowait())

    async def _write_loop(self) -> None:
        while True:
            self._inflight.append(await self._queue.get())
            self._take_queued()
            await self._write_batch()

    async def _write_batch(self) -> None:
        """Write `_inflight` in order; retried whole while the store is unavailable."""
        assert self._store is not None
        sid = self.record.session_id
        delay = 0.05
        attempt = 0
        while self._inflight:
            if self._stopping:
                raise asyncio.CancelledError
            attempt += 1
            before = len(self._inflight)
            lost_before = self._lost_ops
            started, started_ns = time.perf_counter(), time.time_ns()
            try:
                await write_in_order(self._call, self._store, sid, self._inflight, self._failed, retried=attempt > 1)
                seconds = time.perf_counter() - started
                metrics.STORE_WRITE_SECONDS.labels("ok").observe(seconds)
                self._trace_write(started_ns, seconds, before, attempt, lost=self._lost_ops - lost_before)
                continue
            except StoreUnavailable as e:
                seconds = time.perf_counter() - started
                metrics.STORE_WRITE_SECONDS.labels("unavailable").observe(seconds)
                self._trace_write(started_ns, seconds, before, attempt, lost=self._lost_ops - lost_before, unavailable=True)
                self.failed_writes += 1
                if attempt == 1 or attempt % 20 == 0:
                    names = ", ".join(dict.fromkeys(op.name for op in self._inflight))
                    log.warning("session %s: writing %s failed (%s); retrying", sid, names, e.message)
            finally:
                metrics.STORE_WRITES_BUFFERED.dec(before - len(self._inflight))
                for _ in range(before - len(self._inflight)):
                    self._queue.task_done()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max_delay)
            self._take_queued()

    def _trace_write(
        self, start_ns: int, seconds: float, ops: int, attempt: int, *, lost: int, unavailable: bool = False
    ) -> None:
        """A `store.session_write` span for a batch worth a look: slower than
        `trace_slow_write`, a retry, failed (store unavailable) or with ops lost for good.
        A fast first-time write gets none (the `store_session_write_seconds` histogram counts
        every batch): a span costs more CPU than a fast SQLite write."""
        if not (unavailable or lost or attempt > 1 or seconds >= self._trace_slow_write):
            return
        outcome = "unavailable" if unavailable else "ops_failed" if lost else "ok"
        tracing.record_span(
            "store.session_write", start_ns, start_ns + int(seconds * 1e9),
            {"ops": ops, "attempt": attempt, "outcome": outcome, "ops_failed": lost},
            error=None if outcome == "ok" else f"store write {outcome}",
        )

    def _failed(self, op: Item, e: BaseException) -> None:
        # Not an outage (a bug or a constraint): retrying would not help.
        self.failed_writes += 1
        self._lost_ops += 1
        self.dropped.append(op.name)
        log.error("session %s: %s failed permanently", self.record.session_id, op.name, exc_info=e)
        log_lost(self.record.session_id, [op], f"{type(e).__name__}")


def _ms(value: Any) -> float | None:
    return round(float(value) * 1000, 1) if isinstance(value, (int, float)) and value >= 0 else None


def turn_metrics_entry(
    turn: Turn, assistant: dict[str, Any], user: dict[str, Any], *, user_seq: int | None, interrupted: bool
) -> dict[str, Any]:
    """One `SessionRecord.metrics` entry (milliseconds; a figure LiveKit did not report
    is null, e.g. the end-of-turn ones for a greeting or a re-prompt, which answer no
    user turn):

    - `seq` / `user_seq`: the assistant turn and the user turn it answers;
    - `eou_delay_ms`: end of user speech (VAD) → turn committed (`end_of_turn_delay`);
    - `transcription_delay_ms`: end of user speech → final transcript;
    - `llm_ttft_ms`: LLM time to first token (`llm_node_ttft`);
    - `tts_ttfb_ms`: TTS time to first audio byte after its first text (`tts_node_ttfb`);
    - `total_ms`: end of user speech → first agent audio frame played (`e2e_latency`);
    - `speech_ms`: how long the agent's audio played; `interrupted`: cut by the user;
    - `llm` / `tts`: `provider/model` that served the reply (`llm_metadata`, `tts_metadata`:
      with a fallback chain, the member that answered).
    """
    started, stopped = assistant.get("started_speaking_at"), assistant.get("stopped_speaking_at")
    return {
        "seq": turn.seq,
        "user_seq": user_seq,
        "agent_id": turn.agent_id,
        "at": turn.at.isoformat(),
        "eou_delay_ms": _ms(user.get("end_of_turn_delay")),
        "transcription_delay_ms": _ms(user.get("transcription_delay")),
        "llm_ttft_ms": _ms(assistant.get("llm_node_ttft")),
        "tts_ttfb_ms": _ms(assistant.get("tts_node_ttfb")),
        "total_ms": _ms(assistant.get("e2e_latency")),
        "speech_ms": _ms(stopped - started) if isinstance(started, float) and isinstance(stopped, float) else None,
        "interrupted": interrupted,
        "llm": _served_name(assistant.get("llm_metadata")),
        "tts": _served_name(assistant.get("tts_metadata")),
    }


def _served_name(meta: Any) -> str | None:
    if not isinstance(meta, Mapping):
        return None
    return f"{meta.get('model_provider') or 'unknown'}/{meta.get('model_name') or 'unknown'}"


class PendingWrites:
    """Process-wide, bounded buffer for session writes that outlived their session.

    Why: a store outage can outlast a call. The session's own writer dies with the
    session (in THREAD mode, with the job's event loop), so its unwritten turns and
    fields are handed over here, and one task on the worker's own loop (the store's)
    retries them in order, per session, until the store answers: buffered within a
    bound (`max_items`), flushed on recovery (a session's ops as one batch, like the
    session writer). Past the bound, and whatever is left when the process stops, is
    logged with its payload (`log_lost`) — never silently dropped.
    `adopt` may be called from any thread.
    """

    def __init__(self, *, max_items: int = 50_000, retry_max_delay: float = 5.0) -> None:
        self._max = max_items
        self._retry_max_delay = retry_max_delay
        self._lock = threading.Lock()
        self._batches: deque[tuple[str, ConfigStore, deque[Item]]] = deque()
        self._count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0
        self.lost = 0
        self.last_error: str | None = None

    def __len__(self) -> int:
        return self._count

    def start(self) -> None:
        """Start the retry task on the running loop (the store's owner loop)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pending-session-writes")

    def adopt(self, session_id: str, items: list[Item], store: ConfigStore) -> None:
        """Take a closing session's unwritten items (in order) for `store`; thread-safe."""
        overflow: list[Item] = []
        with self._lock:
            room = max(0, self._max - self._count)
            keep, overflow = items[:room], items[room:]
            if keep:
                self._batches.append((session_id, store, deque(keep)))
                self._count += len(keep)
                metrics.STORE_WRITES_BUFFERED.inc(len(keep))
        if overflow:
            self.lost += len(overflow)
            log_lost(session_id, overflow, f"process write buffer full ({self._max})")
        if keep and self._loop is not None and self._wake is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def flush(self, timeout: float) -> bool:
        """Wait until the buffer is empty; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._count:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        """Give the store `timeout` seconds, then log whatever is left with its payload."""
        if self._count and self._task is not None:
            await self.flush(timeout)
        if self._task is not None:
            self._stopping = True  # in case the store call in flight swallows the cancel
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=WRITER_STOP_TIMEOUT)
            self._task = None
        with self._lock:
            metrics.STORE_WRITES_BUFFERED.dec(self._count)
            batches, self._batches, self._count = list(self._batches), deque(), 0
        for sid, _store, items in batches:
            self.lost += len(items)
            log_lost(sid, list(items), "process stopped while the store was unavailable")

    def _failed(self, sid: str, op: Item, e: BaseException) -> None:
        self.lost += 1
        log.error("session %s: buffered %s failed permanently", sid, op.name, exc_info=e)
        log_lost(sid, [op], f"{type(e).__name__}")

    async def _run(self) -> None:
        assert self._wake is not None
        delay = 0.1
        while not self._stopping:
            if not self._count:
                self._wake.clear()
                await self._wake.wait()
            with self._lock:
                sid, store, items = self._batches[0]
            # `items` is only changed by this task (adopt appends new batches).
            before, lost_before = len(items), self.lost
            outage = False
            try:
                # Retried: whatever an earlier session writer attempted may have landed.
                await write_in_order(
                    _direct, store, sid, items, functools.partial(self._failed, sid), retried=True
                )
            except StoreUnavailable as e:
                self.last_error = e.message
                outage = True
            finally:  # also when cancelled: count what did reach the store
                done = before - len(items)
                self.written += done - (self.lost - lost_before)
                with self._lock:
                    self._count -= done
                    metrics.STORE_WRITES_BUFFERED.dec(done)
                    if not items and self._batches and self._batches[0][2] is items:
                        self._batches.popleft()
                        log.info("session %s: buffered record writes stored", sid)
            if outage:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_delay)
            else:
                delay = 0.1
