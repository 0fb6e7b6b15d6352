"""Metrics from every process of one service in one `GET /metrics`.

`dev`/`start` run work in child processes (the webhook dispatcher, worker processes,
PROCESS-executor jobs). Each has its own `prometheus_client` registry, so without this the
API process would serve only its own figures. `prometheus_client`'s multiprocess mode is
the library's answer: every process writes its values to memory-mapped files in one
directory and the scrape merges them (`MultiProcessCollector`). The directory must be
known before `prometheus_client` is first imported (it picks its value class at import)
and children inherit it through the environment, so `share_across_processes` runs first
thing in `dev`/`start`; without it (tests, `chat`, the sim) metrics stay in-process.

Gauges say how they merge (`multiprocess_mode` in app/observability/metrics.py); the
`live*` ones leave out processes that are gone, which `forget_dead_processes` finds at
each scrape (a `kill -9` child never says goodbye).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import sys
import tempfile

import psutil

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
_PREPARED_BY = "VOICE_PLATFORM_METRICS_PREPARED_BY"
_owned: str | None = None
_PID = re.compile(r"^gauge_\w+?_(\d+)\.db$")


def directory() -> str | None:
    return os.environ.get(ENV) or None


def share_across_processes() -> str:
    """Turn on multiprocess metrics for this process and the children it starts.

    A directory given by the operator (`PROMETHEUS_MULTIPROC_DIR`) is used and emptied of
    an earlier run's files, as the library requires; otherwise a private temporary one is
    made and removed by `close`."""
    global _owned
    if os.environ.get(_PREPARED_BY) not in (None, str(os.getpid())):
        # A child of the service (a `spawn` child re-runs its parent's main module): the
        # directory is its parent's and already in use; emptying it would lose figures.
        return directory() or ""
    if "prometheus_client" in sys.modules and directory() is None:
        # The value class is already chosen: turning it on now would serve half the figures.
        raise RuntimeError("share_across_processes must run before prometheus_client is imported")
    given = directory()
    if given:
        os.makedirs(given, exist_ok=True)
        for f in glob.glob(os.path.join(given, "*.db")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f)
        os.environ[_PREPARED_BY] = str(os.getpid())
        return given
    _owned = tempfile.mkdtemp(prefix="voice-platform-metrics-")
    os.environ[ENV] = _owned
    os.environ[_PREPARED_BY] = str(os.getpid())
    return _owned


def close() -> None:
    """Remove the directory `share_across_processes` made (after the children are gone)."""
    global _owned
    if _owned is not None:
        shutil.rmtree(_owned, ignore_errors=True)
        os.environ.pop(ENV, None)
        _owned = None
    os.environ.pop(_PREPARED_BY, None)


def forget_dead_processes(path: str) -> list[int]:
    """Drop the gauge files of processes that no longer exist: a gauge is a present value,
    and a dead process has none. Counters and histograms stay (they are totals)."""
    dead: set[int] = set()
    for f in os.listdir(path):
        m = _PID.match(f)
        if m is not None and not psutil.pid_exists(int(m.group(1))):
            dead.add(int(m.group(1)))
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(path, f))
    return sorted(dead)
