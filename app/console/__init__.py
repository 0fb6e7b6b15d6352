"""The web console: a server-rendered HTML shell plus small vanilla ES modules.

Mount it at the app root next to the API (`create_app(..., extra_route_handlers=
[*console_handlers(settings), ...])`). The pages hold no data: every number and name
on screen is fetched by the browser from `/api/v1` with the admin key the user typed
in, so the console has no authority of its own and needs no guard.
"""

from app.console.handlers import LIVEKIT_DIST, STATIC_DIR, console_handlers

__all__ = ["LIVEKIT_DIST", "STATIC_DIR", "console_handlers"]
