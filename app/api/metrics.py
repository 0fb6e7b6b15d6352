"""`GET /metrics`: the service's Prometheus metrics, LiveKit's worker metrics included,
from every process of the service (app/observability/metrics.py: `render`). Behind the
admin key unless `METRICS_ACCESS=open` (a scraper on a private network
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
from app.observability import metrics as service_metrics


@get(
    "/metrics",
    name="metrics",
    summary="Prometheus metrics (text exposition format)",
    tags=["health"],
    media_type=CONTENT_TYPE_LATEST,
    responses=error_responses(401),  # with METRICS_ACCESS=key, the default
)
async def metrics() -> Response[bytes]:
    body = await asyncio.to_thread(service_metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def metrics_router(guard: Guard | None) -> Router:
    """The `/metrics` route, with `guard` (the admin bearer guard) or open."""
    if guard is None:
        return Router(path="/", route_handlers=[metrics])
    return Router(path="/", route_handlers=[metrics], guards=[guard], security=[{SECURITY_SCHEME_NAME: []}])
