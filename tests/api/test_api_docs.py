"""`/schema`: the API reference viewer comes from this server (no CDN) and starts
without inline script, so it works air-gapped and under a strict CSP."""

from __future__ import annotations

import re
from pathlib import Path

from litestar.testing import AsyncTestClient

from app.api import create_app
from app.assets.browser import LOCKFILE, SWAGGER_UI, BrowserAssets
from app.assets.npm import locked_package, package_dir
from app.settings import Settings
from app.store.sql import SQLStore


def cached_swagger(cache: Path) -> BrowserAssets:
    """An asset cache holding Swagger UI as a completed fetch leaves it."""
    pkg = locked_package(LOCKFILE, SWAGGER_UI.name)
    root = package_dir(pkg, cache)
    root.mkdir(parents=True)
    (root / "swagger-ui-bundle.js").write_text("window.SwaggerUIBundle = function () {};")
    (root / "swagger-ui.css").write_text(".swagger-ui {}")
    (root / ".integrity").write_text(pkg.integrity)
    return BrowserAssets(cache, node_modules=cache / "no-node-modules")


def scripts(page: str) -> list[str]:
    return re.findall(r"<script\b[^>]*>", page)


async def test_the_viewer_is_self_hosted_and_csp_clean(tmp_path: Path, settings: Settings, store: SQLStore) -> None:
    app = create_app(settings, store, assets=cached_swagger(tmp_path / "cache"))
    async with AsyncTestClient(app) as c:
        r = await c.get("/schema")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe" not in csp
        assert "http" not in r.text  # no CDN, no absolute URL at all
        tags = scripts(r.text)
        assert tags == ['<script src="/schema/assets/swagger-ui-bundle.js">', '<script src="/schema/ui/swagger-init.js">']
        assert 'data-spec-url="/schema/openapi.json"' in r.text
        for url in re.findall(r'(?:src|href)="(/schema/[^"]+)"', r.text):
            if url.endswith(".png"):
                continue  # the favicon, not in this made-up cache
            asset = await c.get(url)
            assert asset.status_code == 200, url
        js = await c.get("/schema/ui/swagger-init.js")
        assert "javascript" in js.headers["content-type"] and "root.dataset.specUrl" in js.text
        assert (await c.get("/schema/assets/swagger-ui-bundle.js")).text.startswith("window.SwaggerUIBundle")
        assert (await c.get("/schema/assets/../../app.py")).status_code == 404
        paths = (await c.get("/schema/openapi.json")).json()["paths"]
        assert not [p for p in paths if p.startswith("/schema")]


async def test_without_the_viewer_the_page_says_why_and_links_the_document(
    tmp_path: Path, settings: Settings, store: SQLStore,
) -> None:
    cache = tmp_path / "empty-cache"
    app = create_app(settings, store, assets=BrowserAssets(cache, node_modules=tmp_path / "none"))
    async with AsyncTestClient(app) as c:
        r = await c.get("/schema")
        assert r.status_code == 200
        assert "The API reference viewer is not available yet" in r.text
        assert f"swagger-ui-dist@5.36.0 is not in {tmp_path / 'none'} or {cache / 'npm'}" in r.text
        assert '<a href="/schema/openapi.json">' in r.text
        assert scripts(r.text) == []
        assert (await c.get("/schema/assets/swagger-ui-bundle.js")).status_code == 404
        assert (await c.get("/schema/openapi.json")).status_code == 200
