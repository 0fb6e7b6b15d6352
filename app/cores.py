"""How many CPU cores this process may really use: the default for `WORKER_PROCESSES`.

Why not `os.cpu_count()`: in a container it reports the host's cores, while the
container may be limited to fewer, by a CPU quota (cgroup v2 `cpu.max`, cgroup v1
`cpu.cfs_quota_us` / `cpu.cfs_period_us`; what `docker --cpus` and fly's shared CPUs
set) or by CPU affinity (`taskset`, `docker --cpuset-cpus`). One worker process per
core the host has would then share a fraction of a core between many processes, each
paying its fixed start-up memory for nothing.

The quota is rounded up (1.5 cores of quota -> 2 processes: each process's reported
load keeps LiveKit from overfilling either), never below 1. Reading the cgroup files
is best-effort: anything unreadable or malformed counts as "no limit".
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

CpuPinning = Literal["auto", "on", "off"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def affinity_cores() -> int:
    """Cores this process may be scheduled on (affinity), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def quota_cores(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup (and its ancestors), in cores; None if unlimited."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    limits: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2 (unified hierarchy)
            limits += _v2_limits(root, path)
        elif "cpu" in controllers.split(","):
            limits += _v1_limits(root, controllers, path)
    if not lines or not limits:
        # no /proc/self/cgroup, or paths that do not match the mount (a container's own
        # namespace shows "/"): the mount's root files are this container's limits
        limits += _v2_limits(root, "/") + _v1_limits(root, "cpu,cpuacct", "/") + _v1_limits(root, "cpu", "/")
    return min(limits) if limits else None


def usable_cores(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """Cores this process can use: affinity, capped by the cgroup CPU quota (rounded up)."""
    cores = affinity_cores()
    quota = quota_cores(root, proc_cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota - 1e-9)))
    return cores


def _ancestors(base: Path, path: str) -> list[Path]:
    """`base/path` and every directory above it up to `base` (a parent's quota caps its children)."""
    parts = [p for p in path.strip("/").split("/") if p]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_limits(root: Path, path: str) -> list[float]:
    limits = []
    for d in _ancestors(root, path):
        try:
            quota, _, period = (d / "cpu.max").read_text().strip().partition(" ")
            if quota != "max":
                limits.append(int(quota) / int(period or "100000"))
        except (OSError, ValueError, ZeroDivisionError):
            continue
    return limits


def _v1_limits(root: Path, controllers: str, path: str) -> list[float]:
    limits = []
    mounts = [root / controllers] + [root / c for c in controllers.split(",") if c in ("cpu", "cpuacct")]
    for mount in mounts:
        for d in _ancestors(mount, path):
            try:
                quota = int((d / "cpu.cfs_quota_us").read_text())
                period = int((d / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            if quota > 0 and period > 0:
                limits.append(quota / period)
    return limits


def worker_cpus(index: int, processes: int, pinning: CpuPinning) -> set[int] | None:
    """The CPU worker process `index` of `processes` runs on here (this process's affinity
    and CPU quota), or None: not pinned. The rules: `choose_worker_cpu`."""
    if pinning == "off" or processes < 2:
        return None
    try:
        allowed = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: nothing to pin with
        return None
    return choose_worker_cpu(index, processes, pinning, allowed=allowed, quota=quota_cores())


def choose_worker_cpu(
    index: int, processes: int, pinning: CpuPinning, *, allowed: set[int], quota: float | None
) -> set[int] | None:
    """The CPU worker process `index` of `processes` is pinned to, given the CPUs it may
    use and the CPU quota (None: none), or None: not pinned.

    Why pin: every call of a worker process runs under its one interpreter lock, so a
    stop-the-world moment (a full garbage collection) stalls all of them at once. When
    several such processes float over the same cores, the scheduler preempts one
    process's lock holder to run another's threads, and a pause of tens of
    milliseconds stretches past what a caller hears. One process per core keeps each
    process's pauses its own. Processes past the core count share cores round-robin.

    `auto` pins only when the cores are this machine's own: more than one process, and
    no CPU quota below the cores in the affinity set (a quota-limited container on a
    larger host would tie its processes to cores other tenants use too). `on` pins
    whenever there is more than one process; `off` never.
    """
    if pinning == "off" or processes < 2 or len(allowed) < 2:
        return None
    if pinning == "auto" and quota is not None and quota < len(allowed) - 1e-9:
        return None
    cpus = sorted(allowed)
    return {cpus[index % len(cpus)]}


def pin_this_process(cpus: set[int] | None) -> list[int] | None:
    """Restrict this process to `cpus` (call before it starts threads: they inherit the
    mask); returns the CPUs it was pinned to, sorted, None if it was not."""
    if cpus is None:
        return None
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError):
        return None
    return sorted(cpus)
