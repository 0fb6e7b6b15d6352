"""`/api/v1/audit`: the audit trail, which IS the event journal's change events (who
changed which agent or route, when, and the change note), newest first."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.exceptions import ValidationException
from litestar.pagination import OffsetPagination
from litestar.params import QueryParameter

from app.api.deps import Limit, Offset, Store
from app.api.errors import error_responses
from app.api.query_times import TIME_DOC, query_time
from app.domain.events import Event, change_types

_WHERE = "GET /api/v1/audit"


class AuditController(Controller):
    path = "/audit"
    tags = ["audit"]

    @get(
        "/",
        name="audit:list",
        summary="Who changed what: the journal's change events, newest first",
        description="Every agent create, version (patch, replacement, rollback), delete and route change, "
        "with the name of the API key that made it (`actor`) and its `X-Change-Note`.",
        responses=error_responses(422),
    )
    async def list_changes(
        self,
        store: Store,
        agent_id: Annotated[str | None, QueryParameter(max_length=200, description="Changes to this agent")] = None,
        type: Annotated[
            list[str] | None,
            QueryParameter(
                description="Event type(s), repeatable: " + ", ".join(change_types()),
                schema_extra={"items": {"type": "string", "enum": list(change_types())}},
            ),
        ] = None,
        actor: Annotated[str | None, QueryParameter(max_length=200, description="Name of the API key")] = None,
        since: Annotated[str | None, QueryParameter(description="at or after", schema_extra=TIME_DOC)] = None,
        until: Annotated[str | None, QueryParameter(description="before", schema_extra=TIME_DOC)] = None,
        offset: Offset = 0,
        limit: Limit = 50,
    ) -> OffsetPagination[Event]:
        known = change_types()
        types = type or known
        unknown = [t for t in types if t not in known]
        if unknown:
            raise ValidationException(
                detail=f"Validation failed for {_WHERE}",
                extra=[{"key": "type", "source": "query",
                        "message": f"not a change event type: {unknown[0]!r}; one of {', '.join(known)}"}],
            )
        items, total = await store.list_events(
            types=types, agent_id=agent_id, actor=actor, since=query_time(since, "since", _WHERE),
            until=query_time(until, "until", _WHERE), offset=offset, limit=limit,
        )
        return OffsetPagination(items=items, total=total, offset=offset, limit=limit)
