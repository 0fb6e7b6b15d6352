"""Fuzzing the API: schemathesis against the live service's own OpenAPI document
(issue 8, item 1), and hypothesis against what a document cannot describe (issue 21,
item 2): bodies nested past the decoder, bytes that are not UTF-8 JSON, and arbitrary
bytes in every kind of path. The hypothesis tests are at the end of this file.

`python -m app dev` runs on loopback (temp SQLite, seeded; LiveKit credentials set but
pointing where nothing listens, so `/token` really mints; token rate limit raised so
the fuzzer is not just counting 429s). The `st run` CLI (schemathesis 4.32) then runs
every operation in all four phases (examples, coverage, fuzzing, stateful) with every
check (the 4.x default; not `--checks all`, which would override the per-operation
settings below): once with the admin key, once without it. One worker: with several,
CPython 3.11.7's `ast` module races across threads inside hypothesis ("AST constructor
recursion depth mismatch") and the run errors out in the tool, not in the API.

Schemathesis assertions: st exits 0, i.e. no check failed — zero 5xx except the ones listed below,
every status code and response body matches the document. The number of generated
cases is printed (run with `-s`) and asserted to be substantial.

Where a check's default expectation is wrong for this API, the exception is narrow
and written out in `SCHEMATHESIS_TOML` with its reason:
- `/readyz` answers 503 by design while the worker cannot reach LiveKit (here: always).
  Its body must still match the documented `Readiness` schema.
- `POST /api/v1/calls` answers 503 by design when LiveKit cannot be reached (here: always;
  a documented response, its body checked), and 422 for what JSON Schema cannot express (an
  unknown purpose, undeclared variables, no trunk); `POST /api/v1/campaigns` 422 likewise.
- `positive_data_acceptance` ("schema-valid request rejected") also accepts 422 on the
  write operations with rules JSON Schema cannot express (a template may only use
  declared variables, `schema_config` must itself be a valid JSON Schema, handoffs may
  not name the agent itself, a route/token must name an existing agent), and 412 on
  operations with `If-Match` (a well-formed but stale version is refused by design).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pydantic import SecretStr

from app.api.app import create_app
from app.api.tokens import token_controller
from app.console import STATIC_DIR, console_handlers
from app.domain import SessionRecord, SessionStatus, Turn
from app.settings import Settings
from app.store.sql import SQLStore
from tests.api.conftest import agent_body
from tests.reliability.conftest import ADMIN_KEY, LiveApp, leaked_secrets

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 30
SEED = 8

SCHEMATHESIS_TOML = """
# Written by tests/reliability/test_api_fuzz.py; see its docstring for each exception.
# Every check is on (the 4.x default; `--checks all` on the command line would
# override the per-operation settings below). An operation takes the first block any of
# whose filters matches it (the agents/config block's method regex alone matches every
# POST), so the blocks naming one path come first.

[[operations]]
include-path = "/api/v1/calls"
checks.not_a_server_error.enabled = false
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "422", "503"]

[[operations]]
include-path = "/api/v1/campaigns"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "422"]

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
    app = live_app(tmp_path, "fuzz", extra_env={"TOKEN_RATE_PER_MINUTE": "1000000", "CALL_RATE_PER_MINUTE": "1000000", "LOG_LEVEL": "INFO"})
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


# ------------------------------------------------------------------ hypothesis
# The real app in process (SQLite file, console and token endpoint mounted as the
# supervisor mounts them). Every generated request must get a 4xx/2xx answer in the
# shared error shape, and nothing may be logged as an unhandled error.


