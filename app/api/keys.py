"""`/api/v1/keys`: named API keys (admin role). A key's secret is in the create response
and nowhere else; the list shows names, roles and times, never a secret or hash. A
create or revoke drops this process's copy of the key table (`KeyRing`), so the change
holds from the next request here and within `KEY_TABLE_TTL_S` everywhere else."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.datastructures import CacheControlHeader
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.api.auth import KEY_TABLE_TTL_S, KeyRingDep
from app.api.changes import Change
from app.api.deps import Store
from app.api.errors import error_responses
from app.domain.keys import ApiKey, ApiKeyCreated, ApiKeyInput

KeyName = Annotated[str, PathParameter(max_length=64, description="The key's name")]


class KeyController(Controller):
    path = "/keys"
    tags = ["keys"]
    opt = {"role": "admin"}

    @post("/", name="keys:create", status_code=HTTP_201_CREATED, cache_control=CacheControlHeader(no_store=True),
          summary="Create a named key; its secret is in this response only",
          description="`role`: read (GETs) < edit (agents, drafts, tests) < publish (publish, canary, rollback, "
          "routes) < admin (keys, webhooks). The name is what the audit trail records for every change made "
          "with the key.",
          responses=error_responses(400, 409, 413, 422))
    async def create(self, store: Store, change: Change, keyring: KeyRingDep,
                     data: JSONBody[ApiKeyInput]) -> ApiKeyCreated:
        created = await store.create_api_key(data, ctx=change)
        keyring.invalidate()
        return created

    @get("/", name="keys:list", summary="Every named key (never a secret)", responses=error_responses())
    async def list_keys(self, store: Store) -> list[ApiKey]:
        return await store.list_api_keys()

    @delete("/{name:str}", name="keys:revoke", status_code=HTTP_204_NO_CONTENT,
            summary="Revoke a key",
            description=f"Refused from the next request by this process, and by every other process within "
            f"{KEY_TABLE_TTL_S:g} s.",
            responses=error_responses(404, 422))
    async def revoke(self, store: Store, change: Change, keyring: KeyRingDep, name: KeyName) -> None:
        await store.revoke_api_key(name, ctx=change)
        keyring.invalidate()
