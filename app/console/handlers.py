"""Console routes: one HTML page per screen, the console's static files, and the
LiveKit browser client from `node_modules` when it has been installed.

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
from typing import Annotated, Any

from litestar import MediaType, Response, get
from litestar.connection import ASGIConnection
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import PathParameter
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from app.api.errors import STATIC_FILE_HANDLERS
from app.settings import Settings

CONSOLE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = CONSOLE_DIR / "templates"
STATIC_DIR = CONSOLE_DIR / "static"
LIVEKIT_DIST = CONSOLE_DIR / "node_modules" / "livekit-client" / "dist"
LIVEKIT_ESM = "livekit-client.esm.mjs"

PathId = Annotated[str, PathParameter(max_length=200)]

STATIC_PATH = "/console/static"
VENDOR_PATH = "/console/vendor/livekit-client"

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
    ("talk", "/talk", "Talk"),
)


MAX_STATIC_PATH_CHARS = 512
MAX_FILE_NAME_BYTES = 255


async def file_path_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A 404 for a static path that cannot name one of our files, before the file
    system sees it: a NUL byte made `os.stat` raise ValueError, an over-long name
    OSError (both unhandled 500s), and control characters have no business there.
    async: Litestar runs a sync guard in a worker thread."""
    path = str(connection.path_params.get("file_path", ""))
    if (
        len(path) > MAX_STATIC_PATH_CHARS
        or any(ord(c) < 0x20 or c == "\x7f" for c in path)
        or any(len(part.encode(errors="replace")) > MAX_FILE_NAME_BYTES for part in path.split("/"))
    ):
        raise NotFoundException("file not found")


def livekit_client_built() -> bool:
    """Whether `npm ci --prefix app/console` has installed the LiveKit browser client."""
    return (LIVEKIT_DIST / LIVEKIT_ESM).is_file()


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATES_DIR / name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class ConsoleFacts:
    """What the pages need to know about the server (no secrets)."""

    auth_required: bool
    token_key_required: bool
    livekit_client: bool


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
        "livekit-client": "built" if facts.livekit_client else "missing",
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


def console_handlers(settings: Settings) -> list[ControllerRouterHandler]:
    """The console's route handlers, to mount at the app root beside `/api/v1`."""
    livekit = livekit_client_built()
    facts = ConsoleFacts(
        auth_required=settings.admin_api_key is not None,
        token_key_required=settings.token_api_key is not None,
        livekit_client=livekit,
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

    @get("/talk", name="console:talk", include_in_schema=False, sync_to_thread=False)
    def talk() -> Response[str]:
        return render_page(facts, "talk", "Talk", "talk")

    # Revalidate every time (cheap 304s): the modules import each other by plain
    # relative URLs, so a version query string could not bust their cache anyway.
    revalidate = CacheControlHeader(no_cache=True)
    handlers: list[ControllerRouterHandler] = [
        home, agents, agent_new, agent_edit, agent_history, routes, sessions, session_detail, talk,
        create_static_files_router(
            path=STATIC_PATH, directories=[STATIC_DIR], name="console:static", cache_control=revalidate,
            guards=[file_path_guard], exception_handlers=STATIC_FILE_HANDLERS,
        ),
    ]
    if livekit:
        handlers.append(
            create_static_files_router(
                path=VENDOR_PATH, directories=[LIVEKIT_DIST], name="console:livekit", cache_control=revalidate,
                guards=[file_path_guard], exception_handlers=STATIC_FILE_HANDLERS,
            )
        )
    return handlers