FUZZ = settings(
    max_examples=400, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
AGENTS = "/api/v1/agents/config"
APP_DIR = str(STATIC_DIR.parents[1])


@pytest.fixture
async def fuzz_client(tmp_path: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/hypo.db")
    await store.start()
    s = Settings(_env_file=None, admin_api_key=SecretStr(ADMIN_KEY), token_rate_per_minute=1_000_000,  # type: ignore[call-arg]
                 livekit_url="ws://127.0.0.1:9", livekit_api_key=SecretStr("APIfuzz"),
                 livekit_api_secret=SecretStr("f" * 32))
    app = create_app(s, store, extra_route_handlers=[token_controller(s), *console_handlers(s)])
    async with AsyncTestClient(app) as c:
        c.headers.update({"Authorization": f"Bearer {ADMIN_KEY}"})
        assert (await c.post(AGENTS, json=agent_body("fuzz-agent"))).status_code == 201
        assert (await c.put("/api/v1/routes/support", json={"agent_id": "fuzz-agent", "is_default": True})
                ).status_code == 200
        yield c
    await store.aclose()


def _answered(r: Any) -> None:
    """A client-side answer in the shared shape, never a 5xx, never a server path."""
    assert r.status_code < 500, (r.status_code, r.text[:500])
    assert APP_DIR not in r.text, r.text[:500]
    if r.status_code >= 400 and r.content and r.headers.get("content-type", "").startswith("application/json"):
        assert r.json()["status_code"] == r.status_code


def _nest(depth: int, kind: str) -> str:
    if kind == "array":
        return "[" * depth + "]" * depth
    if kind == "object":
        return '{"a":' * depth + "null" + "}" * depth
    # a JSON Schema nested through properties: what check_schema used to recurse on
    return '{"type":"object","properties":{"a":' * depth + '{"type":"string"}' + "}}" * depth


NEST_TARGETS = {
    "token-top": ("POST", "/api/v1/token", "{X}"),
    "token-variables": ("POST", "/api/v1/token", '{"variables":{X}}'),
    "create-top": ("POST", AGENTS, "{X}"),
    "create-schema": ("POST", AGENTS, json.dumps(agent_body("nested-agent", schema_config="@")).replace(
        '"@"', '{"type":"object","properties":{"x":{X}}}')),
    "create-description": ("POST", AGENTS, json.dumps(agent_body("nested-agent", description="@")).replace(
        '"@"', "{X}")),
    "patch-schema": ("PATCH", f"{AGENTS}/fuzz-agent", '{"schema_config":{"type":"object","properties":{"x":{X}}}}'),
    "patch-llm": ("PATCH", f"{AGENTS}/fuzz-agent", '{"llm":{X}}'),
    "put-agent": ("PUT", f"{AGENTS}/fuzz-agent", "{X}"),
    "routes": ("PUT", "/api/v1/routes", "{X}"),
}


@FUZZ
@given(
    depth=st.one_of(st.integers(1, 64), st.integers(64, 1200), st.integers(1200, 6000)),
    kind=st.sampled_from(["array", "object", "schema"]),
    target=st.sampled_from(sorted(NEST_TARGETS)),
)
async def test_fuzz_nesting_depths(
    fuzz_client: AsyncTestClient[Litestar], caplog: pytest.LogCaptureFixture, depth: int, kind: str, target: str
) -> None:
    method, path, template = NEST_TARGETS[target]
    body = template.replace("{X}", _nest(depth, kind))
    r = await fuzz_client.request(method, path, content=body.encode(), headers={"content-type": "application/json"})
    _answered(r)
    assert "unhandled error" not in caplog.text


BASE_BODIES = {
    "token": ("POST", "/api/v1/token", {"purpose": "support", "user_id": "ünï-42", "variables": {}}),
    "create": ("POST", AGENTS, agent_body("encoded-agent", name="Agënt ☎", description="naïve café")),
    "patch": ("PATCH", f"{AGENTS}/fuzz-agent", {"description": "zwölf Boxkämpfer ☎"}),
}


@st.composite
def encoded_bodies(draw: st.DrawFn) -> tuple[str, bytes, str]:
    name = draw(st.sampled_from(sorted(BASE_BODIES)))
    text = json.dumps(BASE_BODIES[name][2], ensure_ascii=False)
    how = draw(st.sampled_from(["codec", "splice", "escape", "truncate"]))
    if how == "codec":
        codec = draw(st.sampled_from(["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1",
                                      "cp1252", "shift_jis", "utf-7"]))
        data = text.encode(codec, errors="replace")
    elif how == "splice":  # invalid sequences at a random place: lone continuation, overlong, surrogate, 0xff
        junk = draw(st.one_of(st.sampled_from([b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff", b"\xf4\x90\x80\x80",
                                               b"\xe2\x82", b"\x00"]), st.binary(min_size=1, max_size=8)))
        raw = text.encode()
        at = draw(st.integers(0, len(raw)))
        data = raw[:at] + junk + raw[at:]
    elif how == "escape":  # JSON escapes for code points UTF-8 cannot carry
        esc = draw(st.sampled_from(["\\ud800", "\\udfff", "\\ud83d", "\\u0000", "\\ud800\\ud800"]))
        data = text.replace("42", "42" + esc).replace("café", "café" + esc).replace("☎", esc).encode()
    else:
        raw = text.encode()
        data = raw[: draw(st.integers(0, len(raw)))]
    return name, data, draw(st.sampled_from(["application/json", "application/json; charset=utf-16",
                                             "application/merge-patch+json", "text/plain"]))


@FUZZ
@given(case=encoded_bodies())
async def test_fuzz_body_encodings(
    fuzz_client: AsyncTestClient[Litestar], caplog: pytest.LogCaptureFixture, case: tuple[str, bytes, str]
) -> None:
    name, data, content_type = case
    method, path, _ = BASE_BODIES[name]
    r = await fuzz_client.request(method, path, content=data, headers={"content-type": content_type})
    _answered(r)
    assert "unhandled error" not in caplog.text


PATH_PREFIXES = ["/console/static/", "/console/static/js/", "/agents/", "/sessions/", "/agents/x/history/",
                 f"{AGENTS}/", f"{AGENTS}/fuzz-agent/rollback/", "/api/v1/sessions/", "/api/v1/routes/",
                 "/schema/", "/", "/api/v1/token/"]


@FUZZ
@given(
    prefix=st.sampled_from(PATH_PREFIXES),
    tail=st.one_of(
        st.binary(min_size=1, max_size=64),
        st.builds(lambda b, n: b * n, st.sampled_from([b"\x00", b"a", b"../", b"%", b"\xff", b"/"]),
                  st.integers(1, 3000)),
    ),
    method=st.sampled_from(["GET", "HEAD", "DELETE", "OPTIONS"]),
)
async def test_fuzz_path_bytes(
    fuzz_client: AsyncTestClient[Litestar], caplog: pytest.LogCaptureFixture, prefix: str, tail: bytes, method: str
) -> None:
    # An absolute URL: httpx refuses a relative one whose path starts with "//".
    base = str(fuzz_client.base_url).rstrip("/")
    r = await fuzz_client.request(method, base + prefix + quote_from_bytes(tail, safe="/"))
    _answered(r)
    assert "unhandled error" not in caplog.text
