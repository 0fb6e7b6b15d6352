"""`AnalysisRunner`: runs this process's share of pending post-call analyses.

Why a queue in the store rather than a task per ending call: an analysis may take
seconds, the process may stop meanwhile, and several processes share one store. A
session's end writes its analysis as `pending` (with the end, in one batch); any runner
claims it with a lease (`ConfigStore.claim_analyses`), renews the lease while it works,
and stores the result only if it still holds the lease. So a pending analysis is picked
up after a restart or by another process once a lease runs out, and two processes never
run the same one at once. A session ending here nudges the runner (no waiting for the
poll); the poll (`ANALYSIS_POLL_INTERVAL`) finds the rest.

The runner lives on the owner loop (the supervisor's, with the store) and runs at most
`ANALYSIS_CONCURRENCY` analyses at a time, each bounded by its settings' timeout and
attempts: off every call's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from app.agents.analysis import AnalysisOutcome, analysis_client, analysis_llm, run_analysis
from app.background import stop_task
from app.domain import SessionRecord, StoreUnavailable
from app.domain.analysis import AnalysisStatus, SessionAnalysis
from app.domain.pricing import PriceTable
from app.domain.values import utcnow
from app.settings import Settings
from app.store.base import ClaimedAnalysis, ConfigStore

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)

LEASE_S = 60.0
"""How long a claim holds without renewal; renewed every third of it while running."""
MAX_CLAIMS = 3
"""A pending analysis claimed this often was interrupted every time (its processes
stopped mid-run): it is failed rather than tried forever."""
FINISH_RETRY_S = 30.0
"""How long a finished result waits for the store to come back before it is given up
(the lease then runs out and the analysis is run again elsewhere)."""
RELEASE_TIMEOUT_S = 2.0

Finished = Callable[[SessionRecord, SessionAnalysis], Awaitable[None]]


class AnalysisRunner:
    def __init__(
        self,
        settings: Settings,
        store: ConfigStore,
        *,
        owner: str,
        prices: PriceTable,
        llm_client: openai.AsyncClient | None = None,
        lease_s: float = LEASE_S,
        poll_interval: float | None = None,
        concurrency: int | None = None,
    ) -> None:
        """`llm_client`: one OpenAI client every analysis uses (tests and the sim point
        it at a scripted endpoint); else one per endpoint, made on first use."""
        self._settings = settings
        self._store = store
        self._owner = owner
        self._prices = prices
        self._llm_client = llm_client
        self._clients: dict[str | None, openai.AsyncClient] = {}
        self._lease_s = lease_s
        self._poll = poll_interval if poll_interval is not None else settings.analysis_poll_interval
        self._concurrency = concurrency or settings.analysis_concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: dict[str, tuple[asyncio.Task[None], ClaimedAnalysis]] = {}
        self._waiters: dict[str, list[asyncio.Future[SessionAnalysis]]] = {}
        self.finished_hooks: list[Finished] = []
        """Awaited with each stored result (the journal's `session.analyzed`)."""
        self.completed = 0
        self.lost = 0
        """Results not stored because the lease was lost (another process took over)."""

    @property
    def running(self) -> list[str]:
        """The sessions whose analyses run here now."""
        return list(self._running)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start on the running loop (the store's owner loop)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="analysis-runner")

    def nudge(self, _record: SessionRecord | None = None) -> None:
        """Look for pending analyses now (a session just ended); callable from any thread."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    async def aclose(self) -> None:
        """Stop claiming; cancel running analyses and give their leases back (so a
        restart or another process takes them at once rather than after the lease)."""
        task, self._task = self._task, None
        if task is not None:  # bounded: a claim in flight may swallow the cancel (app.background)
            await stop_task(task, "analysis runner")
        running = list(self._running.values())
        for t, _ in running:
            t.cancel()
        if running:
            await asyncio.wait([t for t, _ in running], timeout=RELEASE_TIMEOUT_S)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(RELEASE_TIMEOUT_S):
                    for _, claim in running:
                        await self._store.release_analysis(claim)
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        self._clients.clear()

    async def wait_for(self, session_id: str, timeout: float) -> SessionAnalysis | None:
        """The finished analysis of `session_id` (run here or by another process), or
        None if it is not finished within `timeout` (for `chat` and the sim)."""
        assert self._loop is not None, "start() first"
        fut: asyncio.Future[SessionAnalysis] = self._loop.create_future()
        self._waiters.setdefault(session_id, []).append(fut)
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.nudge()
                left = deadline - time.monotonic()
                await asyncio.wait({fut}, timeout=max(0.0, min(left, self._poll, 1.0)))
                if fut.done():
                    return fut.result()
                with contextlib.suppress(StoreUnavailable):
                    stored = (await self._store.get_session(session_id)).analysis
                    if stored is not None and stored.status != AnalysisStatus.pending:
                        return stored
                if time.monotonic() >= deadline:
                    return None
        finally:
            waiters = self._waiters.get(session_id, [])
            if fut in waiters:
                waiters.remove(fut)
            if not waiters:
                self._waiters.pop(session_id, None)

    # ----------------------------------------------------------------- the loop

    async def _run(self) -> None:
        assert self._wake is not None
        quiet = False
        while self._task is asyncio.current_task():  # until `aclose` lets go of it
            self._wake.clear()
            try:
                await self._claim()
                quiet = False
            except StoreUnavailable as e:
                if not quiet:
                    log.info("analysis runner: store unavailable (%s); retrying", e.message)
                    quiet = True
            except Exception:
                log.exception("analysis runner: claiming failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()

    async def _claim(self) -> None:
        free = self._concurrency - len(self._running)
        if free <= 0:
            return
        for claim in await self._store.claim_analyses(self._owner, lease_s=self._lease_s, limit=free):
            sid = claim.record.session_id
            task = asyncio.create_task(self._analyse(claim), name=f"analysis-{sid}")
            self._running[sid] = (task, claim)

    async def _analyse(self, claim: ClaimedAnalysis) -> None:
        sid = claim.record.session_id
        work = asyncio.current_task()
        assert work is not None
        keeper = asyncio.create_task(self._keep_lease(claim, work), name=f"analysis-lease-{sid}")
        try:
            result = await self._result(claim)
            stored = await self._finish(claim, result)
            keeper.cancel()  # the lease ended with the finish
            if stored:
                self.completed += 1
                log.info("session %s: analysis %s", sid, result.status.value)
                for fut in self._waiters.get(sid, []):
                    if not fut.done():
                        fut.set_result(result)
                for hook in self.finished_hooks:
                    try:
                        await hook(claim.record, result)
                    except Exception:
                        log.exception("session %s: analysis hook failed", sid)
            else:
                self.lost += 1
                log.warning("session %s: analysis lease lost before the result was stored; "
                            "another process runs it", sid)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: the lease runs out and the analysis is tried again (MAX_CLAIMS)
            log.exception("session %s: analysis failed unexpectedly", sid)
        finally:
            keeper.cancel()
            self._running.pop(sid, None)
            self.nudge()  # a slot is free

    async def _result(self, claim: ClaimedAnalysis) -> SessionAnalysis:
        record = claim.record
        pending = record.analysis
        assert pending is not None
        if claim.claims > MAX_CLAIMS:
            return pending.finished("failed", utcnow(), error=(
                f"interrupted {claim.claims - 1} times (the process running it stopped); not tried again"))
        if not any(t.role == "user" for t in record.turns):
            return pending.finished("failed", utcnow(), error="nothing to analyse: the caller said nothing")
        request = pending.request
        client = self._llm_client or self._client(request.base_url)
        llm = analysis_llm(request, client)
        try:
            outcome = await run_analysis(llm, record, request)
        finally:
            await llm.aclose()
        return self._finished(pending, outcome)

    def _finished(self, pending: SessionAnalysis, outcome: AnalysisOutcome) -> SessionAnalysis:
        cost = self._prices.tokens_cost(pending.request.model, outcome.input_tokens, outcome.output_tokens)
        common = dict(attempts=outcome.attempts, input_tokens=outcome.input_tokens,
                      output_tokens=outcome.output_tokens, cost_usd=cost)
        if outcome.answer is None:
            return pending.finished("failed", utcnow(), error=outcome.error, **common)
        a = outcome.answer
        return pending.finished("done", utcnow(), summary=a.summary, success=a.success, extracted=a.extracted,
                                **common)

    def _client(self, base_url: str | None) -> openai.AsyncClient:
        client = self._clients.get(base_url)
        if client is None:
            client = self._clients[base_url] = analysis_client(self._settings, base_url)
        return client

    async def _finish(self, claim: ClaimedAnalysis, result: SessionAnalysis) -> bool:
        delay = 0.2
        deadline = time.monotonic() + FINISH_RETRY_S
        while True:
            try:
                return await self._store.finish_analysis(claim, result)
            except StoreUnavailable:
                if time.monotonic() >= deadline:
                    log.warning("session %s: analysis result not stored (store unavailable); it runs "
                                "again once the lease ends", claim.record.session_id)
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _keep_lease(self, claim: ClaimedAnalysis, work: asyncio.Task[None]) -> None:
        """Renew every third of the lease; a lease found lost stops the work (another
        process has the analysis now)."""
        while True:
            await asyncio.sleep(self._lease_s / 3)
            try:
                if not await self._store.renew_analysis(claim, self._lease_s):
                    log.warning("session %s: analysis lease lost; stopping", claim.record.session_id)
                    work.cancel()
                    return
            except StoreUnavailable:
                continue
