"""`GET /metrics`: the service's Prometheus metrics, LiveKit's worker metrics included.

Served from the default `prometheus_client` registry, or every process's values in
multiprocess mode (app/observability/metrics.py says why). Behind the admin key unless `METRICS_ACCESS=open` (a scraper on a private network
that cannot send a bearer key); the text is rendered in a thread, since a registry with
many agents and versions takes a while to format and this loop carries live calls.
"""

from __future__ import annotations

import asyncio

from litestar import Response, Router, get
from litestar.types import Guard
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.auth import SECURITY_SCHEME_NAME
from app.api.errors import error_responses
from app.observability.metrics import exposition


@get(
    "/metrics",
    name="metrics",
    summary="Prometheus metrics (text exposition format)",
    tags=["health"],
    media_type=CONTENT_TYPE_LATEST,
    responses=error_responses(401),  # with METRICS_ACCESS=key, the default
)
async def metrics() -> Response[bytes]:
    body = await asyncio.to_thread(exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def metrics_router(guard: Guard | None) -> Router:
    """The `/metrics` route, with `guard` (the admin bearer guard) or open."""
    if guard is None:
        return Router(path="/", route_handlers=[metrics])
    return Router(path="/", route_handlers=[metrics], guards=[guard], security=[{SECURITY_SCHEME_NAME: []}])
