"""`/api/v1/sessions`: read-only access to session records (transcripts, collected data)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from litestar import Controller, get
from litestar.exceptions import ValidationException
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType
from litestar.pagination import OffsetPagination
from litestar.params import FromQuery, PathParameter, QueryParameter

from app.api.deps import Limit, Offset, Store
from app.api.errors import error_responses
from app.domain import SessionRecord, SessionStatus

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)
# documented as exactly what `_time` accepts (not `datetime | None`, which Litestar's
# parser would also fill from `?since=0.5` as a Unix time, or from the string "null")
TIME_DOC = {"oneOf": None, "type": OpenAPIType.STRING, "format": OpenAPIFormat.DATE_TIME}


def query_time(value: str | None, key: str, where: str = "GET /api/v1/sessions") -> datetime | None:
    """An RFC 3339 date-time with an offset (JSON Schema's `date-time`), else a 422."""
    if value is None:
        return None
    m = _RFC3339.match(value)
    if m is not None:
        text = value.upper().replace("Z", "+00:00")
        if m.group(1) == "60":  # a leap second: the filter bound is the second before
            text = text[: m.start(1)] + "59" + text[m.end(1):]
        if m.group(2) and len(m.group(2)) > 7:  # datetime takes microseconds at most
            text = text[: m.start(2) + 7] + text[m.end(2):]
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    raise ValidationException(
        detail=f"Validation failed for {where}",
        extra=[{"key": key, "message": "expected an RFC 3339 date-time, e.g. 2025-01-31T09:00:00Z",
                "source": "query"}],
    )


class SessionController(Controller):
    path = "/sessions"
    tags = ["sessions"]

    @get(
        "/",
        name="sessions:list",
        summary="Session records, newest first, without turns",
        responses=error_responses(422),
    )
    async def list_sessions(
        self,
        store: Store,
        agent_id: FromQuery[str | None] = None,
        status: FromQuery[SessionStatus | None] = None,
        since: Annotated[str | None, QueryParameter(description="started at or after", schema_extra=TIME_DOC)] = None,
        until: Annotated[str | None, QueryParameter(description="started before", schema_extra=TIME_DOC)] = None,
        offset: Offset = 0,
        limit: Limit = 50,
    ) -> OffsetPagination[SessionRecord]:
        items, total = await store.list_sessions(
            agent_id=agent_id, status=status, since=query_time(since, "since"), until=query_time(until, "until"),
            offset=offset, limit=limit,
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
