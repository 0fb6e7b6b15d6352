"""`GET /api/v1/resolve`: which agent and config version would a session started *now*,
in *this* process, get for the given metadata?

Why: routing happens in the worker from its in-memory config cache, so "did my change
reach the workers?" is otherwise invisible. This answers from the same cache and
routing code a session start uses (the worker supplies the resolver; `api/` does not
import `worker/`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from litestar import Controller, get
from litestar.di import Provide
from litestar.params import Parameter
from pydantic import BaseModel, SecretStr

from app.api.auth import SECURITY_SCHEME_NAME, bearer_guard
from app.api.errors import error_responses
from app.api.openapi import register_models


class Resolution(BaseModel):
    agent_id: str
    config_version: int
    reason: str
    source: str | None = None
    config_epoch: int | None = None
    stale: bool = False
    """True when the store was unreachable and the last known-good config was used."""


register_models(Resolution)

Resolver = Callable[[str], Awaitable[Resolution]]


def resolve_controller(resolver: Resolver, admin_key: SecretStr | None) -> type[Controller]:
    class ResolveController(Controller):
        path = "/api/v1/resolve"
        tags = ["routing"]
        guards = [bearer_guard(admin_key)]
        security = [{SECURITY_SCHEME_NAME: []}]
        dependencies = {"resolver": Provide(lambda: resolver, use_cache=True, sync_to_thread=False)}

        @get(
            "/",
            summary="Resolve room metadata to the agent and version a new session would get",
            responses=error_responses(422),
        )
        async def resolve(
            self,
            resolver: Any,
            purpose: Annotated[str | None, Parameter(max_length=64)] = None,
            agent_id: Annotated[str | None, Parameter(max_length=64)] = None,
        ) -> Resolution:
            meta: dict[str, str] = {}
            if agent_id:
                meta["agent_id"] = agent_id
            if purpose:
                meta["purpose"] = purpose
            return await resolver(json.dumps(meta))

    return ResolveController
