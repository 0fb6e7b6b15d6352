"""`/healthz` (liveness) and `/readyz` (readiness), at the root and unauthenticated.

Liveness answers as long as the event loop does, so a slow database never gets the
machine restarted. Readiness says whether this process should take traffic: the store
answers a ping and the worker is registered (or deliberately disabled).
"""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from app.api.deps import Status, Store
from app.api.status import Readiness

_OK = {"status": "ok"}


class HealthController(Controller):
    path = "/"
    tags = ["health"]

    @get("/healthz", name="health:live", summary="Liveness")
    async def healthz(self) -> dict[str, str]:
        return _OK

    @get(
        "/readyz",
        name="health:ready",
        summary="Readiness: store reachable and worker registered or disabled",
        responses={
            HTTP_503_SERVICE_UNAVAILABLE: ResponseSpec(
                data_container=Readiness, description="Not ready", generate_examples=False
            )
        },
    )
    async def readyz(self, store: Store, runtime_status: Status) -> Response[Readiness]:
        report = await runtime_status.readiness(store)
        return Response(
            report,
            status_code=HTTP_200_OK if report.ready else HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Cache-Control": "no-store"},
        )
