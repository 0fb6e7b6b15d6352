"""Item 7: secrets never leak; every admin route needs the key; `/token` is guarded.

Logs: every live app this suite starts (`conftest.LiveApp`) has known values for the
admin key, the LiveKit key and secret, the OpenAI key (and here the token key), and
its *whole* output is grepped for all of them when it stops — fuzzing, crashes,
outages, concurrent writers included. This file adds a production-mode (`start`, JSON
logs, DEBUG level) process driven through every documented operation with no key,
wrong keys and the right key, plus error paths; every response body and the OpenAPI
document/UI are grepped as well. In process, a second log handler (not ours) and a
500 whose exception text carries a secret check that redaction happens when a record
is made, not only in our own handler.

Constant time: the guard is checked to call `hmac.compare_digest` with the presented
and expected key on every request (a spy), which is the actual guarantee. The timing
of keys matching 0 vs all-but-one leading characters is measured too and printed; it
is asserted only loosely (a ratio of medians within 2x), because nanosecond
differences of a naive comparison could not be seen through a shared machine's noise
anyway — the spy is the evidence, the figures are context.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import re
import statistics
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from pydantic import SecretStr

from app.api.app import create_app
from app.api.auth import bearer_guard
from app.api.tokens import token_controller
from app.logging_setup import configure_logging
from app.settings import Settings
from app.store.sql import SQLStore
from tests.reliability.conftest import ADMIN_KEY, SECRETS, TOKEN_KEY, LiveApp, leaked_secrets

pytestmark = pytest.mark.slow

OPEN_PATHS = {"/healthz", "/readyz"}
RATE = 12
TOKEN_PATH = "/api/v1/token"


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", "some-id", path.replace("{version}", "1"))


def _wrong_keys(key: str) -> list[dict[str, str]]:
    return [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {key}"},
        {"Authorization": key},
        {"Authorization": f"Bearer {key[:-1]}"},
        {"Authorization": f"Bearer {key}x"},
        {"Authorization": f"Bearer {key.upper()}"},
        {"Authorization": "Bearer " + "x" * 5000},
    ]


def test_live_process_secrets_auth_and_token(tmp_path: Path, live_app: type[LiveApp]) -> None:
    app = live_app(tmp_path, "secrets", token_key=True, extra_env={
        "LOG_LEVEL": "DEBUG", "TOKEN_RATE_PER_MINUTE": str(RATE), "LOG_FORMAT": "json",
    })
    app.wait_seeded()
    bodies: list[str] = []

    def req(method: str, path: str, **kw: Any) -> httpx.Response:
        r = httpx.request(method, app.url(path), timeout=15, **kw)
        bodies.append(f"{method} {path} {r.status_code} {dict(r.headers)} {r.text}")
        return r

    spec = req("GET", "/schema/openapi.json").json()
    req("GET", "/schema")
    operations = [(m.upper(), p) for p, item in spec["paths"].items() for m in item]
    assert len(operations) >= 20

    # every admin operation: 401 without the key or with any wrong one, never a 5xx
    admin = [(m, p) for m, p in operations if p not in OPEN_PATHS and p != TOKEN_PATH]
    assert len(admin) >= 17  # agents 8, routes 6, sessions 2, resolve 1
    for method, path in admin:
        for headers in _wrong_keys(ADMIN_KEY) + [{"Authorization": f"Bearer {TOKEN_KEY}"}]:
            r = req(method, _concrete(path), headers=headers, json={})
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["detail"] == "missing or invalid bearer token"
            assert r.headers["www-authenticate"] == "Bearer"
        if (method, path) == ("DELETE", "/api/v1/routes"):
            continue  # with the key it would clear the routing table the token checks need
        r = req(method, _concrete(path), headers={"Authorization": f"Bearer {ADMIN_KEY}"}, json={})
        assert r.status_code != 401 and r.status_code < 500, (method, path, r.status_code, r.text)
    for path in OPEN_PATHS:
        assert req("GET", path).status_code in (200, 503)

    # /token: its own key, checks, per-client rate limit. The limit counts every request,
    # refused ones included (it also slows key guessing), so each phase below uses its
    # own loopback source address: a client of its own.
    def client(n: int) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(local_address=f"127.0.0.{n}"), timeout=15,
                            base_url=app.base, event_hooks={"response": [lambda r: (r.read(), bodies.append(
                                f"{r.request.method} {r.request.url} {r.status_code} {dict(r.headers)} {r.text}"))]})

    token_auth = {"Authorization": f"Bearer {TOKEN_KEY}"}
    with client(3) as c:  # the admin key is not the token key; no key, wrong keys: 401
        for headers in _wrong_keys(TOKEN_KEY) + [{"Authorization": f"Bearer {ADMIN_KEY}"}]:
            assert c.post(TOKEN_PATH, headers=headers, json={"purpose": "sales"}).status_code == 401
        ok = c.post(TOKEN_PATH, headers=token_auth, json={"purpose": "sales", "user_id": "u-1"})
        assert ok.status_code == 201, ok.text
        assert ok.json()["agent_id"] == "sales-agent-v1"

    refused = {  # checked before anything is minted
        "unknown purpose": {"purpose": "no-such-purpose"},
        "malformed purpose": {"purpose": "Sales!"},
        "unknown agent": {"agent_id": "no-such-agent"},
        "operator as purpose": {"purpose": {"$ne": None}},
        "value over 1024 chars": {"purpose": "sales", "variables": {"customer": "x" * 1025}},
        "33 variables": {"purpose": "sales", "variables": {f"v{i}": "x" for i in range(33)}},
        "name over 64 chars": {"purpose": "sales", "variables": {"v" * 65: "x"}},
        "over 8 KiB in all": {"purpose": "sales", "variables": {f"v{i}": "x" * 1000 for i in range(9)}},
        "undeclared variable": {"purpose": "sales", "variables": {"not_declared": "x"}},
        "both targets": {"purpose": "sales", "agent_id": "sales-agent-v1"},
        "unknown field": {"purpose": "sales", "room": "pick-my-own-room"},
    }
    with client(4) as c:
        for label, body in refused.items():
            r = c.post(TOKEN_PATH, headers=token_auth, json=body)
            assert r.status_code == 422, (label, r.status_code, r.text)
        big = c.post(TOKEN_PATH, headers={**token_auth, "Content-Type": "application/json"},
                     content=b'{"purpose": "sales", "user_id": "' + b"u" * (2 << 20) + b'"}')
        assert big.status_code == 413, big.status_code

    with client(5) as c:  # this client runs out; the next one does not
        codes = [c.post(TOKEN_PATH, headers=token_auth, json={"purpose": "sales"}).status_code for _ in range(RATE + 5)]
        assert codes[:RATE] == [201] * RATE and set(codes[RATE:]) == {429}, codes
        limited = c.post(TOKEN_PATH, headers=token_auth, json={"purpose": "sales"})
        assert limited.status_code == 429 and limited.headers.get("retry-after") is not None
    with client(6) as c:  # key guessing is rate-limited too
        guesses = [c.post(TOKEN_PATH, headers={"Authorization": f"Bearer guess-{i}"}, json={}).status_code
                   for i in range(RATE + 5)]
        assert set(guesses[:RATE]) == {401} and set(guesses[RATE:]) == {429}, guesses
    with client(7) as c:
        assert c.post(TOKEN_PATH, headers=token_auth, json={"purpose": "sales"}).status_code == 201
    print(f"\n[secrets] {len(admin)} admin operations x {len(_wrong_keys(ADMIN_KEY)) + 1} wrong keys: all 401; "
          f"token: {len(refused)} bad requests 422, 2 MiB body 413; rate limit {RATE}/min per client: "
          f"{codes.count(201)} x 201 then {codes.count(429)} x 429, key guesses 429 after {RATE}, other client 201")

    # error bodies, the document and the UI never carry a secret
    everything = "\n".join(bodies)
    assert leaked_secrets(everything) == [], leaked_secrets(everything)

    app.stop()  # and the whole process output: the conftest greps it for every secret
    out = app.output()
    assert len(out.splitlines()) > 20 and '"level": "DEBUG"' in out  # it really logged, in JSON
    assert leaked_secrets(out) == []


# ------------------------------------------------------------------- in process


class _Collect(logging.Handler):
    """A handler that is not ours (no redaction filter), like a log shipper would be."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.stream = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write(self.format(record) + "\n")


