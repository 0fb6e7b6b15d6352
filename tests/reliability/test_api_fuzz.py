"""Item 1: schemathesis against the live service's own OpenAPI document.

`python -m app dev` runs on loopback (temp SQLite, seeded; LiveKit credentials set but
pointing where nothing listens, so `/token` really mints; token rate limit raised so
the fuzzer is not just counting 429s). The `st run` CLI (schemathesis 4.32) then runs
every operation in all four phases (examples, coverage, fuzzing, stateful) with every
check (the 4.x default; not `--checks all`, which would override the per-operation
settings below): once with the admin key, once without it. One worker: with several,
CPython 3.11.7's `ast` module races across threads inside hypothesis ("AST constructor
recursion depth mismatch") and the run errors out in the tool, not in the API.

Assertions: st exits 0, i.e. no check failed — zero 5xx except the ones listed below,
every status code and response body matches the document. The number of generated
cases is printed (run with `-s`) and asserted to be substantial.

Where a check's default expectation is wrong for this API, the exception is narrow
and written out in `SCHEMATHESIS_TOML` with its reason:
- `/readyz` answers 503 by design while the worker cannot reach LiveKit (here: always).
  Its body must still match the documented `Readiness` schema.
- `positive_data_acceptance` ("schema-valid request rejected") also accepts 422 on the
  write operations with rules JSON Schema cannot express (a template may only use
  declared variables, `schema_config` must itself be a valid JSON Schema, handoffs may
  not name the agent itself, a route/token must name an existing agent), and 412 on
  operations with `If-Match` (a well-formed but stale version is refused by design).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.domain import SessionRecord, SessionStatus, Turn
from app.store.sql import SQLStore
from tests.reliability.conftest import ADMIN_KEY, LiveApp, leaked_secrets

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 30
SEED = 8

SCHEMATHESIS_TOML = """
# Written by tests/reliability/test_api_fuzz.py; see its docstring for each exception.
# Every check is on (the 4.x default; `--checks all` on the command line would
# override the per-operation settings below).

[[operations]]
include-path = "/readyz"
checks.not_a_server_error.enabled = false
checks.positive_data_acceptance.expected-statuses = ["200", "503"]

[[operations]]
include-path-regex = "^/api/v1/agents/config(/\\\\{agent_id\\\\})?$"
include-method-regex = "^(POST|PUT|PATCH|DELETE)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "409", "412", "422"]

[[operations]]
include-path = "/api/v1/agents/config/{agent_id}/rollback/{version}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "409", "412"]

[[operations]]
include-path-regex = "^/api/v1/routes"
include-method = "PUT"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "404", "422"]

[[operations]]
include-path = "/api/v1/token"
checks.positive_data_acceptance.expected-statuses = ["2xx", "422"]
"""


def run_schemathesis(
    app: LiveApp, tmp_path: Path, label: str, headers: dict[str, str], max_examples: int = MAX_EXAMPLES
) -> tuple[int, str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_TOML)
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
        app.url("/schema/openapi.json"),
        "--max-examples", str(max_examples),
        "--seed", str(SEED),
        "--workers", "1",
        "--suppress-health-check", "all",
        "--request-timeout", "20",
        "--output-truncate", "false",
        "--report", "junit",
        "--report-dir", str(tmp_path / f"report-{label}"),
    ]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    m = re.search(r"(\d+) generated", out)
    cases = int(m.group(1)) if m else 0
    print(f"\n[fuzz {label}] {cases} cases in {time.monotonic() - t0:.1f}s, exit {proc.returncode} "
          f"(st run, every check, --max-examples {max_examples} --seed {SEED}, 20 operations)")
    assert proc.returncode == 0, f"schemathesis ({label}) found problems:\n{out[-20000:]}"
    assert leaked_secrets(out) == [], f"secrets in schemathesis' view of the API: {leaked_secrets(out)}"
    return cases, out


async def _add_sessions(database_url: str) -> None:
    """A few session records, so the session endpoints have something to return (the
    app shares the SQLite file with this second writer, as a second process would)."""
    store = SQLStore(database_url)
    await store.start()
    try:
        for i in range(3):
            sid = f"fuzz-session-{i}"
            await store.start_session(SessionRecord(session_id=sid, room=f"room-{i}", agent_id="support-agent-v1",
                                                    config_version=1, user_id=f"user-{i}"))
            await store.append_turn(sid, Turn(seq=0, role="user", text="hello"))
            await store.append_turn(sid, Turn(seq=1, role="assistant", text="hi, how can I help?"))
            await store.record_data(sid, {"email": f"u{i}@example.com"})
            if i:
                await store.finish_session(sid, SessionStatus.completed, "done")
    finally:
        await store.aclose()


def test_fuzz_every_operation_with_and_without_the_admin_key(tmp_path: Path, live_app: type[LiveApp]) -> None:
    app = live_app(tmp_path, "fuzz", extra_env={"TOKEN_RATE_PER_MINUTE": "1000000", "LOG_LEVEL": "INFO"})
    app.wait_seeded()
    asyncio.run(_add_sessions(app.database_url))
    with_key, _ = run_schemathesis(app, tmp_path, "with-key", {"Authorization": f"Bearer {ADMIN_KEY}"})
    # Without the key every admin operation is one guard: fewer examples prove it.
    without_key, _ = run_schemathesis(app, tmp_path, "without-key", {}, max_examples=6)
    print(f"[fuzz] total {with_key + without_key} cases, 0 failures")
    assert with_key >= 1000 and without_key >= 200, (with_key, without_key)
    # The process lived through it all and logged no unhandled error.
    assert app.proc.poll() is None, app.output()[-4000:]
    # No unhandled error, nothing logged at ERROR by our code. (The LiveKit SDK logs a
    # traceback for each failed connection to the dead LiveKit URL: expected here.)
    out = app.output()
    ours = [ln for ln in out.splitlines() if "unhandled error" in ln or re.search(r" (ERROR|CRITICAL) +app\.", ln)]
    assert not ours, "\n".join(ours[:20])
    # (the live_app teardown then greps the app's whole output for every secret)
