"""`/api/v1/webhooks`: endpoints (create, list, get, patch, delete, rotate the secret)
and their deliveries (list, get, resend).

A secret appears in exactly two responses: the create and the rotation. Where a URL
may point is the process's URL policy (`app.webhooks.safety`: https to public
addresses in `start`), checked here when it is written, and again by the dispatcher
on the address it connects to.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.pagination import OffsetPagination
from litestar.params import Body, JSONBody, PathParameter, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from app.api.agents import MERGE_PATCH, _require_merge_patch
from app.api.changes import Change
from app.api.deps import Limit, Offset, Store, UrlPolicyDep
from app.api.errors import error_responses, field_error
from app.domain import NotFound
from app.domain.webhooks import (
    Delivery,
    DeliveryStatus,
    RotateSecretInput,
    SecretRotation,
    Webhook,
    WebhookCreated,
    WebhookInput,
)
from app.webhooks.safety import UnsafeDestination, UrlPolicy, resolve_checked, url_problem

HookId = Annotated[str, PathParameter(max_length=64, description="Webhook endpoint id (`wh_…`)")]
DeliveryId = Annotated[str, PathParameter(max_length=64, description="Delivery id (`dlv_…`)")]


async def _check_url(url: object, policy: UrlPolicy) -> None:
    """422 on `url` if the policy refuses it or where it resolves now (a name that does
    not resolve yet is accepted: every delivery checks again)."""
    if not isinstance(url, str):
        return  # the model's own validation reports it
    if (why := url_problem(url, policy)) is not None:
        raise field_error("url", f"URL {why} (WEBHOOK_URL_POLICY=public)")
    if policy.public_only:
        try:
            await resolve_checked(url, policy, timeout=2.0)
        except UnsafeDestination as e:
            raise field_error("url", f"{e} (WEBHOOK_URL_POLICY=public)") from None
        except (OSError, ValueError):
            pass


class WebhookController(Controller):
    """Webhook management is an admin's (every handler, reads included: endpoint URLs and
    delivery errors describe the receivers)."""

    path = "/webhooks"
    tags = ["webhooks"]
    opt = {"role": "admin"}

    @post("/", name="webhooks:create", summary="Create an endpoint; its secret is in this response only",
          responses=error_responses(400, 413, 422), status_code=HTTP_201_CREATED)
    async def create(
        self, store: Store, change: Change, url_policy: UrlPolicyDep, data: JSONBody[WebhookInput]
    ) -> WebhookCreated:
        await _check_url(data.url, url_policy)
        return await store.create_webhook(data, ctx=change)

    @get("/", name="webhooks:list", summary="Every endpoint (never their secrets)", responses=error_responses())
    async def list_hooks(self, store: Store) -> list[Webhook]:
        return await store.list_webhooks()

    @get("/{webhook_id:str}", name="webhooks:get", responses=error_responses(404, 422))
    async def get_hook(self, store: Store, webhook_id: HookId) -> Webhook:
        return await store.get_webhook(webhook_id)

    @patch("/{webhook_id:str}", name="webhooks:patch", before_request=_require_merge_patch,
           summary="Change an endpoint (RFC 7386 merge patch); enabling it clears why it was disabled",
           responses=error_responses(400, 404, 413, 415, 422))
    async def patch_hook(
        self, store: Store, change: Change, url_policy: UrlPolicyDep, webhook_id: HookId,
        data: Annotated[dict[str, Any], Body(media_type=MERGE_PATCH, title="JSON merge patch of WebhookInput")],
    ) -> Webhook:
        if "url" in data:
            await _check_url(data["url"], url_policy)
        return await store.update_webhook(webhook_id, data, ctx=change)

    @delete("/{webhook_id:str}", name="webhooks:delete", status_code=HTTP_204_NO_CONTENT,
            summary="Delete an endpoint and its deliveries", responses=error_responses(404, 422))
    async def delete_hook(self, store: Store, change: Change, webhook_id: HookId) -> None:
        await store.delete_webhook(webhook_id, ctx=change)

    @post("/{webhook_id:str}/rotate-secret", name="webhooks:rotate", status_code=200,
          summary="A new secret (in this response only); the old one signs too for the grace period",
          responses=error_responses(400, 404, 413, 422))
    async def rotate(
        self, store: Store, change: Change, webhook_id: HookId, data: JSONBody[RotateSecretInput | None] = None,
    ) -> SecretRotation:
        grace = (data or RotateSecretInput()).grace_period_s
        return await store.rotate_webhook_secret(webhook_id, grace, ctx=change)

    @get("/{webhook_id:str}/deliveries", name="webhooks:deliveries",
         summary="Deliveries to this endpoint, newest first", responses=error_responses(404, 422))
    async def deliveries(
        self, store: Store, webhook_id: HookId,
        status: Annotated[DeliveryStatus | None, QueryParameter(description="Only this status")] = None,
        offset: Offset = 0, limit: Limit = 50,
    ) -> OffsetPagination[Delivery]:
        await store.get_webhook(webhook_id)  # 404 for an unknown endpoint, not an empty page
        items, total = await store.list_deliveries(webhook_id=webhook_id, status=status, offset=offset, limit=limit)
        return OffsetPagination(items=items, total=total, offset=offset, limit=limit)

    @get("/{webhook_id:str}/deliveries/{delivery_id:str}", name="webhooks:delivery", responses=error_responses(404, 422))
    async def delivery(self, store: Store, webhook_id: HookId, delivery_id: DeliveryId) -> Delivery:
        return await _delivery_of(store, webhook_id, delivery_id)

    @post("/{webhook_id:str}/deliveries/{delivery_id:str}/resend", name="webhooks:resend",
          status_code=HTTP_202_ACCEPTED,
          summary="Send again now, with the same webhook-id and a fresh retry window",
          description="409 while an attempt of it is running.", responses=error_responses(404, 409, 422))
    async def resend(
        self, request: Request[Any, Any, Any], store: Store, webhook_id: HookId, delivery_id: DeliveryId
    ) -> Response[Delivery]:
        await _delivery_of(store, webhook_id, delivery_id)
        window = request.app.state["settings"].webhook_retry_window
        return Response(await store.resend_delivery(delivery_id, window), status_code=HTTP_202_ACCEPTED)


async def _delivery_of(store: Any, webhook_id: str, delivery_id: str) -> Delivery:
    got: Delivery = await store.get_delivery(delivery_id)
    if got.webhook_id != webhook_id:
        raise NotFound(f"delivery {delivery_id!r} not found", delivery_id=delivery_id)
    return got
