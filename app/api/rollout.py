"""`/api/v1/agents/config/{agent_id}/publish` and `.../rollout`: what routing hands out.

An agent's release (published version, running canary) has its own revision, the ETag
of `GET .../rollout` and of every answer here; `If-Match` with it makes a publish,
promote or abort conditional (412 when another publisher got there first). The rules
are the store's (`StoreService.publish` and friends); this module is HTTP.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.datastructures import ResponseHeader
from litestar.params import JSONBody, PathParameter
from pydantic import BaseModel, ConfigDict, Field

from app.api.changes import Change
from app.api.conditional import IfMatch, etag, expected_version
from app.api.deps import Policy, Store
from app.api.errors import error_responses
from app.api.openapi import register_models
from app.domain.rollout import PublishRequest, Release, RolloutReport

AgentIdPath = Annotated[str, PathParameter(description="Agent id (slug)", max_length=200)]
REV_HEADER = ResponseHeader(
    name="ETag", documentation_only=True,
    description='The release revision, quoted (`"3"`): `If-Match` on publish, promote and abort',
)
PUBLISH_ROLE = {"role": "publish"}


class AbortRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500, description="Why (kept on the rollout and in its event)")


register_models(AbortRequest)


def _release(release: Release) -> Response[Release]:
    return Response(release, headers={"ETag": etag(release.rev)})


class RolloutController(Controller):
    path = "/agents/config/{agent_id:str}"
    tags = ["publishing"]

    @post(
        "/publish",
        name="agents:publish",
        opt=PUBLISH_ROLE,
        status_code=200,
        response_headers=[REV_HEADER],
        summary="Publish a version, or start a canary of it",
        description="`{\"version\": N}` publishes N: every new session gets it. With `canary_percent` (1-99) "
        "N runs as a canary for that share of new sessions (sticky per caller), the rest keep the published "
        "version. 404: no such agent or version; 409: a canary is running (promote or abort it first) or a "
        "pre-publish check refused the version (`extra.failing`); 412: `If-Match` is not the current "
        "release revision.",
        responses=error_responses(400, 404, 409, 412, 422),
    )
    async def publish(
        self, store: Store, change: Change, agent_id: AgentIdPath, data: JSONBody[PublishRequest],
        if_match: IfMatch = None,
    ) -> Response[Release]:
        release = await store.publish(
            agent_id, data.version, canary_percent=data.canary_percent, expected_rev=expected_version(if_match),
            ctx=change,
        )
        return _release(release)

    @get(
        "/rollout",
        name="agents:rollout",
        response_headers=[REV_HEADER],
        summary="Published version, drafts and the canary's figures per arm",
        description="Per arm (since the canary started): sessions, completion, required-fields-complete, "
        "tool-error, handoff and LLM-failure rates over finished sessions, and turn latency p50/p95; with the "
        "rollout guard's verdict (README: \"Drafts, publishing and canaries\").",
        responses=error_responses(404, 422),
    )
    async def rollout(self, store: Store, policy: Policy, agent_id: AgentIdPath) -> Response[RolloutReport]:
        report = await store.rollout_report(agent_id, policy)
        return Response(report, headers={"ETag": etag(report.release.rev)})

    @post(
        "/rollout/promote",
        name="agents:promote",
        opt=PUBLISH_ROLE,
        status_code=200,
        response_headers=[REV_HEADER],
        summary="Publish the canary's version for everyone",
        responses=error_responses(400, 404, 409, 412, 422),
    )
    async def promote(
        self, store: Store, change: Change, agent_id: AgentIdPath, if_match: IfMatch = None
    ) -> Response[Release]:
        return _release(await store.promote_canary(agent_id, expected_rev=expected_version(if_match), ctx=change))

    @post(
        "/rollout/abort",
        name="agents:abort",
        opt=PUBLISH_ROLE,
        status_code=200,
        response_headers=[REV_HEADER],
        summary="End the canary: every new session gets the published version again",
        responses=error_responses(400, 404, 409, 412, 422),
    )
    async def abort(
        self, store: Store, change: Change, agent_id: AgentIdPath, if_match: IfMatch = None,
        data: JSONBody[AbortRequest | None] = None,
    ) -> Response[Release]:
        reason = data.reason if data is not None else None
        release = await store.abort_canary(
            agent_id, reason=reason or "aborted by hand", expected_rev=expected_version(if_match), ctx=change)
        return _release(release)
