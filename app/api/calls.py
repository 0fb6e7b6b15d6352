"""`/api/v1/calls` (place an outbound call, read call records) and `/api/v1/campaigns`
(many calls under a concurrency cap, calling hours and retries; run by
`app.telephony.campaigns`).

Everything a client can get wrong is refused before LiveKit is asked (422 naming the
field: a number that is not E.164 or is on the deny list, an unknown purpose or agent,
undeclared or missing variables, a CSV with bad rows), then a missing LiveKit setup is a
503 with the reason. A dial answers 201 with its outcome (answered, busy, no_answer,
failed with LiveKit's SIP status); LiveKit refusing the call itself (an unknown trunk,
bad credentials) is a 502, unreachable a 503: the record is stored `failed` either way,
and nothing is left behind in LiveKit.

Placing a call is rate limited per API key (`CALL_RATE_PER_MINUTE`, 429 + Retry-After).
Calling a specific agent `version` (a draft) needs the publish role.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.pagination import OffsetPagination
from litestar.params import JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_201_CREATED
from pydantic import Field, StringConstraints, model_validator

from app.api.auth import require_role
from app.api.changes import Change
from app.api.deps import Configs, Limit, Offset, Store
from app.api.errors import ErrorBody, error_responses
from app.api.openapi import register_models
from app.api.tokens import check_variables, resolve_target
from app.domain import AgentConfig, NotFound
from app.domain.calls import (
    CallInput,
    CallRecord,
    CallTarget,
    CampaignInput,
    CampaignSettings,
    CampaignView,
    Contact,
    ContactInput,
    ContactStatus,
)
from app.domain.contacts_csv import BadCsv, parse_contacts
from app.domain.keys import Role
from app.settings import Settings
from app.telephony.outbound import CallPlan, Dialer, LiveKitUnavailable, livekit_missing

CallId = Annotated[str, PathParameter(max_length=64, description="Call id (`call_…`)")]
CampaignId = Annotated[str, PathParameter(max_length=64, description="Campaign id (`cmp_…`)")]
MAX_CSV_CHARS = 16 * 1024 * 1024
CAMPAIGN_BODY_BYTES = 32 * 1024 * 1024


class CampaignRequest(CampaignSettings):
    """A campaign: its settings, and its contacts as a list or as CSV text (one of the two)."""

    contacts: list[ContactInput] | None = None
    contacts_csv: Annotated[str, StringConstraints(max_length=MAX_CSV_CHARS)] | None = Field(
        None, description="CSV text: a header with `phone` (E.164), optional `timezone`, and one column per "
        "variable. Any bad row refuses the whole file (422 listing rows and reasons).")

    @model_validator(mode="after")
    def _one_source(self) -> CampaignRequest:
        if (self.contacts is None) == (self.contacts_csv is None):
            raise ValueError("give either contacts or contacts_csv")
        return self


register_models(CallInput, CallRecord, CampaignRequest, CampaignView, Contact)


def _settings(request: Request[Any, Any, Any]) -> Settings:
    settings: Settings = request.app.state["settings"]
    return settings


def _invalid(errors: list[dict[str, str]]) -> ValidationException:
    return ValidationException(detail="Validation failed", extra=errors)


async def _target(request: Request[Any, Any, Any], target: CallTarget, store: Any, configs: Any) -> AgentConfig:
    if target.version is not None:
        require_role(request, Role.publish, "calling a specific agent version")
        try:
            cfg: AgentConfig = await store.get_agent_config(target.agent_id, target.version)
        except NotFound:
            raise _invalid([{"key": "version", "message": f"agent {target.agent_id!r} has no version "
                                                          f"{target.version}"}]) from None
        return cfg
    return await resolve_target(target.purpose, target.agent_id, configs)


def _ready(settings: Settings, trunk: str | None) -> str:
    why = livekit_missing(settings)
    if why is not None:
        raise HTTPException(status_code=503, detail=why)
    trunk = trunk or settings.outbound_trunk_id
    if trunk is None:
        raise _invalid([{"key": "trunk", "message": "no trunk given and OUTBOUND_TRUNK_ID is not set"}])
    return trunk


def _key_of(request: Request[Any, Any, Any]) -> str:
    """Per API key: a digest of the bearer credential (never the key itself)."""
    auth = request.headers.get("authorization", "")
    return hashlib.sha256(auth.encode()).hexdigest()[:24]


def calls_controller(settings: Settings) -> type[Controller]:
    rate_limit = RateLimitConfig(rate_limit=("minute", settings.call_rate_per_minute), store="call_rate_limit",
                                 identifier_for_request=_key_of)

    class CallController(Controller):
        path = "/calls"
        tags = ["calls"]

        @post("/", name="calls:create", status_code=HTTP_201_CREATED, middleware=[rate_limit.middleware],
              summary="Place an outbound call: dispatch the agent to a new room and dial the number",
              description="Waits until the call is answered or fails (up to CALL_RING_TIMEOUT). 201 with the "
              "outcome: answered, busy, no_answer, failed (with LiveKit's SIP status).",
              responses={**error_responses(400, 403, 413, 422, 429),
                         502: ResponseSpec(ErrorBody, description="LiveKit refused the call (e.g. unknown trunk)",
                                           generate_examples=False),
                         503: ResponseSpec(ErrorBody, description="LiveKit not configured or unreachable",
                                           generate_examples=False)})
        async def place(
            self, request: Request[Any, Any, Any], store: Store, configs: Configs, change: Change,
            data: JSONBody[CallInput],
        ) -> CallRecord:
            settings = _settings(request)
            if settings.call_denied(data.to):
                raise _invalid([{"key": "to", "message": "this number is on the deny list (CALL_DENY_LIST)"}])
            cfg = await _target(request, data, store, configs)
            check_variables(cfg, data.variables)
            trunk = _ready(settings, data.trunk)
            plan = CallPlan(to=data.to, trunk=trunk, agent_id=data.agent_id, purpose=data.purpose,
                            version=data.version, variables=data.variables)
            try:
                return await Dialer(settings).place(store, plan, ctx=change)
            except LiveKitUnavailable as e:
                raise HTTPException(status_code=502 if e.refused else 503, detail=e.message) from None

        @get("/", name="calls:list", summary="Call records, newest first", responses=error_responses(422))
        async def list_calls(
            self, store: Store,
            campaign_id: Annotated[str | None, QueryParameter(max_length=64, description="Only this campaign's")] = None,
            offset: Offset = 0, limit: Limit = 50,
        ) -> OffsetPagination[CallRecord]:
            items, total = await store.list_calls(campaign_id=campaign_id, offset=offset, limit=limit)
            return OffsetPagination(items=items, total=total, offset=offset, limit=limit)

        @get("/{call_id:str}", name="calls:get", responses=error_responses(404, 422))
        async def get_call(self, store: Store, call_id: CallId) -> CallRecord:
            return await store.get_call(call_id)

    return CallController


async def _campaign_input(request: Request[Any, Any, Any], data: CampaignRequest, cfg: AgentConfig) -> CampaignInput:
    settings = _settings(request)
    if data.contacts_csv is not None:
        try:
            contacts = parse_contacts(data.contacts_csv)
        except BadCsv as e:
            rows = [{"key": f"contacts_csv.line {p.line}", "message": p.message} for p in e.problems]
            raise ValidationException(detail=f"{e.total_bad} bad row(s) in contacts_csv; nothing was created",
                                      extra=rows) from None
        where = "contacts_csv.line {}"
        index = [i + 2 for i in range(len(contacts))]  # line numbers: the header is line 1
    else:
        contacts = data.contacts or []
        where = "contacts.{}"
        index = list(range(len(contacts)))
    if len(contacts) > settings.campaign_max_contacts:
        raise _invalid([{"key": "contacts", "message": f"at most {settings.campaign_max_contacts} contacts "
                                                       f"per campaign (CAMPAIGN_MAX_CONTACTS); got {len(contacts)}"}])
    errors: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    for i, contact in zip(index, contacts, strict=True):
        key = where.format(i)
        if settings.call_denied(contact.phone):
            errors.append({"key": f"{key}.phone" if where.startswith("contacts.") else key,
                           "message": "this number is on the deny list (CALL_DENY_LIST)"})
        if contact.phone in seen:
            errors.append({"key": key, "message": f"{contact.phone} is listed twice (also at {seen[contact.phone]})"})
        seen.setdefault(contact.phone, i)
        try:
            check_variables(cfg, contact.variables)
        except ValidationException as bad:
            for entry in bad.extra if isinstance(bad.extra, list) else []:
                errors.append({"key": f"{key}.{entry['key']}", "message": entry["message"]})
        if len(errors) >= 50:
            break
    if errors:
        raise ValidationException(detail="Validation failed; nothing was created", extra=errors)
    return CampaignInput.model_validate({**data.model_dump(exclude={"contacts", "contacts_csv"}),
                                         "contacts": [c.model_dump() for c in contacts]})


class CampaignController(Controller):
    path = "/campaigns"
    tags = ["campaigns"]

    @post("/", name="campaigns:create", status_code=HTTP_201_CREATED, request_max_body_size=CAMPAIGN_BODY_BYTES,
          summary="Create a running campaign from a contact list or CSV text",
          responses={**error_responses(400, 403, 413, 422),
                     503: ResponseSpec(ErrorBody, description="LiveKit is not configured", generate_examples=False)})
    async def create(
        self, request: Request[Any, Any, Any], store: Store, configs: Configs, change: Change,
        data: JSONBody[CampaignRequest],
    ) -> CampaignView:
        cfg = await _target(request, data, store, configs)
        campaign = await _campaign_input(request, data, cfg)
        trunk = _ready(_settings(request), data.trunk)
        return await store.create_campaign(campaign.model_copy(update={"trunk": trunk}), ctx=change)

    @get("/", name="campaigns:list", summary="Campaigns with their progress, newest first",
         responses=error_responses(422))
    async def list_campaigns(self, store: Store, offset: Offset = 0, limit: Limit = 50) -> OffsetPagination[CampaignView]:
        items, total = await store.list_campaigns(offset=offset, limit=limit)
        return OffsetPagination(items=items, total=total, offset=offset, limit=limit)

    @get("/{campaign_id:str}", name="campaigns:get", responses=error_responses(404, 422))
    async def get_campaign(self, store: Store, campaign_id: CampaignId) -> CampaignView:
        return await store.get_campaign(campaign_id)

    @get("/{campaign_id:str}/contacts", name="campaigns:contacts",
         summary="The campaign's contacts in list order, each with its status, attempts and last call",
         responses=error_responses(404, 422))
    async def contacts(
        self, store: Store, campaign_id: CampaignId,
        status: Annotated[ContactStatus | None, QueryParameter(description="Only this status")] = None,
        offset: Offset = 0, limit: Limit = 50,
    ) -> OffsetPagination[Contact]:
        items, total = await store.campaign_contacts(campaign_id, status=status, offset=offset, limit=limit)
        return OffsetPagination(items=items, total=total, offset=offset, limit=limit)

    @post("/{campaign_id:str}/pause", name="campaigns:pause", status_code=200,
          summary="Stop starting new calls (calls ringing now finish)", responses=error_responses(404, 409, 422))
    async def pause(self, store: Store, change: Change, campaign_id: CampaignId) -> CampaignView:
        return await store.change_campaign(campaign_id, "paused", ctx=change)

    @post("/{campaign_id:str}/resume", name="campaigns:resume", status_code=200,
          summary="Start calling again", responses=error_responses(404, 409, 422))
    async def resume(self, store: Store, change: Change, campaign_id: CampaignId) -> CampaignView:
        return await store.change_campaign(campaign_id, "resumed", ctx=change)

    @post("/{campaign_id:str}/cancel", name="campaigns:cancel", status_code=200,
          summary="Stop the campaign for good", responses=error_responses(404, 409, 422))
    async def cancel(self, store: Store, change: Change, campaign_id: CampaignId) -> CampaignView:
        return await store.change_campaign(campaign_id, "cancelled", ctx=change)
