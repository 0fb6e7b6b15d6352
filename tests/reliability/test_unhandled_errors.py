"""Issue 21, items 2 and 4: each class of unhandled 500 and of leak, one test per class.

In process (the real app on a real SQLite file, console mounted as the supervisor
mounts it); `test_api_fuzz.py` generates many more of each class against the same app.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, post
from litestar.testing import AsyncTestClient
from pydantic import SecretStr

from app.api.app import create_app
from app.api.docs import CONTENT_SECURITY_POLICY as DOCS_CONTENT_SECURITY_POLICY
from app.api.tokens import token_controller
from app.console import STATIC_DIR, console_handlers
from app.settings import Settings
from app.store.sql import SQLStore
from tests.api.conftest import agent_body

KEY = "unhandled-admin-key-0123456789"
TOKEN_KEY = "unhandled-token-key-0123456789"
AGENTS = "/api/v1/agents/config"
JSON = {"content-type": "application/json"}


@post("/boom/recursion", sync_to_thread=False)
def _recursion_bug() -> None:
    """A RecursionError that is a server bug, not a client's body."""
    def down(n: int) -> int:
        return down(n + 1)
    down(0)


def make_app(store: SQLStore, **settings: Any) -> Litestar:
    s = Settings(_env_file=None, admin_api_key=SecretStr(KEY), token_rate_per_minute=100_000,  # type: ignore[call-arg]
                 livekit_url="ws://127.0.0.1:9", livekit_api_key=SecretStr("APIkey"),
                 livekit_api_secret=SecretStr("s" * 32), **settings)
    return create_app(s, store, extra_route_handlers=[token_controller(s), *console_handlers(s), _recursion_bug])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLStore]:
    s = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/u.db")
    await s.start()
    yield s
    await s.aclose()


@pytest.fixture
async def client(store: SQLStore) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(make_app(store)) as c:
        c.headers.update({"Authorization": f"Bearer {KEY}"})
        assert (await c.post(AGENTS, json=agent_body("target-agent"))).status_code == 201
        assert (await c.put("/api/v1/routes/support", json={"agent_id": "target-agent", "is_default": True})
                ).status_code == 200
        yield c


def _nested(depth: int, kind: str = "array") -> str:
    return "[" * depth + "]" * depth if kind == "array" else '{"a":' * depth + "1" + "}" * depth


# --------------------------------------------------------------- request bodies


BODY_TARGETS = [("POST", "/api/v1/token"), ("POST", AGENTS), ("PATCH", f"{AGENTS}/target-agent"),
                ("PUT", f"{AGENTS}/target-agent"), ("PUT", "/api/v1/routes")]


