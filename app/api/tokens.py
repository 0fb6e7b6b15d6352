"""`POST /api/v1/token`: a LiveKit access token that dispatches our agent.

The request is checked before anything is minted (the purpose has a route, the agent
exists and is enabled, the variables are declared, required ones present, sizes
capped), so a front end learns about a bad request now rather than as a caller in a
silent room. The routing metadata travels in the token's room configuration
(`RoomAgentDispatch`): LiveKit hands it to the worker as the job's dispatch metadata.
(The module is not called `token.py`: that shadows the standard library.)
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter, SkipValidation
from livekit import api
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from app.api.auth import bearer_guard
from app.api.deps import MAX_INT, Configs, Store
from app.api.errors import ErrorBody, error_responses
from app.api.openapi import register_models
from app.domain import AgentConfig, StoreUnavailable
from app.domain.models import MAX_VARIABLE_VALUE_CHARS, MAX_VARIABLES_BYTES, PURPOSE_RE, SLUG_RE
from app.domain.routing import MetadataSource
from app.settings import Settings
from app.store.resolver import resolve_current
from app.store.sources import SnapshotSource

TOKEN_SECURITY_SCHEME = "TokenBearer"
UNVERIFIED_PREFIX = "unverified:"
MAX_IDENTITY_CHARS = 128
"""The worker keeps a session's user id only up to this length (`agents.routing`)."""


class _CallerFields(BaseModel):
    """Who calls and the prompt variables: the same rules for every token request."""

    model_config = ConfigDict(extra="forbid")

    user_id: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\w.@:-]+$")] | None = None
    variables: dict[
        Annotated[str, StringConstraints(max_length=64)],
        Annotated[str, StringConstraints(max_length=MAX_VARIABLE_VALUE_CHARS)],
    ] = Field(default_factory=dict, max_length=32)

    @field_validator("variables")
    @classmethod
    def _variables_fit(cls, variables: dict[str, str]) -> dict[str, str]:
        if len(json.dumps(variables).encode()) > MAX_VARIABLES_BYTES:
            raise ValueError(f"exceed {MAX_VARIABLES_BYTES} bytes in all")
        return variables


class TokenRequest(_CallerFields):
    purpose: Annotated[str, StringConstraints(pattern=PURPOSE_RE)] | None = None
    agent_id: Annotated[str, StringConstraints(pattern=SLUG_RE)] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> TokenRequest:
        if self.purpose and self.agent_id:
            raise ValueError("give either purpose or agent_id, not both")
        return self


class TokenResponse(BaseModel):
    server_url: str
    room_name: str
    participant_token: str
    participant_identity: str
    agent_id: str
    expires_at: datetime


register_models(TokenRequest, TokenResponse)


def _invalid(field: str, message: str) -> ValidationException:
    return ValidationException(detail="Validation failed", extra=[{"key": field, "message": message}])


async def _resolve(req: TokenRequest, configs: SnapshotSource) -> AgentConfig:
    return await resolve_target(req.purpose, req.agent_id, configs)


async def resolve_target(purpose: str | None, agent_id: str | None, configs: SnapshotSource) -> AgentConfig:
    """The agent a session started with this metadata would run (the same resolver the
    worker uses), refusing what would only reach it by falling back (422 naming the field).
    Shared by `/token` and `/calls`."""
    meta = {"agent_id": agent_id} if agent_id else {"purpose": purpose} if purpose else {}
    res = await resolve_current(configs, [MetadataSource("job", json.dumps(meta))], room="token")
    snap = res.snapshot
    if snap is None:
        raise StoreUnavailable(res.degraded or "no config loaded")
    reason = res.decision.reason
    if reason == "default:unknown_agent_id":
        raise _invalid("agent_id", f"agent {agent_id!r} not found")
    if reason == "default:disabled_agent" and agent_id:
        raise _invalid("agent_id", f"agent {agent_id!r} is disabled")
    if reason == "default:disabled_agent" and purpose:
        target = snap.routing.routes.get(purpose)
        raise _invalid("purpose", f"the agent for this purpose ({target}) is disabled")
    if reason == "default:unknown_purpose":
        raise _invalid("purpose", f"no route for purpose {purpose!r}")
    if res.decision.agent_id is None:
        default = snap.default_agent_id
        if default is not None:
            raise _invalid("purpose", f"the agent for this purpose ({default}) is disabled")
        raise _invalid("purpose", "no purpose given and no default route is set")
    return res.config


def check_variables(cfg: AgentConfig, variables: dict[str, str]) -> None:
    """Only declared variables, every required one present (422 naming the variable)."""
    declared = cfg.prompt_config.variables
    unknown = sorted(set(variables) - set(declared))
    if unknown:
        raise _invalid(f"variables.{unknown[0]}", f"{cfg.agent_id} declares no variable {unknown[0]!r}")
    for name, spec in declared.items():
        if spec.required and spec.default is None and not variables.get(name):
            raise _invalid(f"variables.{name}", f"{cfg.agent_id} requires variable {name!r}")


def participant_identity(user_id: str | None, *, asserted: bool) -> str:
    """The LiveKit identity, which becomes the session record's `user_id`.

    With `TOKEN_API_KEY` set only a trusted backend can call, so `user_id` is what it
    asserts and is used as given. Without it anyone can ask for any `user_id`: it is
    kept, but behind `unverified:`, so records, canary stickiness and analytics cannot
    mistake a caller's claim for a known user (README, "Security")."""
    identity = user_id or f"user-{secrets.token_hex(4)}"
    if asserted:
        return identity
    identity = UNVERIFIED_PREFIX + identity
    if len(identity) > MAX_IDENTITY_CHARS:
        raise _invalid("user_id", f"at most {MAX_IDENTITY_CHARS - len(UNVERIFIED_PREFIX)} characters without "
                                  f"TOKEN_API_KEY (the identity is prefixed {UNVERIFIED_PREFIX!r})")
    return identity


