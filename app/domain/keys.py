"""Named API keys and their roles: the one definition the API, the store and the guard
share.

A key is a name (what the audit trail records as `actor`), a role, and a secret shown
once. Roles are ordered: `read` (GETs) < `edit` (create and change agents, run tests)
< `publish` (publish, canary, rollback, routes) < `admin` (keys, webhooks); a key may
do what its role and every lower role may.

Only a hash of the secret is stored. The secret is `vp_` + 43 characters of
`secrets.token_urlsafe(32)` (256 random bits): the prefix lets secret scanners (GitHub
push protection, trufflehog) recognise a leaked key. For a secret with 256 bits of
entropy a plain SHA-256 is the right hash: nobody can guess their way to a preimage, so
the deliberate slowness of bcrypt/argon2 (made for low-entropy passwords) would buy no
safety and cost tens of milliseconds of CPU on every API request. A pepper would add a
server-wide secret every process must share and that could never change without
invalidating every key, for no gain at this entropy.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from enum import Enum
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from app.domain.models import _Model
from app.domain.values import UtcDatetime

KEY_PREFIX = "vp_"
"""Every named key starts with this (secret scanners match on it)."""
MAX_KEYS = 200
"""Named keys per deployment: the guard holds the whole table in memory."""
RESERVED_NAMES = frozenset({"admin", "system"})
"""`admin` is `ADMIN_API_KEY` (the bootstrap key) in the audit trail; `system` is kept
free for changes nobody made over the API."""


class Role(str, Enum):
    read = "read"
    edit = "edit"
    publish = "publish"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        """A key with this role may do what `needed` requires."""
        return self.rank >= needed.rank


_RANK = {Role.read: 0, Role.edit: 1, Role.publish: 2, Role.admin: 3}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError("a key name is lower-case letters, digits, '.', '_' and '-', starting with a letter or digit")
    if name in RESERVED_NAMES:
        raise ValueError(f"{name!r} is reserved ({', '.join(sorted(RESERVED_NAMES))})")
    return name


KeyName = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_check_name)]


class ApiKeyInput(_Model):
    """What an admin writes to create a key."""

    name: KeyName = Field(description="Who uses the key (`ci-deploy`, `jane`): recorded as the actor of every "
                          "change made with it")
    role: Role = Field(description="read < edit < publish < admin")


class ApiKey(ApiKeyInput):
    """A key as the API lists it: never its secret, never its hash."""

    created_at: UtcDatetime
    last_used_at: UtcDatetime | None = Field(
        None, description="The last request it authenticated (updated at most once a minute)")


class ApiKeyCreated(ApiKey):
    secret: str = Field(description="`vp_…`: shown only in this response; send it as `Authorization: Bearer …`")


class StoredApiKey(ApiKey):
    """The stored key, with the hash of its secret (never serialised to a client)."""

    key_hash: str

    def public(self) -> ApiKey:
        return ApiKey.model_validate(self.model_dump(exclude={"key_hash"}))


def new_key_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(secret: str | bytes) -> str:
    """Hex SHA-256 of the secret (see the module docstring for why this hash)."""
    raw = secret.encode(errors="surrogateescape") if isinstance(secret, str) else secret
    return hashlib.sha256(raw).hexdigest()
