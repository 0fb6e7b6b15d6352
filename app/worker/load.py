"""The load this worker reports to LiveKit, which stops sending it jobs above the
server's `load_threshold` (0.7 in production).

LiveKit's default load is the machine's CPU use. With the THREAD executor every
session's Python runs in this one process under one GIL, so the process is saturated
at about one core of Python work; on a machine with two or more cores the machine-wide
figure then stays under the threshold while every call in this process has already
fallen behind real time, and LiveKit keeps dispatching more. So in THREAD mode the
load is the larger of the machine's CPU use and this process's CPU time per wall
second (1.0 = one core): conservative, because the VAD's ONNX inference runs outside
the GIL, but it stops new calls before the running ones stutter. PROCESS mode keeps
LiveKit's default (jobs spread over cores there).

Sampling is a difference of two counters between calls (LiveKit calls every 0.5 s,
on its own loop), averaged over a short window like LiveKit's: no thread, no sleep.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import psutil


class ThreadWorkerLoad:
    """`load_fnc` for an `AgentServer` running jobs as threads of this process."""

    def __init__(
        self,
        *,
        window: int = 5,
        gil_cores: float = 1.0,
        process_time: Callable[[], float] = time.process_time,
        monotonic: Callable[[], float] = time.monotonic,
        system_load: Callable[[], float] | None = None,
    ) -> None:
        self._process_time = process_time
        self._monotonic = monotonic
        self._system_load = system_load or (lambda: psutil.cpu_percent(interval=None) / 100.0)
        self._gil_cores = gil_cores
        self._samples: deque[float] = deque(maxlen=window)
        self._last = (monotonic(), process_time())
        self._system_load()  # psutil's non-blocking form measures since the previous call

    def __call__(self) -> float:
        now, cpu = self._monotonic(), self._process_time()
        last_now, last_cpu = self._last
        self._last = (now, cpu)
        wall = now - last_now
        process = (cpu - last_cpu) / wall / self._gil_cores if wall > 0 else 0.0
        self._samples.append(max(process, self._system_load()))
        return min(1.0, max(0.0, sum(self._samples) / len(self._samples)))
