"""Runtime state the admin API reports on `/readyz`.

The supervisor owns one `RuntimeStatus` and mutates it as the embedded worker
connects, registers, drains or gives up; the API only reads it. It is a plain
dataclass (no locks): every write and read happens on the one event loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

from app.domain import StoreUnavailable
from app.store.base import ConfigStore

log = logging.getLogger(__name__)

WorkerState = Literal["disabled", "connecting", "registered", "draining", "failed"]
StoreState = Literal["ok", "down"]
ModelsState = Literal["starting", "ok", "down"]
"""A model server this process started beside itself (`dev --local-models` / `--demo`)."""

#: Worker states in which this process can take traffic. "disabled" counts as ready:
#: an API-only process (or `AGENT_MODE` without a worker) must not be taken out of
#: rotation just because it has no worker to register.
READY_WORKER_STATES: frozenset[str] = frozenset({"registered", "disabled"})

STORE_PING_TIMEOUT_S = 2.0


@dataclass(slots=True)
class WorkerProcessStatus:
    """One LiveKit worker process of this machine (`WORKER_PROCESSES`), as it last reported."""

    index: int
    pid: int | None
    """null while it is being restarted."""
    state: Literal["starting", "connecting", "registered", "draining", "stopped", "restarting"]
    detail: str | None
    sessions: int
    """Live calls in it."""
    load: float
    """The load it reports to LiveKit (0-1; new calls go to the lowest)."""
    restarts: int
    """How often it died and was replaced since this process started."""
    cpus: list[int] | None = None
    """The cores it is pinned to (`WORKER_CPU_PINNING`); null: not pinned."""


@dataclass(slots=True)
class Readiness:
    """The `/readyz` body; the same shape for 200 and 503 so probes can log it."""

    ready: bool
    store: StoreState
    worker: WorkerState
    detail: str | None = None
    models: ModelsState | None = None
    """null when the default providers are not a model server of this process's own."""
    workers: list[WorkerProcessStatus] | None = None
    """Each LiveKit worker process; null when the worker is disabled."""


@dataclass(slots=True)
class RuntimeStatus:
    """What the supervisor knows about the worker; read by `/readyz`."""

    worker: WorkerState = "disabled"
    worker_detail: str | None = None
    store_ping_timeout: float = STORE_PING_TIMEOUT_S
    models: ModelsState | None = None
    models_detail: str | None = None
    workers: list[WorkerProcessStatus] | None = None

    def set_workers(self, workers: list[WorkerProcessStatus]) -> None:
        """The worker processes' last reports (`detail`s are shown to probes: no secrets)."""
        self.workers = workers

    def set_worker(self, state: WorkerState, detail: str | None = None) -> None:
        """Record a worker transition; `detail` is shown to probes, so keep secrets out."""
        self.worker = state
        self.worker_detail = detail

    def set_models(self, state: ModelsState, detail: str | None = None) -> None:
        """Record the model server's state; sessions cannot reach their model unless "ok"."""
        self.models = state
        self.models_detail = detail

    async def store_health(self, store: ConfigStore) -> tuple[StoreState, str | None]:
        """Ping the store with a deadline; never raises.

        A hung database must turn into a fast "down", not a probe that times out, so the
        ping is bounded. Only `StoreUnavailable.message` (written to be client-safe) is
        echoed; anything else is logged here and reported generically.
        """
        timeout = self.store_ping_timeout
        try:
            async with asyncio.timeout(timeout):
                await store.ping()
        except StoreUnavailable as e:
            return "down", e.message
        except TimeoutError:
            return "down", f"store did not answer within {timeout:g}s"
        except Exception:
            log.exception("store ping failed")
            return "down", "store ping failed"
        return "ok", None

    async def readiness(self, store: ConfigStore) -> Readiness:
        store_state, store_detail = await self.store_health(store)
        models_ok = self.models in (None, "ok")
        ready = store_state == "ok" and self.worker in READY_WORKER_STATES and models_ok
        detail = store_detail or (None if models_ok else self.models_detail or f"model server is {self.models}") or (
            None if ready else self.worker_detail or f"worker is {self.worker}")
        return Readiness(ready=ready, store=store_state, worker=self.worker, detail=detail, models=self.models,
                         workers=list(self.workers) if self.workers is not None else None)
