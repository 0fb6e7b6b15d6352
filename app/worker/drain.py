"""Graceful drain: the process's registry of live sessions and the shutdown sequence.

On SIGTERM (what fly sends, `kill_signal` in fly.toml) the supervisor sends SIGTERM to
each worker process (app/worker/pool.py), and each calls `drain_worker`:

1. LiveKit's `AgentServer.drain()`: the worker reports itself full, so LiveKit stops
   dispatching new jobs to this process; jobs already running carry on.
2. Wait up to `DRAIN_TIMEOUT` for the sessions (our registry) and LiveKit's jobs to end
   on their own. (`AgentServer.drain(timeout)` raises `TimeoutError` when sessions
   outlive it; we bound the wait ourselves and treat expiry as the normal next step.)
3. Every session still live gets, on its own event loop: its record marked `abandoned`
   with the reason, a short spoken goodbye (`session.say`), the record flushed to the
   store, then the `AgentSession` closed (which ends the LiveKit job, see `entrypoint`).
   All sessions are handled in parallel, each within `ABANDON_BUDGET` seconds.

The worker process then closes its `AgentServer` and its store; once all have exited, the
supervisor stops the API and closes its store. The whole sequence is bounded by `shutdown_budget(drain_timeout)`, which fly's
`kill_timeout` must exceed (checked in tests/deploy).

Why a registry of our own: with the THREAD executor (the default) each LiveKit job runs
its own event loop in its own thread, and LiveKit exposes no handle on the
`AgentSession`s inside them. The entrypoint registers each session with the loop it runs
on; the drain reaches it with `asyncio.run_coroutine_threadsafe`. With the PROCESS
executor the sessions live in other processes: there, step 3 does not apply and LiveKit
closes the jobs at `AgentServer.aclose()` (records end `completed`).

This module imports nothing from LiveKit at run time, so the supervisor can import it
at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.domain import SessionStatus

if TYPE_CHECKING:
    from livekit.agents import AgentServer, AgentSession

    from app.worker.session_start import PreparedSession

log = logging.getLogger(__name__)

SHUTDOWN_REASON = "server shutting down"
GOODBYE = (
    "I'm sorry, I have to end our call now because the service is restarting. "
    "Please call back in a minute. Goodbye."
)

# Per-session budget once the drain timeout has expired (sessions run in parallel).
INTERRUPT_TIMEOUT = 2.0  # stop whatever the agent is saying or generating
GOODBYE_TIMEOUT = 8.0  # the goodbye above is ~5 s of speech
FLUSH_TIMEOUT = 10.0  # SessionManager's default flush timeout (the record's last writes)
SESSION_CLOSE_TIMEOUT = 5.0  # AgentSession.aclose()
# + 1 s for the hops between loops; each step above is bounded on its own.
ABANDON_BUDGET = INTERRUPT_TIMEOUT + GOODBYE_TIMEOUT + FLUSH_TIMEOUT + SESSION_CLOSE_TIMEOUT + 1.0

# What the supervisor spends after the drain (see Supervisor.run / _shutdown_worker).
WORKER_CLOSE_TIMEOUT = 10.0  # AgentServer.aclose(): job threads finish their shutdown
API_STOP_TIMEOUT = 10.0  # uvicorn: in-flight requests (its graceful timeout is 5 s)
STORE_CLOSE_TIMEOUT = 5.0  # cache, store engine/client


def shutdown_budget(drain_timeout: float) -> float:
    """Worst-case seconds from SIGTERM to exit: the platform's kill timeout must exceed it.
    The worker processes drain in parallel, each closing its LiveKit worker and then its
    store; the supervisor then stops the API and closes its own store."""
    return (drain_timeout + ABANDON_BUDGET + WORKER_CLOSE_TIMEOUT + STORE_CLOSE_TIMEOUT
            + API_STOP_TIMEOUT + STORE_CLOSE_TIMEOUT)


@dataclass(eq=False)
class ActiveSession:
    """One live conversation: its `AgentSession`, its record, and the loop it runs on."""

    session: AgentSession[Any]
    prepared: PreparedSession
    loop: asyncio.AbstractEventLoop
    registry: SessionRegistry
    started: float = field(default_factory=time.monotonic)

    @property
    def session_id(self) -> str:
        return self.prepared.record.session_id

    def discard(self) -> None:
        """Leave the registry (idempotent, any thread)."""
        self.registry.unregister(self)

    async def release(self) -> None:
        """`discard` as a LiveKit shutdown callback."""
        self.discard()


class SessionRegistry:
    """The live sessions of this process. Thread-safe: jobs register from their threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[ActiveSession] = []
        self._idle_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def register(
        self, session: AgentSession[Any], prepared: PreparedSession, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> ActiveSession:
        """Track `session` until it closes. Call from the session's own loop."""
        entry = ActiveSession(session, prepared, loop or asyncio.get_running_loop(), self)
        with self._lock:
            self._entries.append(entry)
        session.on("close", lambda _ev: entry.discard())
        return entry

    def unregister(self, entry: ActiveSession) -> None:
        with self._lock:
            if entry in self._entries:
                self._entries.remove(entry)
            if self._entries:
                return
            waiters, self._idle_waiters = self._idle_waiters, []
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is gone: nobody waits
                loop.call_soon_threadsafe(_resolve, fut)

    def active(self) -> list[ActiveSession]:
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    async def wait_idle(self) -> None:
        """Return once no session is registered."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if not self._entries:
                return
            self._idle_waiters.append((loop, fut))
        try:
            await fut
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._idle_waiters.remove((loop, fut))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


#: The process-wide registry the LiveKit entrypoint registers with.
active_sessions = SessionRegistry()


@dataclass
class DrainReport:
    waited_s: float = 0.0
    timed_out: bool = False
    abandoned: list[str] = field(default_factory=list)
    goodbyes: int = 0
    errors: list[str] = field(default_factory=list)


async def drain_worker(
    server: AgentServer | None,
    registry: SessionRegistry = active_sessions,
    *,
    timeout: float,
    reason: str = SHUTDOWN_REASON,
    goodbye: str | None = GOODBYE,
) -> DrainReport:
    """Refuse new jobs, let live sessions finish for up to `timeout` seconds, then say
    goodbye to the rest and finish their records as `abandoned` with `reason`."""
    report = DrainReport()
    t0 = time.monotonic()
    waits = [asyncio.ensure_future(registry.wait_idle())]
    if server is not None:
        waits.append(asyncio.ensure_future(_livekit_drain(server)))
    n = len(registry)
    log.info("draining: %d active session(s); waiting up to %gs for them to end", n, timeout)
    try:
        await asyncio.wait_for(asyncio.gather(*waits), timeout)
    except TimeoutError:
        report.timed_out = True
    finally:
        for w in waits:
            w.cancel()
    report.waited_s = time.monotonic() - t0

    # Sessions that registered while we closed others are handled too; each only once.
    seen: set[ActiveSession] = set()  # identity-hashed (eq=False)
    while batch := [e for e in registry.active() if e not in seen]:
        seen.update(batch)
        log.warning(
            "drain timeout (%gs) reached: ending %d session(s) (%s)", timeout, len(batch), reason
        )
        results = await asyncio.gather(*(_abandon(e, reason, goodbye) for e in batch))
        for entry, (said, error) in zip(batch, results, strict=True):
            report.abandoned.append(entry.session_id)
            report.goodbyes += said
            if error:
                report.errors.append(f"{entry.session_id}: {error}")
    log.info(
        "drain done in %.2fs: %d session(s) abandoned, %d goodbye(s) delivered",
        time.monotonic() - t0, len(report.abandoned), report.goodbyes,
    )
    return report


async def _livekit_drain(server: AgentServer) -> None:
    """`AgentServer.drain()` without its own timeout (we bound the wait). A server that
    never connected or already stopped has nothing to drain: not an error."""
    try:
        await server.drain(timeout=None)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        log.info("LiveKit worker drain skipped: %s", e or type(e).__name__)


async def _abandon(entry: ActiveSession, reason: str, goodbye: str | None) -> tuple[bool, str | None]:
    """Run `_end_session` on the session's own loop; never raises."""
    if entry.loop.is_closed():
        entry.discard()
        return False, "its event loop is closed"
    try:
        cfut = asyncio.run_coroutine_threadsafe(_end_session(entry, reason, goodbye), entry.loop)
    except RuntimeError as e:  # loop closed in between
        entry.discard()
        return False, str(e)
    try:
        said = await asyncio.wait_for(asyncio.wrap_future(cfut), ABANDON_BUDGET)
        return said, None
    except TimeoutError:
        cfut.cancel()
        log.error("session %s: not ended within %gs of the drain timeout", entry.session_id, ABANDON_BUDGET)
        return False, "timed out"
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if cfut.cancelled() and not (task and task.cancelling()):
            # the job's loop shut down and cancelled our coroutine: its job ended anyway
            log.warning("session %s: its job stopped while being ended", entry.session_id)
            return False, "its event loop stopped first"
        raise
    except Exception as e:
        log.exception("session %s: ending it failed", entry.session_id)
        return False, repr(e)
    finally:
        entry.discard()


async def _end_session(entry: ActiveSession, reason: str, goodbye: str | None) -> bool:
    """On the session's loop: record → goodbye → flush → close. True if the goodbye played.

    The record is flushed before the `AgentSession` closes because closing it ends the
    LiveKit job, whose thread then stops this loop."""
    session, manager = entry.session, entry.prepared.manager
    sid = entry.session_id
    manager.finish(SessionStatus.abandoned, reason)  # first: whatever happens next, that's the status
    said = False
    if goodbye:
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.interrupt(force=True), INTERRUPT_TIMEOUT)
            handle = session.say(goodbye, allow_interruptions=False)
            await asyncio.wait_for(handle.wait_for_playout(), GOODBYE_TIMEOUT)
            said = True
        except Exception as e:  # a session that never started, a TTS failure, a timeout
            log.warning("session %s: goodbye not delivered (%s)", sid, e or type(e).__name__)
    await manager.aclose(SessionStatus.abandoned, reason)  # flushes (FLUSH_TIMEOUT)
    try:
        await asyncio.wait_for(session.aclose(), SESSION_CLOSE_TIMEOUT)
    except Exception as e:
        log.warning("session %s: close failed (%s)", sid, e or type(e).__name__)
    log.info("session %s: ended by shutdown (%s)", sid, reason)
    return said
