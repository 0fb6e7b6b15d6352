"""`/api/v1/agents/config`: CRUD, history and rollback of agent configurations.

Handlers are thin: validation is the domain model's (request bodies are the domain
classes themselves), persistence and versioning are the store's, error mapping is
`app.api.errors`'. What lives here is HTTP: status codes, ETag/Location headers and
turning `If-Match` into the store's `expected_version`.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.datastructures import ResponseHeader
from litestar.exceptions import HTTPException
from litestar.pagination import OffsetPagination
from litestar.params import Body, JSONBody, PathParameter, QueryParameter
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_204_NO_CONTENT,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
)

from app.api.changes import Change
from app.api.conditional import IfMatch, etag, expected_version
from app.api.deps import MAX_INT, Limit, Offset, Reader, Store
from app.api.errors import error_responses, field_error
from app.domain import AgentConfig, AgentConfigInput, VersionConflict

MERGE_PATCH = "application/merge-patch+json"
PATCH_MEDIA_TYPES = frozenset({MERGE_PATCH, "application/json"})

AgentIdPath = Annotated[str, PathParameter(description="Agent id (slug)", max_length=200)]
VersionPath = Annotated[int, PathParameter(ge=1, le=MAX_INT, description="Version to restore")]


ETAG_HEADER = ResponseHeader(
    name="ETag", documentation_only=True, description='The version returned, quoted: `"7"`'
)
LOCATION_HEADER = ResponseHeader(
    name="Location", documentation_only=True, description="URL of the created agent"
)


def _versioned(cfg: AgentConfig, status_code: int = HTTP_200_OK, **headers: str) -> Response[AgentConfig]:
    return Response(cfg, status_code=status_code, headers={"ETag": etag(cfg.version), **headers})


async def _precheck(store: Any, agent_id: str, expected: int | None) -> None:
    """A stale `If-Match` is refused from a plain read, before the write transaction.

    Why: under a burst of racing writers most PATCHes are doomed (the load test: ~95%
    412s), and each one queued for the SQLite store's single write lock — which session
    records share — only to fail the version check inside it. A client already behind
    now gets its 412 from a read; racers that read the same current version still meet
    in the store's conditional update, which decides atomically. A read cannot see a
    version newer than the database has, so a mismatch here is a real mismatch.
    """
    if expected is not None:
        current = await store.get_agent_config(agent_id)
        if current.version != expected:
            raise VersionConflict(agent_id, expected, current.version)


async def _require_merge_patch(request: Request[Any, Any, Any]) -> None:
    """415 for anything but a JSON merge patch, before the body is read or parsed.

    A JSON Patch (RFC 6902) array or a form post would otherwise fail later as a
    confusing 422; saying "wrong media type" up front tells the client what to fix.
    """
    media_type, _ = request.content_type
    if media_type not in PATCH_MEDIA_TYPES:
        raise HTTPException(
            status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"PATCH takes {MERGE_PATCH} or application/json",
        )


class AgentConfigController(Controller):
    path = "/agents/config"
    tags = ["agents"]

    @post(
        "/",
        name="agents:create",
        summary="Create an agent (version 1)",
        responses=error_responses(400, 409, 413, 422),
        response_headers=[ETAG_HEADER, LOCATION_HEADER],
    )
    async def create(
        self, request: Request[Any, Any, Any], store: Store, change: Change, data: JSONBody[AgentConfigInput]
    ) -> Response[AgentConfig]:
        cfg = await store.create_agent_config(data, ctx=change)
        location = request.app.route_reverse("agents:get", agent_id=cfg.agent_id)
        return _versioned(cfg, HTTP_201_CREATED, Location=location)

    @get(
        "/",
        name="agents:list",
        summary="List agents (current versions, by id)",
        responses=error_responses(422),
    )
    async def list_configs(
        self,
        store: Store,
        enabled: Annotated[bool | None, QueryParameter(description="Only enabled/disabled agents")] = None,
        offset: Offset = 0,
        limit: Limit = 50,
    ) -> OffsetPagination[AgentConfig]:
        items, total = await store.list_agent_configs(enabled=enabled, offset=offset, limit=limit)
        return OffsetPagination(items=items, total=total, offset=offset, limit=limit)

    @get(
        "/{agent_id:str}",
        name="agents:get",
        response_headers=[ETAG_HEADER],
        summary="Current version, or `?version=N` from history",
        responses=error_responses(404, 422),
    )
    async def get_config(
        self,
        reader: Reader,
        agent_id: AgentIdPath,
        version: Annotated[
            int | None, QueryParameter(ge=1, le=MAX_INT, description="A past version")
        ] = None,
    ) -> Response[AgentConfig]:
        return _versioned(await reader.get(agent_id, version))

    @patch(
        "/{agent_id:str}",
        name="agents:patch",
        before_request=_require_merge_patch,
        response_headers=[ETAG_HEADER],
        summary="Apply an RFC 7386 JSON merge patch as a new version",
        description="`null` removes a key; objects merge recursively; arrays replace. "
        "`application/merge-patch+json` and `application/json` are accepted.",
        responses=error_responses(400, 404, 409, 412, 413, 415, 422),
    )
    async def patch_config(
        self,
        store: Store,
        agent_id: AgentIdPath,
        change: Change,
        data: Annotated[dict[str, Any], Body(media_type=MERGE_PATCH, title="JSON merge patch")],
        if_match: IfMatch = None,
    ) -> Response[AgentConfig]:
        expected = expected_version(if_match)
        if "agent_id" in data and data["agent_id"] != agent_id:
            raise field_error("agent_id", "agent_id cannot be changed")
        await _precheck(store, agent_id, expected)
        return _versioned(await store.update_agent_config(agent_id, data, expected, ctx=change))

    @put(
        "/{agent_id:str}",
        name="agents:replace",
        response_headers=[ETAG_HEADER],
        summary="Replace the whole configuration as a new version",
        responses=error_responses(400, 404, 409, 412, 413, 422),
    )
    async def replace_config(
        self,
        store: Store,
        agent_id: AgentIdPath,
        change: Change,
        data: JSONBody[AgentConfigInput],
        if_match: IfMatch = None,
    ) -> Response[AgentConfig]:
        expected = expected_version(if_match)
        if data.agent_id != agent_id:
            raise field_error("agent_id", "agent_id in the body must match the path")
        await _precheck(store, agent_id, expected)
        return _versioned(await store.update_agent_config(agent_id, data, expected, ctx=change))

    @delete(
        "/{agent_id:str}",
        name="agents:delete",
        summary="Delete an agent and its history (running sessions are unaffected)",
        description="409 while a route points at the agent. With `If-Match`, 412 unless that "
        "is still the current version when the delete commits (checked in the same "
        "transaction, so a concurrent write is never deleted unseen).",
        responses=error_responses(400, 404, 409, 412, 422),
        status_code=HTTP_204_NO_CONTENT,
    )
    async def delete_config(
        self, store: Store, change: Change, agent_id: AgentIdPath, if_match: IfMatch = None
    ) -> None:
        await store.delete_agent_config(agent_id, expected_version(if_match), ctx=change)

    @get(
        "/{agent_id:str}/versions",
        name="agents:versions",
        summary="Every version, oldest first",
        responses=error_responses(404, 422),
    )
    async def list_versions(self, store: Store, agent_id: AgentIdPath) -> list[AgentConfig]:
        return await store.list_versions(agent_id)

    @post(
        "/{agent_id:str}/rollback/{version:int}",
        name="agents:rollback",
        opt={"role": "publish"},
        response_headers=[ETAG_HEADER],
        summary="Write the content of an old version as a new version and publish it",
        description="Always published, whatever `auto_publish` says; 409 while a canary runs.",
        responses=error_responses(400, 404, 409, 412, 422),
    )
    async def rollback(
        self,
        store: Store,
        agent_id: AgentIdPath,
        version: VersionPath,
        change: Change,
        if_match: IfMatch = None,
    ) -> Response[AgentConfig]:
        cfg = await store.rollback(agent_id, version, expected_version(if_match), ctx=change)
        return _versioned(cfg, HTTP_201_CREATED)
