"""`GET /api/v1/resolve`: which agent and config version would a session started *now*,
in *this* process, get for the given metadata?

Why: routing happens from the process's in-memory config snapshot, so "did my change
reach the workers?" is otherwise invisible. This answers with the same resolver and
config source a session start uses (`app.store.resolver`, the `configs` dependency).
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from litestar import Controller, get
from litestar.params import Parameter
from pydantic import BaseModel, Field

from app.api.deps import Configs
from app.api.errors import error_responses
from app.api.openapi import register_models
from app.domain.phone import E164_RE
from app.domain.routing import MetadataSource
from app.store.resolver import resolve_current


class Resolution(BaseModel):
    agent_id: str
    config_version: int
    reason: str
    source: str | None = None
    config_epoch: int | None = None
    stale: bool = False
    """True when the store was unreachable and the last known-good config was used."""
    arm: Literal["stable", "canary"] | None = Field(
        None, description="While the agent has a canary running: the arm this caller gets (sticky per user_id, "
        "else per room); null otherwise"
    )
    published_version: int | None = Field(None, description="The agent's published (stable) version")
    canary_version: int | None = Field(None, description="The running canary's version, if any")
    canary_percent: int | None = None


register_models(Resolution)


class ResolveController(Controller):
    path = "/resolve"
    tags = ["routing"]

    @get(
        "/",
        summary="Resolve room metadata to the agent and version a new session would get",
        responses=error_responses(422),
    )
    async def resolve(
        self,
        configs: Configs,
        purpose: Annotated[str | None, Parameter(max_length=64)] = None,
        agent_id: Annotated[str | None, Parameter(max_length=64)] = None,
        called_number: Annotated[
            str | None,
            Parameter(
                max_length=16, pattern=E164_RE,
                description="The dialled number of an inbound phone call (E.164, e.g. +15551234567): "
                "routes by the routes' phone_numbers when neither agent_id nor purpose is given.",
            ),
        ] = None,
        user_id: Annotated[str | None, Parameter(
            max_length=128, description="The caller: decides the canary arm (as the session's user_id would)")] = None,
        room: Annotated[str | None, Parameter(
            max_length=200, description="The room, for a caller without user_id (the arm is then per room)")] = None,
    ) -> Resolution:
        meta: dict[str, str] = {}
        if agent_id:
            meta["agent_id"] = agent_id
        if purpose:
            meta["purpose"] = purpose
        if user_id:
            meta["user_id"] = user_id
        res = await resolve_current(
            configs, [MetadataSource("job", json.dumps(meta))], room=room or "resolve", called_number=called_number
        )
        snap, aid = res.snapshot, res.config.agent_id
        published = snap.configs.get(aid) if snap is not None else None
        canary = snap.canaries.get(aid) if snap is not None else None
        return Resolution(
            agent_id=aid, config_version=res.config.version, reason=res.decision.reason,
            source=res.decision.source, config_epoch=res.epoch, stale=res.stale, arm=res.arm,
            published_version=published.version if published is not None else None,
            canary_version=canary.config.version if canary is not None else None,
            canary_percent=canary.percent if canary is not None else None,
        )