@pytest.fixture
def logging_state() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, factory = list(root.handlers), root.level, logging.getLogRecordFactory()
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.setLogRecordFactory(factory)


class _LeakyStore(SQLStore):
    """A store whose failure message carries a secret (as a driver error might echo a DSN)."""

    async def list_routes(self):  # type: ignore[no-untyped-def]
        raise RuntimeError(f"driver error: auth failed for postgresql://app:{SECRETS['OPENAI_API_KEY']}@db/x")


async def test_redaction_reaches_every_handler_and_error_bodies_are_generic(tmp_path: Path, logging_state) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, admin_api_key=SecretStr(ADMIN_KEY), token_api_key=SecretStr(TOKEN_KEY),
        livekit_url="ws://127.0.0.1:9", livekit_api_key=SecretStr(SECRETS["LIVEKIT_API_KEY"]),
        livekit_api_secret=SecretStr(SECRETS["LIVEKIT_API_SECRET"]),
        openai_api_key=SecretStr(SECRETS["OPENAI_API_KEY"]), log_level="DEBUG",
    )
    configure_logging(settings, json_logs=True)
    ours = logging.getLogger().handlers[0]
    foreign = _Collect(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(foreign)
    store = _LeakyStore(f"sqlite+aiosqlite:///{tmp_path}/leak.db")
    await store.start()
    bodies = []
    try:
        app = create_app(settings, store, extra_route_handlers=[token_controller(settings)])
        async with AsyncTestClient(app) as c:
            r = await c.get("/api/v1/routes", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            assert r.status_code == 500 and r.json() == {"status_code": 500, "detail": "Internal Server Error"}
            bodies.append(r.text)
            for headers in _wrong_keys(ADMIN_KEY):
                bodies.append((await c.get("/api/v1/agents/config", headers=headers)).text)
            bodies.append((await c.get("/schema/openapi.json")).text)
            bodies.append((await c.post(TOKEN_PATH, json={"purpose": "x"},
                                        headers={"Authorization": f"Bearer {TOKEN_KEY}"})).text)
        log = logging.getLogger("app.reliability")
        log.warning("settings dump: %s", dict(SECRETS.items()))
        log.info("header was Bearer %s", ADMIN_KEY, extra={"raw": f"Bearer {ADMIN_KEY}"})
    finally:
        await store.aclose()
    seen = foreign.stream.getvalue()
    assert "unhandled error in GET /api/v1/routes" in seen and "driver error" in seen  # it was logged...
    assert leaked_secrets(seen) == [], leaked_secrets(seen)  # ...redacted, in a handler not ours
    assert leaked_secrets("\n".join(bodies)) == []
    # our own JSON handler also cleans string `extra` fields
    buf = io.StringIO()
    ours.stream = buf  # type: ignore[attr-defined]
    logging.getLogger("app.reliability").info("x", extra={"raw": f"Bearer {ADMIN_KEY}"})
    assert ADMIN_KEY not in buf.getvalue() and "Bearer ***" in buf.getvalue()


def test_guard_uses_compare_digest_and_wrong_key_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "k" * 8 + "0123456789abcdefghijklmnopqrstuv"  # 40 chars
    guard = bearer_guard(SecretStr(key))
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    class Conn:
        def __init__(self, value: str) -> None:
            self.headers = {"authorization": value}
            self.state = types.SimpleNamespace()  # the guard names the caller there

    import asyncio

    from litestar.exceptions import NotAuthorizedException

    async def check(value: str) -> bool:
        try:
            await guard(Conn(value), None)  # type: ignore[arg-type]
            return True
        except NotAuthorizedException:
            return False

    monkeypatch.setattr("app.api.auth.hmac.compare_digest", spy)
    assert asyncio.run(check(f"Bearer {key}")) is True
    assert asyncio.run(check(f"Bearer {key[:-1]}X")) is False
    assert asyncio.run(check(f"Basic {key}")) is False  # compared even for a wrong scheme
    assert calls == [(key.encode(), key.encode()), ((key[:-1] + "X").encode(), key.encode()),
                     (key.encode(), key.encode())]
    monkeypatch.undo()

    # timing: no matching prefix vs all but the last character matching
    none_match = "Bearer " + "Z" * len(key)
    most_match = "Bearer " + key[:-1] + "Z"
    loop = asyncio.new_event_loop()
    samples: dict[str, list[float]] = {"0 chars": [], f"{len(key) - 1} chars": []}
    try:
        for _ in range(2000):  # interleaved batches, so drift hits both alike
            for label, value in (("0 chars", none_match), (f"{len(key) - 1} chars", most_match)):
                t0 = time.perf_counter_ns()
                for _ in range(20):
                    loop.run_until_complete(check(value))
                samples[label].append((time.perf_counter_ns() - t0) / 20)
    finally:
        loop.close()
    medians = {k: statistics.median(v) for k, v in samples.items()}
    a, b = medians.values()
    print(f"\n[auth timing] median per check: {json.dumps({k: round(v) for k, v in medians.items()})} ns "
          f"(ratio {max(a, b) / min(a, b):.3f}; 2000 x 20 each, interleaved)")
    assert max(a, b) / min(a, b) < 2.0  # loose: the spy above is the real guarantee
