"""Tiny helpers shared by the sim benchmarks: percentiles, a median's interval, the
collector's time and the closing JSON line."""

from __future__ import annotations

import gc
import json
import math
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): an actual sample, no interpolation."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median_interval(values: Sequence[float], confidence: float = 0.95, rounds: int = 10000) -> tuple[float, float]:
    """A bootstrap interval for the median of `values` (resampled with replacement, a fixed
    seed so a run's figures can be printed again): how far a run's median could move."""
    if not values:
        raise ValueError("no samples")
    draw = random.Random(0)
    medians = sorted(statistics.median(draw.choices(values, k=len(values))) for _ in range(rounds))
    tail = (1 - confidence) / 2
    return medians[int(tail * rounds)], medians[min(rounds - 1, int((1 - tail) * rounds))]


def emit(figures: dict[str, Any]) -> None:
    """The benchmark's last line: one JSON object, numbers rounded for reading."""
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


class CollectionTime:
    """CPU time the cyclic garbage collector takes while installed (`with`), by the clock of
    the thread each collection runs on. A full collection over a busy heap is a large,
    irregular lump, so a comparison is worth making with and without it.
    `during(thread_ns)` is called with each collection's time, on its thread."""

    def __init__(self, during: Callable[[int], None] | None = None) -> None:
        self.ns = 0
        self.collections = 0
        self._during = during
        self._start = threading.local()

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start.ns = time.thread_time_ns()
            return
        spent = time.thread_time_ns() - self._start.ns
        self.ns += spent
        self.collections += 1
        if self._during is not None:
            self._during(spent)

    def __enter__(self) -> CollectionTime:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)
