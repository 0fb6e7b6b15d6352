"""Run by test_tracing.py in a process of its own (a tracer provider is set once per
process): tracing from the `OTEL_*` environment as the supervisor sets it up, one admin
API request, one spoken support call through the voice sim, then the provider's
shutdown (which exports what is buffered). Prints the session id as JSON."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from app.observability import tracing  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.worker.tracing import start_tracing  # noqa: E402
from sim.harness import SimEnvironment, run_session  # noqa: E402
from sim.report import Checks  # noqa: E402
from sim.scenario import load_scenario  # noqa: E402


async def main() -> None:
    assert start_tracing(Settings(_env_file=None)) is not None  # type: ignore[call-arg]
    loaded = load_scenario(REPO / "sim" / "scenarios" / "voice_support_call.yaml")
    async with SimEnvironment(loaded.scenario) as env:
        api = await env.api()
        assert (await api.get("/api/v1/agents/config")).status_code == 200
        checks = Checks()
        outcome = await run_session(env, loaded.scenario.sessions[0], checks=checks)
    tracing.shutdown()
    print(json.dumps({"session_id": outcome.session_id, "failures": [f.render() for f in checks.failures]}))


if __name__ == "__main__":
    asyncio.run(main())
