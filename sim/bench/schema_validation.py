"""What evaluating a schema against a caller's value costs (issue 21).

Run: `uv run python -m sim.bench.schema_validation`

Figures, each the median of several runs on this machine:
- `backtracking_ms_<n>`: Python's `re` (what jsonschema used) on `^(a+)+$` and n `a`s
  plus `!`, for small n: it doubles per character (34 characters never finished);
- `re2_ms_34`, `re2_ms_100000`: the same pattern on RE2, as `SafeValidator` runs it;
- `typical_validate_us`: one record-tool value against a small realistic schema;
- `worst_admissible_unbudgeted_ms`: the slowest schema the write-time caps admit
  (about `MAX_SCHEMA_NODES / 2` subschemas under `items`) against the largest value
  (`MAX_VALUE_BYTES`), without the time budget: why validation runs off the loop and
  is cut off at `VALIDATION_BUDGET_S`;
- `worst_admissible_budgeted_ms`: the same with the budget, as the tools run it;
- `thread_hop_us`: the cost of running a cheap validation in the tools' worker thread;
- `admission_ms_*`: the write-time check of a typical schema and of a 60 KiB one.
Ends with one JSON line.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

from app.agents import tools
from app.domain import jsonschema_safe
from app.domain.jsonschema_safe import MAX_VALUE_BYTES, validator_for, value_problems
from app.domain.schema_admission import _ADMITTED, MAX_SCHEMA_NODES, check_schema
from sim.bench.stats import emit

EVIL = "^(a+)+$"


def median_ms(fn: Callable[[], Any], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    figures: dict[str, Any] = {}
    for n in (18, 20, 22):
        figures[f"backtracking_ms_{n}"] = median_ms(lambda n=n: re.search(EVIL, "a" * n + "!"), runs=3)
    for n in (34, 100_000):
        figures[f"re2_ms_{n}"] = median_ms(lambda n=n: jsonschema_safe.pattern_search(EVIL, "a" * n + "!"))

    typical = {"type": "object", "properties": {"value": {
        "type": "object", "properties": {"email": {"type": "string", "format": "email", "pattern": r"^\S+@\S+$"},
                                         "age": {"type": "integer", "minimum": 18},
                                         "code": {"type": "string", "pattern": EVIL}},
        "required": ["email"]}}, "required": ["value"]}
    v = validator_for(typical)
    value = {"value": {"email": "ada@example.com", "age": 36, "code": "a" * 34 + "!"}}
    figures["typical_validate_us"] = median_ms(lambda: value_problems(v, value), runs=200) * 1000

    heavy = {"type": "object", "properties": {"value": {"type": "array", "items": {
        "allOf": [{"minLength": 1} for _ in range(MAX_SCHEMA_NODES // 2 - 10)]}}}}
    check_schema(heavy)
    hv = validator_for(heavy)
    big = {"value": ["a"] * (MAX_VALUE_BYTES // 4 - 10)}
    assert jsonschema_safe.value_problem(big) is None
    figures["worst_admissible_unbudgeted_ms"] = median_ms(lambda: value_problems(hv, big, budget_s=600), runs=1)
    figures["worst_admissible_budgeted_ms"] = median_ms(lambda: value_problems(hv, big), runs=3)

    async def hops() -> float:
        await tools.argument_problems(v, value)  # start the worker thread
        t0 = time.perf_counter()
        for _ in range(200):
            await tools.argument_problems(v, value)
        return (time.perf_counter() - t0) / 200 * 1e6

    figures["thread_hop_us"] = asyncio.run(hops()) - figures["typical_validate_us"]

    def admit(schema: dict[str, Any]) -> None:
        _ADMITTED.clear()  # measure the check, not its cache
        check_schema(schema)

    figures["admission_ms_typical"] = median_ms(lambda: admit(typical))
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string", "minLength": 1, "maxLength": 9}
                                             for i in range(1000)}}
    figures["admission_ms_60kib"] = median_ms(lambda: admit(wide), runs=3)

    for k, val in figures.items():
        print(f"{k:34s} {val:12.3f}")
    emit(figures)


if __name__ == "__main__":
    main()
