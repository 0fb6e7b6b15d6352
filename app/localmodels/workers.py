"""A model in a child process: speech-to-text and text-to-speech run there.

Why a process and not a thread: faster-whisper and Piper do real Python work between
their native calls (feature extraction, phonemes, resampling, encoding), which would hold
the GIL the server's event loop needs; and a native crash on hostile audio takes down the
child, not the server: the next request gets a fresh one (`ModelProcess.run`).

A child is started with `spawn` (never fork a process running llama.cpp's threads),
loads its model once in the pool's initializer and keeps it for every request. A load
failure is kept by the child and reported by `start()` as one line, instead of the
pool's bare "a process terminated abruptly".
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_state: dict[str, Any] = {}
"""In the child: the loaded model (`model`) or why it failed to load (`error`)."""


def _init(loader: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in a child ever reaches a hub
    try:
        _state["model"] = loader(*args)
    except Exception as e:
        _state["error"] = f"{type(e).__name__}: {e}"[:500]


def _loaded() -> str | None:
    return _state.get("error") if "model" not in _state else None


def _call(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    return fn(_state["model"], *args)


class ModelLoadError(Exception):
    pass


class WorkerCrashed(Exception):
    """The child died during the request (it is restarted for the next one)."""


class ModelProcess:
    def __init__(self, name: str, loader: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.name = name
        self._loader = loader
        self._args = args
        self._pool: ProcessPoolExecutor | None = None
        self.restarts = 0

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init, initargs=(self._loader, self._args))

    async def start(self) -> None:
        """Start the child and load the model; raises `ModelLoadError` with the reason."""
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        try:
            error = await loop.run_in_executor(self._pool, _loaded)
        except BrokenProcessPool:
            error = "the process exited while loading the model"
        if error is not None:
            self.close()
            raise ModelLoadError(error)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(model, *args)` in the child. Its exceptions are re-raised here (they must
        be picklable); a dead child raises `WorkerCrashed` and is replaced."""
        if self._pool is None:
            raise WorkerCrashed(f"the {self.name} process is not running")
        loop = asyncio.get_running_loop()
        pool = self._pool
        try:
            return await loop.run_in_executor(pool, _call, fn, args)
        except BrokenProcessPool:
            log.error("the %s process died during a request; starting a new one", self.name)
            if self._pool is pool:
                self.restarts += 1
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            raise WorkerCrashed(f"the {self.name} process died during the request") from None

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
