"""Every scenario can fail: mutants of its expectations must be caught, at the right line.

Default: one mutant per (text) scenario file, kinds picked round-robin across the suite
(fast enough for every run). `SIM_MUTATE=all uv run pytest sim/tests/test_mutations.py`
runs every mutation site of every scenario.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from sim.harness import run_scenario
from sim.mutants import Site, sites
from sim.scenario import LoadedScenario, Scenario
from sim.yamlsrc import YamlSourceError, load_yaml

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "scenarios"


def _text_scenario(path: Path) -> bool:
    """A loadable text scenario. Voice scenarios (`io: voice`, sim/voice/) carry audio
    checks `sim.mutants` does not model and take seconds each: not mutated here. A file
    that does not load is left to its own scenario item, which reports it."""
    try:
        doc, _ = load_yaml(path)
    except YamlSourceError:
        return False
    return isinstance(doc, dict) and doc.get("io", "text") == "text"


SCENARIOS = sorted(p for p in SCENARIO_DIR.glob("*.yaml") if _text_scenario(p))


def plan() -> list[tuple[Path, Site]]:
    every = os.environ.get("SIM_MUTATE", "").strip().lower() == "all"
    used: Counter[str] = Counter()
    out: list[tuple[Path, Site]] = []
    for path in SCENARIOS:
        doc, _ = load_yaml(path)
        candidates = list(sites(doc))
        if every:
            out += [(path, s) for s in candidates]
            continue
        if not candidates:
            continue
        site = min(candidates, key=lambda s: used[s.kind])  # stable: first of the least used kind
        used[site.kind] += 1
        out.append((path, site))
    return out


PLAN = plan()


def test_every_scenario_has_mutation_sites() -> None:
    bare = [p.name for p in SCENARIOS if not list(sites(load_yaml(p)[0]))]
    assert not bare, f"scenarios with nothing that could fail: {bare}"


@pytest.mark.parametrize(("path", "site"), PLAN, ids=[f"{p.stem}:{s.kind}" for p, s in PLAN])
async def test_mutant_fails_at_its_expectation(path: Path, site: Site) -> None:
    doc, lines = load_yaml(path)
    scenario = Scenario.model_validate(site.apply(doc))
    result = await run_scenario(LoadedScenario(scenario=scenario, path=path, lines=lines))
    assert not result.passed, f"mutant survived: {site.describe()} in {path.name}"
    assert any(f.loc[: len(site.anchor)] == site.anchor for f in result.failures), (
        f"{site.describe()}: failures were reported elsewhere:\n{result.report()}"
    )
