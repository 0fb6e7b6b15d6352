"""`/api/v1/sessions`: read-only access to session records (transcripts, collected data)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, get
from litestar.pagination import OffsetPagination
from litestar.params import FromQuery, PathParameter, QueryParameter

from app.api.deps import Limit, Offset, Store
from app.api.errors import error_responses
from app.api.query_times import TIME_DOC, query_time
from app.domain import SessionOrder, SessionRecord, SessionStatus

_ROUTE = "GET /api/v1/sessions"


def _time(value: str | None, key: str) -> datetime | None:
    return query_time(value, key, _ROUTE)


class SessionController(Controller):
    path = "/sessions"
    tags = ["sessions"]

    @get(
        "/",
        name="sessions:list",
        summary="Session records, newest (or slowest) first, without turns",
        responses=error_responses(422),
    )
    async def list_sessions(
        self,
        store: Store,
        agent_id: FromQuery[str | None] = None,
        status: FromQuery[SessionStatus | None] = None,
        since: Annotated[str | None, QueryParameter(description="started at or after", schema_extra=TIME_DOC)] = None,
        until: Annotated[str | None, QueryParameter(description="started before", schema_extra=TIME_DOC)] = None,
        order: Annotated[SessionOrder, QueryParameter(
            description="`newest` first (default) or `worst_turn`: the slowest end-to-end turn first "
            "(sessions without a spoken turn last)")] = SessionOrder.newest,
        offset: Offset = 0,
        limit: Limit = 50,
    ) -> OffsetPagination[SessionRecord]:
        items, total = await store.list_sessions(
            agent_id=agent_id, status=status, since=_time(since, "since"), until=_time(until, "until"),
            order=order, offset=offset, limit=limit,
        )
        return OffsetPagination(items=items, total=total, offset=offset, limit=limit)

    @get(
        "/{session_id:str}",
        name="sessions:get",
        summary="One session with its turns",
        responses=error_responses(404, 422),
    )
    async def get_session(
        self, store: Store, session_id: Annotated[str, PathParameter(max_length=200)]
    ) -> SessionRecord:
        return await store.get_session(session_id)
