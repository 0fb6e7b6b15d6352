"""The API reference page at `/schema`: Swagger UI served by this process.

Why not Litestar's `SwaggerRenderPlugin`: it loads Swagger UI from a CDN (a blank page
on an air-gapped host) and starts it with an inline script (which a strict
Content-Security-Policy refuses). Here the page links `swagger-ui-dist` from
`/schema/assets/` (installed by npm or fetched and verified by `app.assets`), starts it
with a same-origin script, and loads the document from `/schema/openapi.json`. When the
assets are not there yet the page says why instead of staying blank.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from litestar import Request, Router
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.openapi.plugins import OpenAPIRenderPlugin

from app.api.static_files import safe_static_files_router
from app.assets.browser import SWAGGER_UI, BrowserAssets

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS_PATH = "/assets"
"""Swagger UI's files, below the schema router (`/schema/assets/...`)."""
UI_PATH = "/ui"
"""Our own start script and style, below the schema router (`/schema/ui/...`)."""

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ]
)
RESPONSE_HEADERS = [
    ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
]


def schema_router(path: str = "/schema") -> Router:
    """The router Litestar mounts the OpenAPI pages on, with the page's security headers."""
    return Router(path=path, route_handlers=[], include_in_schema=False, response_headers=RESPONSE_HEADERS)


class SelfHostedSwaggerPlugin(OpenAPIRenderPlugin):
    def __init__(self, assets: BrowserAssets, *, path: str = "/", title: str = "API reference") -> None:
        super().__init__(path=path, favicon="", style="")
        self.assets = assets
        self.title = title
        self.base = "/schema"

    def receive_router(self, router: Router) -> None:
        self.base = router.path
        revalidate = CacheControlHeader(no_cache=True)
        router.register(safe_static_files_router(
            ASSETS_PATH, [self.assets.serve_dir(SWAGGER_UI)], name="schema:assets", cache_control=revalidate
        ))
        router.register(safe_static_files_router(UI_PATH, [STATIC_DIR], name="schema:ui", cache_control=revalidate))

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        base = self.base
        title = html.escape(f"{openapi_schema.get('info', {}).get('title', 'API')} · {self.title}")
        spec_url = html.escape(self.get_openapi_json_route(request), quote=True)
        if self.assets.directory(SWAGGER_UI) is None:
            return self._missing(base, title, spec_url)
        return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="icon" type="image/png" href="{base}{ASSETS_PATH}/favicon-32x32.png">
  <link rel="stylesheet" href="{base}{ASSETS_PATH}/swagger-ui.css">
  <link rel="stylesheet" href="{base}{UI_PATH}/docs.css">
</head>
<body>
  <div id="swagger-ui" data-spec-url="{spec_url}"></div>
  <script src="{base}{ASSETS_PATH}/swagger-ui-bundle.js"></script>
  <script src="{base}{UI_PATH}/swagger-init.js"></script>
</body>
</html>
""".encode()

    def _missing(self, base: str, title: str, spec_url: str) -> bytes:
        self.assets.request_fetch(SWAGGER_UI)  # a failed start-up fetch is retried here
        status = self.assets.status(SWAGGER_UI)
        return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" href="{base}{UI_PATH}/docs.css">
</head>
<body>
  <main class="docs-missing" data-state="{status.state.value}">
    <h1>The API reference viewer is not available yet</h1>
    <p>Swagger UI (npm package <code>swagger-ui-dist</code>) is not on this server:
      <code>{html.escape(status.detail)}</code>.</p>
    <p>The server fetches it from the npm registry (or <code>NPM_REGISTRY</code>) and keeps it in
      <code>ASSET_CACHE_DIR</code>; reload this page once it can reach the registry.</p>
    <p>The OpenAPI document itself is here: <a href="{spec_url}">{spec_url}</a>.</p>
  </main>
</body>
</html>
""".encode()
