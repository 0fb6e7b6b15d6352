"""`/api/v1/usage`: what sessions used and cost, summed per agent, config version and/or
UTC day (`group_by`), and the price table the costs were computed with.

Costs are stored on each session when it is recorded (at the prices of that day), so a
report sums stored figures: a later price change does not rewrite past costs."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import QueryParameter

from app.api.deps import Store
from app.api.errors import error_responses
from app.api.query_times import TIME_DOC, query_error, query_time
from app.domain.pricing import PriceEntry, PriceTable
from app.domain.usage import UsageGroup, UsageReport

_ROUTE = "GET /api/v1/usage"
_GROUPS = [g.value for g in UsageGroup]
_GROUP_DOC = {
    "type": "array",
    "items": {"type": "string", "enum": _GROUPS},
    "description": "Group the sums by these keys (repeat the parameter or separate with commas); none: one row.",
}


def _groups(values: list[str] | None) -> list[UsageGroup]:
    out: list[UsageGroup] = []
    for value in values or []:
        for part in value.split(","):
            name = part.strip()
            if name not in _GROUPS:
                raise query_error(_ROUTE, "group_by", f"unknown group {name!r}; expected any of {', '.join(_GROUPS)}")
            out.append(UsageGroup(name))
    return out


class UsageController(Controller):
    path = "/usage"
    tags = ["usage"]

    @get(
        "/",
        name="usage:report",
        summary="Usage and cost summed over sessions, per agent, version and/or day",
        description="Sessions are selected by when they started (`since` inclusive, `until` exclusive) and "
        "by agent. Each row sums tokens, audio seconds, characters and cost (the call's, and the post-call "
        "analysis's separately); `total` sums every row.",
        responses=error_responses(422),
    )
    async def usage_report(
        self,
        store: Store,
        group_by: Annotated[list[str] | None, QueryParameter(schema_extra=_GROUP_DOC)] = None,
        agent_id: Annotated[str | None, QueryParameter(max_length=64, description="Only this agent's sessions")] = None,
        since: Annotated[str | None, QueryParameter(description="started at or after", schema_extra=TIME_DOC)] = None,
        until: Annotated[str | None, QueryParameter(description="started before", schema_extra=TIME_DOC)] = None,
    ) -> UsageReport:
        # An `until` at or before `since` is an empty window (as on /sessions), not an error:
        # every such request is well-formed.
        groups = _groups(group_by)
        start, end = query_time(since, "since", _ROUTE), query_time(until, "until", _ROUTE)
        return await store.usage_report(group_by=groups, agent_id=agent_id, since=start, until=end)

    @get(
        "/prices",
        name="usage:prices",
        summary="The price table costs are computed with",
        description="The built-in list prices (each with the date it was taken) with PRICE_TABLE's "
        "additions and replacements. A model not listed is not priced: its usage is kept and the "
        "session lists it under `usage.unpriced_models`.",
        responses=error_responses(),
    )
    async def prices(self, state: State) -> list[PriceEntry]:
        return PriceTable.from_settings(state.settings).entries()
