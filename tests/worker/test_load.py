"""The load a THREAD-executor worker reports: this process's CPU, not only the machine's."""

from __future__ import annotations

import threading
import time

import pytest

from app.worker.load import ThreadWorkerLoad


class Clock:
    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def run(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu


def make(clock: Clock, system: float = 0.1, **kw) -> ThreadWorkerLoad:
    return ThreadWorkerLoad(process_time=lambda: clock.cpu, monotonic=lambda: clock.wall,
                            system_load=lambda: system, **kw)


def test_one_busy_core_in_this_process_is_full_load_on_a_big_machine() -> None:
    clock = Clock()
    load = make(clock, system=0.25)  # 8 cores, this process pegs one: machine at 25 %
    for _ in range(5):
        clock.run(0.5, 0.5)
        value = load()
    assert value == pytest.approx(1.0)  # above LiveKit's 0.7: no more jobs for us


def test_idle_process_reports_the_machine() -> None:
    clock = Clock()
    load = make(clock, system=0.4)
    for _ in range(5):
        clock.run(0.5, 0.01)
        value = load()
    assert value == pytest.approx(0.4)


def test_averages_over_the_window() -> None:
    clock = Clock()
    load = make(clock, system=0.0, window=4)
    readings = []
    for cpu in (0.0, 0.0, 0.4, 0.4):  # two idle half-seconds, then 80 % of a core
        clock.run(0.5, cpu)
        readings.append(load())
    assert readings[-1] == pytest.approx(0.4)  # (0 + 0 + 0.8 + 0.8) / 4
    assert readings == sorted(readings)


def test_real_counters_see_a_busy_thread() -> None:
    load = ThreadWorkerLoad(window=1)
    stop = time.monotonic() + 0.6

    def spin() -> None:
        while time.monotonic() < stop:
            pass

    t = threading.Thread(target=spin)
    t.start()
    t.join()
    assert load() > 0.25  # the spinning thread's CPU is this process's (even sharing a loaded core)


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_worker_process_gives_livekit_the_right_load_function(
    executor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing

    from app.settings import Settings
    from app.worker.process import WorkerRuntime

    monkeypatch.setenv("APP_INSTANCE_ID", "load-test")  # the runtime takes an owner id of its own
    parent, child = multiprocessing.Pipe()
    runtime = WorkerRuntime(Settings(_env_file=None, executor_type=executor), 0, child)  # type: ignore[call-arg]
    server = runtime.make_agent_server()
    if executor == "thread":
        # this process's CPU (ThreadWorkerLoad), kept for the supervisor's /readyz too
        assert server.load_fnc is not None
        spin_until = time.process_time() + 0.3
        while time.process_time() < spin_until:
            pass
        value = server.load_fnc()  # type: ignore[call-arg]
        assert 0.0 < value <= 1.0 and runtime.load == value
    else:
        assert server.load_fnc is None  # LiveKit's default: the machine's CPU
    assert "app.worker.entrypoint" in server._preload_modules


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_startup_heap_frozen_only_for_thread_jobs(executor: str) -> None:
    import gc

    from app.settings import Settings
    from app.worker.process import freeze_startup_heap

    before = gc.get_freeze_count()
    try:
        frozen = freeze_startup_heap(Settings(_env_file=None, executor_type=executor))  # type: ignore[call-arg]
        assert frozen is (executor == "thread")
        assert (gc.get_freeze_count() > before) is (executor == "thread")
    finally:
        gc.unfreeze()
