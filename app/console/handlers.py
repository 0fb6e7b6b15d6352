"""Console routes: one HTML page per screen, the console's static files, and the
LiveKit browser client (from `node_modules` or the asset cache: `app.assets.browser`).

Each page is the shared shell (`templates/shell.html`: sidebar, key prompt) around
the page's own static markup (`templates/pages/<page>.html`); the page's ES module
(`static/js/pages/<page>.js`) fetches the data and fills it in. Path parameters and
server facts reach the scripts as `data-*` attributes on `<body>`, HTML-escaped.
Templates use `string.Template` (`$name`), so braces in markup need no escaping and
no template engine is needed.
"""

from __future__ import annotations

import html
import mimetypes
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template
from typing import Annotated

from litestar import MediaType, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.params import PathParameter
from litestar.response import Redirect
from litestar.types import ControllerRouterHandler

from app.api.static_files import safe_static_files_router
from app.assets.browser import LIVEKIT_CLIENT, NODE_MODULES, UPLOT, BrowserAssets
from app.settings import Settings

CONSOLE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = CONSOLE_DIR / "templates"
STATIC_DIR = CONSOLE_DIR / "static"
LIVEKIT_DIST = NODE_MODULES / LIVEKIT_CLIENT.name / LIVEKIT_CLIENT.subdir
"""Where `npm ci --prefix app/console` (the Docker image) puts the LiveKit client."""

PathId = Annotated[str, PathParameter(max_length=200)]

STATIC_PATH = "/console/static"
VENDOR_PATH = "/console/vendor/livekit-client"
UPLOT_PATH = "/console/vendor/uplot"

# Browsers refuse ES modules served with a non-JavaScript type; don't depend on the
# host's /etc/mime.types knowing `.mjs`.
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob: mediastream:",
        # LiveKit's signalling URL is whatever LIVEKIT_URL says (cloud or self-hosted).
        "connect-src 'self' ws: wss: http: https:",
        "worker-src 'self' blob:",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

NAV = (
    ("agents", "/agents", "Agents"),
    ("routes", "/routes", "Routes"),
    ("sessions", "/sessions", "Sessions"),
    ("usage", "/usage", "Usage"),
    ("webhooks", "/webhooks", "Webhooks"),
    ("keys", "/keys", "Keys"),
    ("campaigns", "/campaigns", "Campaigns"),
    ("talk", "/talk", "Talk"),
)


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATES_DIR / name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class ConsoleFacts:
    """What the pages need to know about the server (no secrets)."""

    auth_required: bool
    token_key_required: bool


def _nav_html(active: str) -> str:
    items = []
    for key, href, label in NAV:
        current = ' aria-current="page"' if key == active else ""
        items.append(
            f'<li><a class="nav-link nav-{key}" href="{href}"{current}>'
            f'<span class="nav-icon" aria-hidden="true"></span>{label}</a></li>'
        )
    return "\n".join(items)


def render_page(facts: ConsoleFacts, page: str, title: str, nav: str, **data: str) -> Response[str]:
    """The shell around `templates/pages/<page>.html`, with `data` as body attributes."""
    attrs = {
        "page": page,
        "auth": "required" if facts.auth_required else "none",
        "token-key": "required" if facts.token_key_required else "none",
        **{k.replace("_", "-"): v for k, v in data.items()},
    }
    data_attrs = " ".join(f'data-{k}="{html.escape(v, quote=True)}"' for k, v in attrs.items())
    body = _template("shell.html").substitute(
        title=html.escape(title),
        data_attrs=data_attrs,
        nav=_nav_html(nav),
        content=_template(f"pages/{page}.html").substitute(),
        static=STATIC_PATH,
    )
    return Response(body, media_type=MediaType.HTML, headers=PAGE_HEADERS)