def client_identifier(header: str | None) -> Any:
    """Who a token request counts against: the trusted proxy's client-address header
    when one is configured and present (behind fly's proxy every peer address is the
    proxy's), else the peer address. Only the first value, capped, so a client cannot
    grow the limiter's key space with huge or comma-joined values."""
    name = header.lower() if header else None

    def identify(request: Request[Any, Any, Any]) -> str:
        if name is not None:
            value = request.headers.get(name, "").split(",", 1)[0].strip()[:64]
            if value:
                return value
        return get_remote_address(request)

    return identify


def mint(settings: Settings, agent_id: str, identity: str, meta: dict[str, Any]) -> TokenResponse:
    """A LiveKit token for a new room whose dispatch carries `meta`; 503 without LiveKit."""
    if not (settings.livekit_url and settings.livekit_api_key and settings.livekit_api_secret):
        raise HTTPException(status_code=503, detail="LiveKit is not configured on this server")
    room = f"{agent_id}-{secrets.token_hex(6)}"
    ttl = timedelta(seconds=settings.token_ttl_s)
    jwt = (
        api.AccessToken(settings.livekit_api_key.get_secret_value(), settings.livekit_api_secret.get_secret_value())
        .with_identity(identity)
        .with_ttl(ttl)
        .with_grants(api.VideoGrants(room_join=True, room=room, can_publish=True,
                                     can_subscribe=True, can_publish_data=True))
        .with_room_config(api.RoomConfiguration(agents=[
            api.RoomAgentDispatch(agent_name=settings.agent_name, metadata=json.dumps(meta))
        ]))
        .to_jwt()
    )
    return TokenResponse(
        server_url=settings.livekit_url, room_name=room, participant_token=jwt,
        participant_identity=identity, agent_id=agent_id, expires_at=datetime.now(UTC) + ttl,
    )


class VersionTokenRequest(_CallerFields):
    """The caller of a call with one pinned version (the version is in the path)."""


register_models(VersionTokenRequest)


class VersionTokenController(Controller):
    """`POST /api/v1/agents/config/{agent_id}/versions/{version}/token`: a call with one
    version of an agent, a draft say, whatever routing hands out. On the admin API (a key
    with the publish role): the public token endpoint cannot pin a version."""

    path = "/agents/config/{agent_id:str}/versions/{version:int}/token"
    tags = ["tokens"]

    @post(
        "/",
        name="agents:version-token",
        opt={"role": "publish"},
        status_code=201,
        summary="Mint a LiveKit token for a call with this version (a draft, say)",
        description="The session runs exactly this version (`route_reason` `agent_id:pinned_version`, no canary "
        "arm). 404: no such agent or version; 422: a variable it does not declare, or a required one missing; "
        "503: LiveKit is not configured.",
        responses=error_responses(400, 404, 413, 422),
    )
    async def mint_version(
        self, store: Store, state: State, agent_id: Annotated[str, PathParameter(max_length=200)],
        version: Annotated[int, PathParameter(ge=1, le=MAX_INT)], data: JSONBody[VersionTokenRequest],
    ) -> TokenResponse:
        settings: Settings = state.settings
        cfg = await store.get_agent_config(agent_id, version)
        check_variables(cfg, data.variables)
        identity = participant_identity(data.user_id, asserted=True)  # an admin key's caller is trusted
        meta = {"agent_id": agent_id, "version": version, "variables": data.variables, "user_id": identity}
        return mint(settings, agent_id, identity, meta)


def token_controller(settings: Settings) -> type[Controller]:
    """The token endpoint, outside the admin guard: it has its own optional key and a
    per-client rate limit (tokens start paid sessions)."""
    rate_limit = RateLimitConfig(
        rate_limit=("minute", settings.token_rate_per_minute), store="token_rate_limit",
        identifier_for_request=client_identifier(settings.client_ip_header),
    )

    class TokenController(Controller):
        path = "/api/v1/token"
        tags = ["tokens"]
        guards = [bearer_guard(settings.token_api_key)]
        middleware = [rate_limit.middleware]
        security = [{TOKEN_SECURITY_SCHEME: []}] if settings.token_api_key else []
        dependencies = {"settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False)}

        @post(
            "/",
            status_code=201,
            summary="Mint a LiveKit token that dispatches the routed agent",
            responses={
                **error_responses(400, 413, 422, 429),
                503: ResponseSpec(
                    ErrorBody, description="LiveKit is not configured, or the store is unavailable",
                    generate_examples=False,
                ),
            },
        )
        async def mint(
            self,
            data: JSONBody[TokenRequest],
            configs: Configs,
            settings: NamedDependency[SkipValidation[Settings]],
        ) -> TokenResponse:
            cfg = await _resolve(data, configs)
            check_variables(cfg, data.variables)
            identity = participant_identity(data.user_id, asserted=settings.token_api_key is not None)
            meta: dict[str, Any] = {"variables": data.variables, "user_id": identity}
            if data.agent_id:
                meta["agent_id"] = data.agent_id
            elif data.purpose:
                meta["purpose"] = data.purpose
            return mint(settings, cfg.agent_id, identity, meta)

    return TokenController
