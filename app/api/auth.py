"""Bearer keys and roles for the admin API.

Two kinds of key open the admin API:
- `ADMIN_API_KEY`, the bootstrap key: role `admin`, actor `admin`, compared in constant
  time against the configured value (no store round trip, so it works in an outage);
- named keys (`app.domain.keys`, `/api/v1/keys`): the SHA-256 of the presented token is
  compared, in constant time and without an early exit, against every stored hash, so
  how long a lookup takes says nothing about whether (or which) a key exists.

`role_guard` is the one place a request is mapped to the role it needs: the handler's
`opt["role"]` where declared (`@post(..., opt={"role": "publish"})`), otherwise `read`
for GET/HEAD and `edit` for every other method. A missing or unknown key is a 401; a
key whose role is too low a 403 that names the role needed, never the key.

Revocation bound: each process keeps a copy of the key table (`KeyRing`) for at most
`KEY_TABLE_TTL_S` seconds. A revoke through a process drops that process's copy at
once, so its next request is refused; every other process refuses the key at the
latest `KEY_TABLE_TTL_S` after the revoke committed.

`bearer_guard` is the single-key guard, still used by the token endpoint (its own
`TOKEN_API_KEY`). A `None` key means "no auth": `start` refuses to run without one and
`dev` generates one, so that only happens when the operator explicitly runs without.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import SecurityScheme
from litestar.params import SkipValidation
from litestar.routes import HTTPRoute
from litestar.types import Guard
from pydantic import SecretStr

from app.domain import StoreUnavailable
from app.domain.keys import Role, StoredApiKey
from app.domain.values import utcnow
from app.store.base import ConfigStore

log = logging.getLogger(__name__)

SECURITY_SCHEME_NAME = "AdminBearer"
SECURITY_SCHEME = SecurityScheme(
    type="http",
    scheme="bearer",
    description="`Authorization: Bearer <key>`: `ADMIN_API_KEY`, or a named key (`vp_…`) from `/api/v1/keys` "
    "whose role allows the operation (read < edit < publish < admin)",
)
UNAUTHORIZED_DETAIL = "missing or invalid bearer token"
KEY_TABLE_TTL_S = 1.0
"""How long a process uses its copy of the key table: the revocation bound across processes."""
TOUCH_EVERY_S = 60.0
"""`last_used_at` is written at most this often per key and process (a write per
request would turn every read into a write)."""
READ_METHODS = frozenset({"GET", "HEAD"})


def required_role(handler: BaseRouteHandler, method: str) -> Role:
    """The role a request needs: the handler's declared `opt["role"]`, else by method."""
    declared = handler.opt.get("role")
    if declared is not None:
        return Role(declared)
    return Role.read if method.upper() in READ_METHODS else Role.edit


def check_declared_roles(app: Litestar) -> None:
    """Fail at start-up, not on a request, when a handler declares a role that does not exist."""
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                declared = handler.opt.get("role")
                if declared is not None and declared not in Role.__members__:
                    raise ValueError(f"{handler.handler_name}: opt role {declared!r} is not one of "
                                     f"{', '.join(Role.__members__)}")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request was let in as: the actor the audit trail records and their role."""

    actor: str
    role: Role


class KeyRing:
    """This process's copy of the named-key table, reloaded when older than `ttl_s`
    (one reload at a time, however many requests wait for it)."""

    def __init__(self, store: ConfigStore, *, ttl_s: float = KEY_TABLE_TTL_S,
                 touch_every_s: float = TOUCH_EVERY_S) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._touch_every_s = touch_every_s
        self._table: list[tuple[bytes, StoredApiKey]] = []
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()
        self._touched: dict[str, float] = {}

    def invalidate(self) -> None:
        """Forget the copy: the next request reads the table again (after a create or revoke)."""
        self._loaded_at = None

    def _fresh(self) -> bool:
        return self._loaded_at is not None and time.monotonic() - self._loaded_at < self._ttl_s

    async def _current(self) -> list[tuple[bytes, StoredApiKey]]:
        if self._fresh():
            return self._table
        async with self._lock:
            if not self._fresh():
                started = time.monotonic()  # a revoke committed during the read counts from here
                keys = await self._store.api_key_table()
                self._table = [(bytes.fromhex(k.key_hash), k) for k in keys]
                self._loaded_at = started
        return self._table

    async def lookup(self, token: bytes) -> StoredApiKey | None:
        """The key whose secret is `token`, or None. Every stored hash is compared (in
        constant time), matched or not."""
        table = await self._current()
        digest = hashlib.sha256(token).digest()
        found: StoredApiKey | None = None
        for stored_hash, key in table:
            if hmac.compare_digest(digest, stored_hash):
                found = key
        return found

    async def touch(self, key: StoredApiKey) -> None:
        """Record the use (throttled); a store error only costs the `last_used_at` stamp."""
        now = time.monotonic()
        last = self._touched.get(key.name)
        if last is not None and now - last < self._touch_every_s:
            return
        self._touched[key.name] = now
        try:
            await self._store.touch_api_key(key.name, utcnow())
        except StoreUnavailable as e:
            log.warning("could not record the use of API key %r: %s", key.name, e.message)


KeyRingDep = NamedDependency[SkipValidation[KeyRing]]
"""The process's `KeyRing` (`keyring`): the keys endpoints drop its copy after a change."""


