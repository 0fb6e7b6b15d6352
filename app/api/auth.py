"""Bearer-key guard for the admin API.

The guard is built from the key once (`bearer_guard(settings.admin_api_key)`), so a
request costs one constant-time comparison and the key is never looked up, logged or
echoed. The same factory serves any endpoint with its own key (the token endpoint).
A `None` key means "no auth": `start` refuses to run without one and `dev` generates
one, so that only happens when the operator explicitly runs without.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import SecurityScheme
from litestar.types import Guard
from pydantic import SecretStr

SECURITY_SCHEME_NAME = "AdminBearer"
SECURITY_SCHEME = SecurityScheme(
    type="http",
    scheme="bearer",
    description="`Authorization: Bearer $ADMIN_API_KEY`",
)
UNAUTHORIZED_DETAIL = "missing or invalid bearer token"


def bearer_guard(key: SecretStr | None, actor: str | None = None) -> Guard:
    """A guard accepting exactly `Authorization: Bearer <key>` (one space, nothing
    around the key); allow-all when key is None. A request it lets in is made by
    `actor` (`connection.state.actor`), the name the audit trail records."""
    if key is None:

        async def allow_all(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
            connection.state.actor = actor

        return allow_all
    expected = key.get_secret_value().encode()

    # async on purpose: Litestar runs a sync guard in a worker thread, a thread hop
    # per request for a microsecond of work.
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        scheme, _sep, presented = connection.headers.get("authorization", "").partition(" ")
        # compare_digest runs even for a wrong scheme so timing says nothing about why.
        # Exactly "<scheme> <key>": the scheme is case-insensitive (RFC 9110 §11.1), the
        # rest is the key as configured, so extra spaces around it are a wrong key.
        ok = hmac.compare_digest(presented.encode(errors="surrogateescape"), expected)
        if not (ok and scheme.lower() == "bearer"):
            raise NotAuthorizedException(
                detail=UNAUTHORIZED_DETAIL, headers={"WWW-Authenticate": "Bearer"}
            )
        connection.state.actor = actor

    return guard
