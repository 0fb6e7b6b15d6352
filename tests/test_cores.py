"""`usable_cores` (the default of WORKER_PROCESSES) on cgroup v2 and v1 file trees laid
out as the kernel mounts them, and the start-up refusal of bad WORKER_PROCESSES values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import cores
from app.cores import quota_cores, usable_cores
from app.settings import ExecutorType, Settings

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def many_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda _pid: set(range(16)))


def test_cgroup_v2_quota_caps_the_cores(tmp_path: Path, many_cores: None) -> None:
    write(tmp_path / "proc", "0::/fly/machine\n")
    write(tmp_path / "cg/fly/machine/cpu.max", "200000 100000\n")
    write(tmp_path / "cg/fly/cpu.max", "max 100000\n")
    assert quota_cores(tmp_path / "cg", tmp_path / "proc") == 2.0
    assert usable_cores(tmp_path / "cg", tmp_path / "proc") == 2


def test_cgroup_v2_parent_quota_applies_and_fractions_round_up(tmp_path: Path, many_cores: None) -> None:
    write(tmp_path / "proc", "0::/a/b\n")
    write(tmp_path / "cg/a/b/cpu.max", "max 100000\n")
    write(tmp_path / "cg/a/cpu.max", "150000 100000\n")
    assert quota_cores(tmp_path / "cg", tmp_path / "proc") == 1.5
    assert usable_cores(tmp_path / "cg", tmp_path / "proc") == 2


def test_cgroup_v2_unlimited_uses_the_affinity(tmp_path: Path, many_cores: None) -> None:
    write(tmp_path / "proc", "0::/\n")
    write(tmp_path / "cg/cpu.max", "max 100000\n")
    assert quota_cores(tmp_path / "cg", tmp_path / "proc") is None
    assert usable_cores(tmp_path / "cg", tmp_path / "proc") == 16


def test_cgroup_v1_cfs_quota(tmp_path: Path, many_cores: None) -> None:
    write(tmp_path / "proc", "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    write(tmp_path / "cg/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "300000\n")
    write(tmp_path / "cg/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert quota_cores(tmp_path / "cg", tmp_path / "proc") == 3.0
    assert usable_cores(tmp_path / "cg", tmp_path / "proc") == 3


def test_cgroup_v1_in_a_container_namespace_reads_the_mount_root(tmp_path: Path, many_cores: None) -> None:
    # inside a container /proc/self/cgroup shows the host's path, which is not mounted here
    write(tmp_path / "proc", "3:cpu,cpuacct:/docker/abc\n")
    write(tmp_path / "cg/cpu,cpuacct/cpu.cfs_quota_us", "50000\n")
    write(tmp_path / "cg/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert quota_cores(tmp_path / "cg", tmp_path / "proc") == 0.5
    assert usable_cores(tmp_path / "cg", tmp_path / "proc") == 1  # never below one


def test_cgroup_v1_unlimited_and_malformed_files_mean_no_limit(tmp_path: Path, many_cores: None) -> None:
    write(tmp_path / "proc", "3:cpu,cpuacct:/\n0::/\n")
    write(tmp_path / "cg/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(tmp_path / "cg/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    write(tmp_path / "cg/cpu.max", "garbage\n")
    assert quota_cores(tmp_path / "cg", tmp_path / "proc") is None
    assert usable_cores(tmp_path / "cg", tmp_path / "proc") == 16


def test_affinity_caps_the_cores_below_the_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda _pid: {0, 1})
    write(tmp_path / "proc", "0::/\n")
    write(tmp_path / "cg/cpu.max", "800000 100000\n")
    assert usable_cores(tmp_path / "cg", tmp_path / "proc") == 2


def test_no_cgroup_files_at_all(tmp_path: Path, many_cores: None) -> None:
    assert quota_cores(tmp_path / "none", tmp_path / "none") is None
    assert usable_cores(tmp_path / "none", tmp_path / "none") == 16


def test_worker_processes_default_is_the_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.settings.usable_cores", lambda: 3)
    assert Settings(_env_file=None).worker_process_count == 3  # type: ignore[call-arg]
    assert Settings(_env_file=None, worker_processes=5).worker_process_count == 5  # type: ignore[call-arg]
    # the PROCESS executor already puts every call in a process of its own
    assert Settings(_env_file=None, executor_type=ExecutorType.process).worker_process_count == 1  # type: ignore[call-arg]


@pytest.mark.parametrize(("value", "says"), [
    ("0", "must be at least 1"),
    ("-2", "must be at least 1"),
    (str(4 * usable_cores() + 1), f"at most {4 * usable_cores()}"),
    ("many", "valid integer"),
])
def test_bad_worker_processes_is_refused_at_start_with_one_line(tmp_path: Path, value: str, says: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "WORKER_", "DATABASE_"))}
    env.update(WORKER_PROCESSES=value, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/app.db",
               PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "app", "dev"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: setting WORKER_PROCESSES: ") and says in lines[0], lines[0]
    assert not (tmp_path / "app.db").exists()  # refused before anything started


def test_several_worker_processes_with_the_process_executor_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "WORKER_", "DATABASE_"))}
    env.update(WORKER_PROCESSES="2", EXECUTOR_TYPE="process", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "app", "dev"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: settings: WORKER_PROCESSES must be 1 (or unset) with EXECUTOR_TYPE=process: that executor "
        "already runs every call in a process of its own"
    ]


# ------------------------------------------------------------------ WORKER_CPU_PINNING


def test_worker_processes_get_one_core_each_round_robin() -> None:
    two = {0, 1}
    assert [cores.choose_worker_cpu(i, 2, "auto", allowed=two, quota=None) for i in range(2)] == [{0}, {1}]
    # more processes than cores (WORKER_PROCESSES up to 4 x): they share cores in turn
    assert [cores.choose_worker_cpu(i, 4, "auto", allowed={2, 5}, quota=None) for i in range(4)] == [{2}, {5}, {2}, {5}]
    # a quota equal to the cores is the machine's own cores
    assert cores.choose_worker_cpu(1, 2, "auto", allowed=two, quota=2.0) == {1}


def test_no_pinning_for_one_process_one_core_or_off() -> None:
    assert cores.choose_worker_cpu(0, 1, "on", allowed={0, 1}, quota=None) is None  # one process uses every core
    assert cores.choose_worker_cpu(0, 2, "on", allowed={3}, quota=None) is None  # nothing to choose from
    assert cores.choose_worker_cpu(1, 2, "off", allowed={0, 1}, quota=None) is None


def test_auto_leaves_a_quota_limited_container_unpinned_and_on_pins_it() -> None:
    # 2 cores of quota on a 16-core host: the cores are shared with other tenants
    host = set(range(16))
    assert cores.choose_worker_cpu(0, 2, "auto", allowed=host, quota=2.0) is None
    assert cores.choose_worker_cpu(1, 2, "on", allowed=host, quota=2.0) == {1}


def test_pinning_restricts_the_process_and_its_threads() -> None:
    """In a child process (the test's own affinity stays): the mask is set, and a thread
    started afterwards inherits it."""
    allowed = sorted(os.sched_getaffinity(0))
    code = (
        "import os, threading; from app.cores import pin_this_process; "
        f"print(sorted(pin_this_process({{{allowed[-1]}}}))); seen = []; "
        "t = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0)))); t.start(); t.join(); "
        "print(sorted(os.sched_getaffinity(0)), seen[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert out == [f"[{allowed[-1]}]", f"[{allowed[-1]}] [{allowed[-1]}]"]
    assert cores.pin_this_process(None) is None


def test_bad_worker_cpu_pinning_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="worker_cpu_pinning"):
        Settings(_env_file=None, worker_cpu_pinning="sometimes")  # type: ignore[call-arg, arg-type]
    assert Settings(_env_file=None).worker_cpu_pinning == "auto"  # type: ignore[call-arg]
