"""`GET /api/v1/agents/config/{agent_id}/latency`: an agent's turn latency over its
recent calls, per config version and per day (the console's agent page charts it).

Reads at most `MAX_SESSIONS` of the newest sessions in the window (the report says when
there were more) and computes the percentiles in a thread: the loop carries live calls.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

from litestar import Controller, get
from litestar.params import PathParameter, QueryParameter

from app.api.deps import Store
from app.api.errors import error_responses
from app.domain import SessionRecord
from app.domain.latency import LatencyReport, summarize
from app.domain.models import utcnow

MAX_SESSIONS = 2000
PAGE = 200


class LatencyController(Controller):
    path = "/agents/config/{agent_id:str}/latency"
    tags = ["agents"]

    @get(
        "/",
        name="agents:latency",
        summary="Turn latency percentiles (p50/p95) per version and per day",
        responses=error_responses(404, 422),
    )
    async def latency(
        self,
        store: Store,
        agent_id: Annotated[str, PathParameter(max_length=200)],
        days: Annotated[int, QueryParameter(ge=1, le=90, description="the window, in days back from now")] = 30,
    ) -> LatencyReport:
        await store.get_agent_config(agent_id)  # 404 for an unknown agent
        since = utcnow() - timedelta(days=days)
        records: list[SessionRecord] = []
        total = 0
        while len(records) < MAX_SESSIONS:
            page, total = await store.list_sessions(
                agent_id=agent_id, since=since, offset=len(records), limit=min(PAGE, MAX_SESSIONS - len(records))
            )
            records += page
            if not page or len(records) >= total:
                break
        return await asyncio.to_thread(
            summarize, agent_id, records, since=since, truncated=total > len(records)
        )