def _unauthorized() -> NotAuthorizedException:
    return NotAuthorizedException(detail=UNAUTHORIZED_DETAIL, headers={"WWW-Authenticate": "Bearer"})


def _presented(connection: ASGIConnection[Any, Any, Any, Any]) -> tuple[bool, bytes]:
    """(is the scheme Bearer, the token). Exactly "<scheme> <key>": the scheme is
    case-insensitive (RFC 9110 §11.1), the rest is the key as issued, so extra spaces
    around it make a wrong key."""
    scheme, _sep, presented = connection.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer", presented.encode(errors="surrogateescape")


def role_guard(admin_key: SecretStr | None, keys: KeyRing | None, admin_actor: str) -> Guard:
    """The admin API's guard: who is calling (`ADMIN_API_KEY` or a named key from `keys`)
    and whether their role covers what the handler needs (`required_role`). Sets
    `connection.state.actor` (the audit trail's name) and `connection.state.caller`.
    With no admin key, every request is let in as the admin (an explicit no-auth run)."""
    admin = Caller(admin_actor, Role.admin)
    if admin_key is None:

        async def allow_all(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
            connection.state.actor, connection.state.caller = admin.actor, admin

        return allow_all
    expected = admin_key.get_secret_value().encode()

    # async on purpose: Litestar runs a sync guard in a worker thread, a thread hop
    # per request for a microsecond of work.
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        bearer, token = _presented(connection)
        # compare_digest runs even for a wrong scheme so timing says nothing about why.
        is_admin = hmac.compare_digest(token, expected)
        if not bearer:
            raise _unauthorized()
        caller = admin if is_admin else None
        if caller is None and keys is not None and token:
            key = await keys.lookup(token)
            if key is not None:
                caller = Caller(key.name, key.role)
                await keys.touch(key)
        if caller is None:
            raise _unauthorized()
        _allow(caller, required_role(handler, str(connection.scope.get("method", "GET"))), "this operation")
        connection.state.actor, connection.state.caller = caller.actor, caller

    return guard


def _allow(caller: Caller, needed: Role, what: str) -> None:
    if not caller.role.allows(needed):
        raise PermissionDeniedException(
            detail=f"{what} needs an API key with the {needed.value!r} role "
            f"(or higher); this key's role is {caller.role.value!r}")


def require_role(connection: ASGIConnection[Any, Any, Any, Any], needed: Role, what: str) -> None:
    """For a need the handler's declared role cannot state (it depends on the body): the
    guard left the caller on the connection; without a guard (no admin key configured)
    the caller is the admin."""
    caller = getattr(connection.state, "caller", None)
    if isinstance(caller, Caller):
        _allow(caller, needed, what)


def bearer_guard(key: SecretStr | None, actor: str | None = None) -> Guard:
    """A guard accepting exactly `Authorization: Bearer <key>` (one space, nothing
    around the key); allow-all when key is None. A request it lets in is made by
    `actor` (`connection.state.actor`). For endpoints with a key of their own (the
    token endpoint); the admin API uses `role_guard`."""
    if key is None:

        async def allow_all(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
            connection.state.actor = actor

        return allow_all
    expected = key.get_secret_value().encode()

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        bearer, token = _presented(connection)
        ok = hmac.compare_digest(token, expected)
        if not (ok and bearer):
            raise _unauthorized()
        connection.state.actor = actor

    return guard

