"""Browser tests of the web console: the real app on loopback, a real Chromium.

The app is built exactly as the supervisor will build it (`create_app` with the
console and token handlers) around a seeded `SQLStore` on a temporary SQLite file,
and served by uvicorn on 127.0.0.1 in a background thread with its own event loop.
Tests drive it with Playwright's sync API and the Chromium `tests/console/chromium.py`
finds (Debian's, or one fetched from the npm registry: never Playwright's download).
The console's browser packages come from the asset cache, fetched like `dev` does.
Screenshots go to `test-output/console/` (git-ignored) for a human to look at.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # the project is not installed (tool.uv package = false)
    sys.path.insert(0, str(REPO_ROOT))

import app.agents.test_runner  # noqa: E402,F401  (LiveKit's plugins register on the main thread only)
from app.agents.test_pool import TestRunPool  # noqa: E402
from app.api.app import create_app  # noqa: E402
from app.api.tokens import token_controller  # noqa: E402
from app.assets import PACKAGES, BrowserAssets  # noqa: E402
from app.seed import seed  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.store.sql import SQLStore  # noqa: E402
from tests.console.chromium import ensure_playwright_node, find_chromium  # noqa: E402

SCREENSHOTS = REPO_ROOT / "test-output" / "console"
ADMIN_KEY = "console-test-key-3b1f"
KEY_STORAGE = "voice-platform.admin-key"

T = TypeVar("T")


# ------------------------------------------------------------------ build step


@pytest.fixture(scope="session", autouse=True)
def playwright_driver() -> str:
    """Playwright's bundled Node, or Node.js from the npm registry where that cannot start."""
    return ensure_playwright_node()


@pytest.fixture(scope="session", autouse=True)
def console_assets() -> None:
    """The LiveKit client and Swagger UI, as `dev` gets them: from node_modules if `npm ci`
    ran, else from the asset cache, fetched from the npm registry and verified first."""
    assets = BrowserAssets.from_settings(make_settings(), fetch=True)

    async def fetch() -> list[str]:
        for pkg in PACKAGES:
            await assets.ensure(pkg)
        return [f"{p.name}: {assets.status(p).detail}" for p in PACKAGES if assets.directory(p) is None]

    missing = asyncio.run(fetch())
    if missing:
        pytest.fail("the console's browser packages are unavailable:\n" + "\n".join(missing))


# ------------------------------------------------------------------ server


class ConsoleServer:
    """The app on 127.0.0.1:<free port>, its store reachable through `run()`."""

    def __init__(self, settings: Settings, db_path: Path) -> None:
        self.settings = settings
        self.db_url = f"sqlite+aiosqlite:///{db_path}"
        self.loop = asyncio.new_event_loop()
        self.store: SQLStore | None = None
        self.test_runs: TestRunPool | None = None
        self._server: uvicorn.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._thread_main, name="console-server", daemon=True)

    def start(self) -> ConsoleServer:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"console test server did not start: {self._error!r}")
        return self

    def _thread_main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as e:  # surfaced by start()
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        from app.console import console_handlers

        self.store = SQLStore(self.db_url)
        await self.store.start()
        try:
            await seed(self.store)
            self.test_runs = TestRunPool(self.settings, self.store)
            app = create_app(
                self.settings,
                self.store,
                test_runs=self.test_runs,
                extra_route_handlers=[*console_handlers(self.settings), token_controller(self.settings)],
            )
            config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
            self._server = uvicorn.Server(config)
            task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
            while not self._server.started and not task.done():
                await asyncio.sleep(0.02)
            self._ready.set()
            await task
        finally:
            if self.test_runs is not None:
                await self.test_runs.aclose()
            await self.store.aclose()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine (a store call) on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(15)
        self._sock.close()


def make_settings(**overrides: Any) -> Settings:
    # _env_file=None: a developer's .env must not change what the tests see.
    return Settings(_env_file=None, admin_api_key=ADMIN_KEY, **overrides)  # type: ignore[call-arg]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ConsoleServer]]:
    """Factory: `start_server(**settings_overrides)` -> a running, seeded server."""
    servers: list[ConsoleServer] = []

    def start(**overrides: Any) -> ConsoleServer:
        server = ConsoleServer(make_settings(**overrides), tmp_path / f"console-{len(servers)}.db").start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def server(start_server: Callable[..., ConsoleServer]) -> ConsoleServer:
    """A seeded server without LiveKit credentials (the token endpoint answers 503)."""
    return start_server()


# ------------------------------------------------------------------ browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: Playwright's sync API keeps an event loop running in
    # this thread while it is open, which breaks every later pytest-asyncio test.
    chromium = find_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(**chromium.launch_kwargs())
        yield b
        b.close()


class PageErrors:
    """Uncaught exceptions and console errors of the pages of one test."""

    # Chrome logs every 4xx/5xx fetch and every refused WebSocket as a console error.
    IGNORED = ("Failed to load resource", "WebSocket connection to")

    def __init__(self) -> None:
        self.errors: list[str] = []

    def attach(self, page: Any) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on(
            "console",
            lambda msg: msg.type == "error"
            and not msg.text.startswith(self.IGNORED)
            and self.errors.append(f"console: {msg.text}"),
        )


@pytest.fixture
def page_errors() -> Iterator[PageErrors]:
    errors = PageErrors()
    yield errors
    assert errors.errors == [], "the console logged errors:\n" + "\n".join(errors.errors)


@pytest.fixture
def new_context(browser: Any, page_errors: PageErrors) -> Iterator[Callable[..., Any]]:
    """Factory for browser contexts; `signed_in=True` pre-loads the admin key."""
    contexts: list[Any] = []

    def make(server: ConsoleServer, *, signed_in: bool = True) -> Any:
        # An explicit locale: Chromium takes it from the environment otherwise, and a
        # container's POSIX locale ("en-US@posix") is a tag Intl refuses (uPlot builds an
        # Intl.DateTimeFormat from it when its module loads).
        ctx = browser.new_context(base_url=server.url, viewport={"width": 1440, "height": 900}, locale="en-US")
        ctx.set_default_timeout(10_000)
        if signed_in:
            # Runs in every document, about:blank included (no storage there).
            ctx.add_init_script(
                f"if (location.origin === {server.url!r}) sessionStorage.setItem({KEY_STORAGE!r}, {ADMIN_KEY!r})"
            )
        ctx.on("page", page_errors.attach)
        contexts.append(ctx)
        return ctx

    yield make
    for c in contexts:
        c.close()


@pytest.fixture
def page(new_context: Callable[..., Any], server: ConsoleServer) -> Any:
    """A signed-in page on the default server."""
    return new_context(server).new_page()


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # A full-page capture draws sticky/fixed elements where the viewport was: put the form
    # footer at the end of the page and hide toasts meanwhile (through the CSSOM: the
    # console's CSP refuses injected <style>).
    toggle = """(on) => {
      for (const el of document.querySelectorAll('.form-footer')) el.style.position = on ? 'static' : '';
      for (const el of document.querySelectorAll('.toasts')) el.style.display = on ? 'none' : '';
    }"""
    if full_page:
        page.evaluate(toggle, True)
    page.screenshot(path=str(path), full_page=full_page, animations="disabled")
    if full_page:
        page.evaluate(toggle, False)
    return path
