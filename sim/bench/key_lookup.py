"""What checking a named API key costs, and that its time does not depend on whether (or
where) the key exists (issue 15 §4).

Run: `uv run python -m sim.bench.key_lookup`

A real SQLite store holds `MAX_KEYS` named keys; `KeyRing.lookup` (the guard's check) is
timed, interleaved in random order, for the first key of the table, the last one, and a
well-formed key that does not exist, after the table is cached (as on every request
but one per `KEY_TABLE_TTL_S`). Figures (microseconds per lookup): `p50_us_*`,
`p95_us_*` per case; `p50_spread_pct`: the largest difference between the case medians
relative to their mean (scheduling noise on a shared machine is of that order too);
`reload_ms`: one read of the whole key table (once a second at most per process).
Ends with one JSON line.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from app.api.auth import KeyRing
from app.domain.keys import MAX_KEYS, ApiKeyInput, Role, new_key_secret
from app.store.sql import SQLStore
from sim.bench.stats import emit, percentile

ROUNDS = 20_000


async def run(tmp: Path) -> dict[str, Any]:
    store = SQLStore(f"sqlite+aiosqlite:///{tmp}/keys.db")
    await store.start()
    try:
        secrets = [(await store.create_api_key(ApiKeyInput(name=f"key-{i:03d}", role=Role.read))).secret
                   for i in range(MAX_KEYS)]
        table = await store.api_key_table()  # by name: key-000 first, key-199 last
        cases = {"first": secrets[0].encode(), "last": secrets[-1].encode(), "absent": new_key_secret().encode()}
        assert table[0].name == "key-000" and table[-1].name == f"key-{MAX_KEYS - 1:03d}"
        ring = KeyRing(store, ttl_s=3600)
        assert (await ring.lookup(cases["first"])) is not None and (await ring.lookup(cases["absent"])) is None
        samples: dict[str, list[float]] = {name: [] for name in cases}
        order = [name for name in cases for _ in range(ROUNDS)]
        random.Random(15).shuffle(order)
        for name in order:
            token = cases[name]
            t0 = time.perf_counter()
            await ring.lookup(token)
            samples[name].append((time.perf_counter() - t0) * 1e6)
        reloads = []
        for _ in range(20):
            t0 = time.perf_counter()
            await store.api_key_table()
            reloads.append((time.perf_counter() - t0) * 1000)
    finally:
        await store.aclose()
    figures: dict[str, Any] = {"keys": MAX_KEYS, "lookups_per_case": ROUNDS}
    for name, values in samples.items():
        figures[f"p50_us_{name}"] = percentile(values, 50)
        figures[f"p95_us_{name}"] = percentile(values, 95)
    medians = [figures[f"p50_us_{n}"] for n in cases]
    figures["p50_spread_pct"] = (max(medians) - min(medians)) / (sum(medians) / len(medians)) * 100
    figures["reload_ms"] = percentile(reloads, 50)
    return figures


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(run(Path(tmp)))
    for k, v in figures.items():
        print(f"{k:>22}: {v:.2f}" if isinstance(v, float) else f"{k:>22}: {v}")
    emit(figures)


if __name__ == "__main__":
    main()