@pytest.mark.parametrize(("method", "path"), BODY_TARGETS)
@pytest.mark.parametrize("kind", ["array", "object"])
async def test_json_nested_beyond_the_decoder_is_a_400(
    client: AsyncTestClient[Litestar], method: str, path: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    r = await client.request(method, path, content=_nested(5000, kind), headers=JSON)
    assert r.status_code == 400, r.text
    assert r.json() == {"status_code": 400, "detail": "malformed JSON body: nested too deeply"}
    assert "unhandled error" not in caplog.text


@pytest.mark.parametrize(("method", "path"), BODY_TARGETS)
@pytest.mark.parametrize("body", [b'{"name":"\xff"}', b'{"user_id":"\xc3\x28"}', b"\xfe\xff\x00{", b'"\xed\xa0\x80"'])
async def test_json_that_is_not_utf8_is_a_400(
    client: AsyncTestClient[Litestar], method: str, path: str, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    r = await client.request(method, path, content=body, headers=JSON)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("malformed JSON body")
    assert "unhandled error" not in caplog.text


async def test_a_recursion_error_that_is_a_bug_stays_a_logged_500(
    client: AsyncTestClient[Litestar], caplog: pytest.LogCaptureFixture
) -> None:
    """The 400 mapping is for the decoder only: elsewhere the error is ours."""
    with caplog.at_level(logging.ERROR, logger="app.api.errors"):
        r = await client.post("/boom/recursion")
    assert r.status_code == 500 and r.json() == {"status_code": 500, "detail": "Internal Server Error"}
    assert "unhandled error in POST /boom/recursion" in caplog.text


@pytest.mark.parametrize("levels", [100, 260, 400])
async def test_deep_schema_config_is_refused_at_write_not_at_the_store(
    client: AsyncTestClient[Litestar], levels: int
) -> None:
    """~100 levels through `properties` crashed jsonschema's check_schema; ~260 crashed
    the store's serialiser. Both are a 422 on `schema_config` now, on POST and PATCH."""
    node: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        node = {"type": "object", "properties": {"a": node}}
    schema = {"type": "object", "properties": {"x": node}}
    for method, path, body in [("POST", AGENTS, agent_body("deep-agent", schema_config=schema)),
                               ("PATCH", f"{AGENTS}/target-agent", {"schema_config": schema})]:
        r = await client.request(method, path, json=body)
        assert r.status_code == 422, r.text
        assert r.json()["extra"][0]["key"] == "schema_config"
        assert "nested more than" in r.json()["extra"][0]["message"]
    assert (await client.get(AGENTS)).status_code == 200


async def test_ref_loop_is_refused_at_write(client: AsyncTestClient[Litestar]) -> None:
    """It was stored, then raised RecursionError inside the tool call."""
    schema = {"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}},
              "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}}
    r = await client.post(AGENTS, json=agent_body("loop-agent", schema_config=schema))
    assert r.status_code == 422 and "leads back to a schema that contains it" in r.text, r.text
    assert (await client.get(f"{AGENTS}/loop-agent")).status_code == 404


# ---------------------------------------------------------------- static paths


@pytest.mark.parametrize("path", [
    "%00", "js/%00", "a%00b/c", "%01", "%7f", "%0a", "a" * 300, "js/" + "a/" * 300, "x" * 5000,
])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("root", ["/console/static/", "/console/vendor/livekit-client/", "/schema/assets/", "/schema/ui/"])
async def test_static_paths_that_cannot_name_a_file_are_404(
    client: AsyncTestClient[Litestar], root: str, path: str, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every static directory we serve goes through `safe_static_files_router`."""
    r = await client.request(method, root + path)
    assert r.status_code == 404, r.text
    if method == "GET":
        assert r.json() == {"status_code": 404, "detail": "file not found"}
    assert "unhandled error" not in caplog.text


@pytest.mark.parametrize("path", ["js", "nope.js", "js/nope.js", "..%2f..%2fsettings.py", "%ff", "js/pages"])
async def test_static_404_does_not_echo_server_paths(client: AsyncTestClient[Litestar], path: str) -> None:
    """A directory's 404 named its absolute path (`/…/app/console/static/js`)."""
    r = await client.get("/console/static/" + path)
    assert r.status_code == 404
    assert r.json() == {"status_code": 404, "detail": "file not found"}
    assert str(STATIC_DIR.parent) not in r.text and "/" not in r.json()["detail"]


async def test_static_files_are_still_served(client: AsyncTestClient[Litestar]) -> None:
    css = sorted(p.name for p in STATIC_DIR.glob("*.css"))[0]
    r = await client.get(f"/console/static/{css}")
    assert r.status_code == 200 and r.content == (STATIC_DIR / css).read_bytes()
    js = sorted(p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*.js"))[0]
    assert (await client.get(f"/console/static/{js}")).status_code == 200


# ----------------------------------------------------------------- bearer header


LOOSE = ["Bearer  {k}", "Bearer {k} ", " Bearer {k}", "Bearer\t{k}", "Bearer {k}\t", "Bearer {k} x",
         "Bearer {k},Bearer {k}", "Bearer{k}", "Basic {k}", "{k}", "Bearer  {k} "]


@pytest.mark.parametrize("header", LOOSE)
async def test_bearer_header_must_be_exactly_scheme_space_key(store: SQLStore, header: str) -> None:
    async with AsyncTestClient(make_app(store, token_api_key=SecretStr(TOKEN_KEY))) as c:
        r = await c.get(AGENTS, headers={"Authorization": header.format(k=KEY)})
        assert r.status_code == 401, (header, r.text)
        r = await c.post("/api/v1/token", json={}, headers={"Authorization": header.format(k=TOKEN_KEY)})
        assert r.status_code == 401, (header, r.text)
        # the exact form still works (scheme case-insensitive, RFC 9110 §11.1)
        for scheme in ("Bearer", "bearer"):
            assert (await c.get(AGENTS, headers={"Authorization": f"{scheme} {KEY}"})).status_code == 200


# ------------------------------------------------------------------- docs page


async def test_api_docs_page_sends_a_content_security_policy(client: AsyncTestClient[Litestar]) -> None:
    # The documents carry the policy (a CSP on a script or style file is not enforced).
    for path in ("/schema", "/schema/", "/schema/openapi.json"):
        r = await client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-security-policy"] == DOCS_CONTENT_SECURITY_POLICY
        assert r.headers["x-content-type-options"] == "nosniff"
    csp = dict(d.strip().split(" ", 1) for d in DOCS_CONTENT_SECURITY_POLICY.split(";"))
    assert csp["default-src"] in ("'none'", "'self'") and csp["script-src"] == "'self'"
    assert all("unsafe" not in v and "http" not in v for v in csp.values()), csp
    # Whether or not Swagger UI's assets are there yet, the page runs no inline script
    # (the CSP would block it) and loads scripts only from this origin.
    page = (await client.get("/schema")).text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert all(body.strip() == "" for _, body in scripts), "inline script would be blocked"
    for attrs, _ in scripts:
        src = re.search(r'src="([^"]+)"', attrs).group(1)  # type: ignore[union-attr]
        assert src.startswith("/schema/"), src
    init = await client.get("/schema/ui/swagger-init.js")
    assert init.headers["content-type"].startswith("text/javascript") and "SwaggerUIBundle" in init.text
