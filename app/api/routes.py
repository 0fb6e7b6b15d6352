"""`/api/v1/routes`: the routing table (purpose -> agent id, one default).

The store enforces referential rules (a route to an unknown agent is
`InvalidReference`, mapped to 422); the shape rules a client can get wrong in one
request body (several defaults, a purpose listed twice) are checked here so the
error names the offending field.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, put
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from app.api.changes import Change
from app.api.deps import Store
from app.api.errors import error_responses, field_error
from app.domain import Route, RouteInput
from app.domain.models import PURPOSE_RE

PurposePath = Annotated[
    str,
    PathParameter(
        description="Route purpose", max_length=200,
        # documented, not enforced here: GET/DELETE of a malformed purpose is a plain 404,
        # PUT validates it as `Route.purpose` (422)
        schema_extra={"pattern": PURPOSE_RE},
    ),
]


def _check_table(routes: list[Route]) -> None:
    defaults = [i for i, r in enumerate(routes) if r.is_default]
    if len(defaults) > 1:
        raise field_error(
            f"{defaults[1]}.is_default", "at most one route may be the default", "more than one default route"
        )
    seen: set[str] = set()
    for i, r in enumerate(routes):
        if r.purpose in seen:
            raise field_error(f"{i}.purpose", f"purpose {r.purpose!r} is listed twice", "duplicate purpose")
        seen.add(r.purpose)


class RouteController(Controller):
    path = "/routes"
    tags = ["routes"]

    @get("/", name="routes:list", summary="The whole routing table", responses=error_responses())
    async def list_routes(self, store: Store) -> list[Route]:
        return await store.list_routes()

    @put(
        "/",
        name="routes:replace",
        opt={"role": "publish"},
        summary="Replace the whole table atomically (at most one default)",
        responses=error_responses(400, 413, 422),
    )
    async def replace_routes(self, store: Store, change: Change, data: JSONBody[list[Route]]) -> list[Route]:
        _check_table(data)
        return await store.replace_routes(data, ctx=change)

    @delete(
        "/",
        name="routes:clear",
        opt={"role": "publish"},
        summary="Remove every route",
        status_code=HTTP_204_NO_CONTENT,
        responses=error_responses(),
    )
    async def clear_routes(self, store: Store, change: Change) -> None:
        await store.replace_routes([], ctx=change)

    @get("/{purpose:str}", name="routes:get", responses=error_responses(404, 422))
    async def get_route(self, store: Store, purpose: PurposePath) -> Route:
        return await store.get_route(purpose)

    @put(
        "/{purpose:str}",
        name="routes:put",
        opt={"role": "publish"},
        summary="Create or replace one route; is_default=true clears it elsewhere",
        responses=error_responses(400, 413, 422),
    )
    async def put_route(
        self, store: Store, change: Change, purpose: PurposePath, data: JSONBody[RouteInput]
    ) -> Route:
        # Route() validates the purpose from the path; a bad one is a pydantic error -> 422.
        return await store.put_route(Route(purpose=purpose, **data.model_dump()), ctx=change)

    @delete(
        "/{purpose:str}",
        name="routes:delete",
        opt={"role": "publish"},
        status_code=HTTP_204_NO_CONTENT,
        responses=error_responses(404, 422),
    )
    async def delete_route(self, store: Store, change: Change, purpose: PurposePath) -> None:
        await store.delete_route(purpose, ctx=change)
