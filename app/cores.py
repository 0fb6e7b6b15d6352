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