def console_handlers(settings: Settings, assets: BrowserAssets | None = None) -> list[ControllerRouterHandler]:
    """The console's route handlers, to mount at the app root beside `/api/v1`.

    `assets` locates (and, in the serving process, fetches) the LiveKit client; without
    it the client is served only if it is already on disk."""
    assets = assets if assets is not None else BrowserAssets.from_settings(settings)
    facts = ConsoleFacts(
        auth_required=settings.admin_api_key is not None,
        token_key_required=settings.token_api_key is not None,
    )

    @get("/", name="console:home", include_in_schema=False, sync_to_thread=False)
    def home() -> Redirect:
        return Redirect("/agents")

    @get("/agents", name="console:agents", include_in_schema=False, sync_to_thread=False)
    def agents() -> Response[str]:
        return render_page(facts, "agents", "Agents", "agents")

    @get("/agents/new", name="console:agent-new", include_in_schema=False, sync_to_thread=False)
    def agent_new() -> Response[str]:
        return render_page(facts, "agent", "New agent", "agents", mode="create")

    @get("/agents/{agent_id:str}", name="console:agent", include_in_schema=False, sync_to_thread=False)
    def agent_edit(agent_id: PathId) -> Response[str]:
        return render_page(facts, "agent", agent_id, "agents", mode="edit", agent_id=agent_id)

    @get("/agents/{agent_id:str}/history", name="console:agent-history", include_in_schema=False, sync_to_thread=False)
    def agent_history(agent_id: PathId) -> Response[str]:
        return render_page(facts, "history", f"{agent_id} history", "agents", agent_id=agent_id)

    @get("/routes", name="console:routes", include_in_schema=False, sync_to_thread=False)
    def routes() -> Response[str]:
        return render_page(facts, "routes", "Routes", "routes")

    @get("/sessions", name="console:sessions", include_in_schema=False, sync_to_thread=False)
    def sessions() -> Response[str]:
        return render_page(facts, "sessions", "Sessions", "sessions")

    @get("/sessions/{session_id:str}", name="console:session", include_in_schema=False, sync_to_thread=False)
    def session_detail(session_id: PathId) -> Response[str]:
        return render_page(facts, "session", session_id, "sessions", session_id=session_id)

    @get("/usage", name="console:usage", include_in_schema=False, sync_to_thread=False)
    def usage() -> Response[str]:
        return render_page(facts, "usage", "Usage", "usage")
    @get("/webhooks", name="console:webhooks", include_in_schema=False, sync_to_thread=False)
    def webhooks() -> Response[str]:
        return render_page(facts, "webhooks", "Webhooks", "webhooks")

    @get("/keys", name="console:keys", include_in_schema=False, sync_to_thread=False)
    def keys() -> Response[str]:
        return render_page(facts, "keys", "API keys", "keys")

    @get("/campaigns", name="console:campaigns", include_in_schema=False, sync_to_thread=False)
    def campaigns() -> Response[str]:
        return render_page(facts, "campaigns", "Campaigns", "campaigns")

    @get("/talk", name="console:talk", include_in_schema=False, sync_to_thread=False)
    def talk() -> Response[str]:
        assets.request_fetch(LIVEKIT_CLIENT)  # a failed start-up fetch is retried here
        client = assets.status(LIVEKIT_CLIENT)
        return render_page(
            facts, "talk", "Talk", "talk", livekit_client=client.state.value, livekit_client_detail=client.detail
        )

    # Revalidate every time (cheap 304s): the modules import each other by plain
    # relative URLs, so a version query string could not bust their cache anyway.
    revalidate = CacheControlHeader(no_cache=True)
    handlers: list[ControllerRouterHandler] = [
        home, agents, agent_new, agent_edit, agent_history, routes, sessions, session_detail, usage, webhooks, keys,
        campaigns, talk,
        safe_static_files_router(STATIC_PATH, [STATIC_DIR], name="console:static", cache_control=revalidate),
    ]
    # Served from where the client is or will be: a fetch after start-up fills the
    # directory in place, and requests before that get 404.
    handlers.append(
        safe_static_files_router(
            VENDOR_PATH, [assets.serve_dir(LIVEKIT_CLIENT)], name="console:livekit", cache_control=revalidate
        )
    )
    handlers.append(
        safe_static_files_router(UPLOT_PATH, [assets.serve_dir(UPLOT)], name="console:uplot", cache_control=revalidate)
    )
    return handlers
