"""The store's rules for named API keys, once for every backend (mixed into
`StoreService`): a fresh secret per key, only its hash stored, unique names, the limit
on their number, and a `key.*` journal event committed with each create and revoke.
Whether a key may do something is the API guard's business (`app.api.auth`)."""

from __future__ import annotations

from datetime import datetime

from app.domain import AlreadyExists, InvalidInput, NotFound
from app.domain.events import KEY_CREATED, KEY_REVOKED, SYSTEM, ChangeContext, KeyChangedData, make_event
from app.domain.keys import MAX_KEYS, ApiKey, ApiKeyCreated, ApiKeyInput, StoredApiKey, hash_key, new_key_secret
from app.store.backend import Backend
from app.store.session_rules import must_be_str


class KeyStore:
    backend: Backend

    def _journaled(self) -> None:  # StoreService: wake in-process journal readers
        raise NotImplementedError

    async def create_api_key(self, data: ApiKeyInput, *, ctx: ChangeContext = SYSTEM) -> ApiKeyCreated:
        """A new key; its secret is in the result and nowhere else, ever."""
        if len(await self.backend.keys.all()) >= MAX_KEYS:
            raise InvalidInput(f"at most {MAX_KEYS} API keys; revoke one first")
        secret = new_key_secret()
        key = StoredApiKey(name=data.name, role=data.role, key_hash=hash_key(secret), created_at=self.backend.now())
        event = make_event(KEY_CREATED, KeyChangedData(name=key.name, role=key.role.value, change="created"),
                           at=key.created_at, ctx=ctx)
        if not await self.backend.keys.create(key, [event]):
            raise AlreadyExists(f"an API key named {key.name!r} exists", name=key.name)
        self._journaled()
        return ApiKeyCreated.model_validate({**key.public().model_dump(), "secret": secret})

    async def list_api_keys(self) -> list[ApiKey]:
        return [k.public() for k in await self.backend.keys.all()]

    async def api_key_table(self) -> list[StoredApiKey]:
        """Every key with its hash: for the API guard only, never a client."""
        return await self.backend.keys.all()

    async def revoke_api_key(self, name: str, *, ctx: ChangeContext = SYSTEM) -> ApiKey:
        """Delete the key: the request after this call returns is refused in this
        process at once; other processes hold a short-lived copy (`app.api.auth`)."""
        must_be_str(name, "name")
        current = next((k for k in await self.backend.keys.all() if k.name == name), None)
        if current is None:
            raise NotFound(f"API key {name!r} not found", name=name)
        event = make_event(KEY_REVOKED, KeyChangedData(name=name, role=current.role.value, change="revoked"),
                           at=self.backend.now(), ctx=ctx)
        gone = await self.backend.keys.delete(name, [event])
        if gone is None:
            raise NotFound(f"API key {name!r} not found", name=name)
        self._journaled()
        return gone.public()

    async def touch_api_key(self, name: str, at: datetime) -> None:
        await self.backend.keys.touch(must_be_str(name, "name"), at)
