"""Item 5, the short correctness version of `sim/bench/load.py` (run that for figures).

10 concurrent sessions for 8 s while 4 admin clients (a separate process) hammer the
API on the same loop: zero API errors (5xx, transport, unexpected status; a 412 from
racing PATCHes is expected), zero session errors, zero lost turns or fields. Latency
figures are printed, never asserted (the machine is shared).
"""

from __future__ import annotations

import pytest

from sim.bench.load import main

pytestmark = pytest.mark.slow


async def test_sessions_and_admin_traffic_together_lose_nothing() -> None:
    figures = await main(sessions=10, clients=4, duration=8, turns=5, think=(0.2, 1.0))
    print(f"\n[load] {figures['sessions']} sessions / {figures['turns']} turns, turn p99 {figures['turn_p99_ms']:.0f} ms; "
          f"{figures['api_requests']} API requests, p99 {figures['api_p99_ms']:.0f} ms, "
          f"{figures['api_patch_conflicts_412']} expected 412s")
    assert figures["api_errors"] == 0, figures["_api_error_samples"]
    assert figures["session_errors"] == 0, figures["_session_error_samples"]
    assert figures["lost_turns"] == 0 and figures["lost_fields"] == 0, figures
    assert figures["sessions"] >= 10 and figures["turns"] >= 50, figures
    assert figures["api_requests"] >= 100, figures
