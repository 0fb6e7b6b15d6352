"""`GET /api/v1/resolve`: which agent and config version would a session started *now*,
in *this* process, get for the given metadata?

Why: routing happens from the process's in-memory config snapshot, so "did my change
reach the workers?" is otherwise invisible. This answers with the same resolver and
config source a session start uses (`app.store.resolver`, the `configs` dependency).
"""

from __future__ import annotations

import json
from typing import Annotated

from litestar import Controller, get
from litestar.params import Parameter
from pydantic import BaseModel

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
    ) -> Resolution:
        meta: dict[str, str] = {}
        if agent_id:
            meta["agent_id"] = agent_id
        if purpose:
            meta["purpose"] = purpose
        res = await resolve_current(
            configs, [MetadataSource("job", json.dumps(meta))], room="resolve", called_number=called_number
        )
        return Resolution(
            agent_id=res.config.agent_id, config_version=res.config.version, reason=res.decision.reason,
            source=res.decision.source, config_epoch=res.epoch, stale=res.stale,
        )
