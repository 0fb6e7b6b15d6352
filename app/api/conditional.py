"""ETag / If-Match: optimistic concurrency on agent configs.

An agent's ETag is its version number, quoted: `"7"`. `If-Match` is accepted as
`"7"`, `7` or `W/"7"` (clients and proxies are sloppy about quoting and weakness;
the version is the whole identity, so a weak match is as good as a strong one), or
`*` (any current version: no check). Anything else, including a list of several
tags, is a 400: silently ignoring a header the client thought would protect its
write would turn a precondition into a lost update.
"""

from __future__ import annotations

import re
from typing import Annotated

from litestar.exceptions import ClientException
from litestar.openapi.spec import OpenAPIType
from litestar.params import HeaderParameter

_IF_MATCH_RE = re.compile(r'^(?:W/)?"(\d{1,18})"$|^(\d{1,18})$')
IF_MATCH_PATTERN = r'^(\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})$'
"""The accepted forms, for the OpenAPI document (checked by `expected_version`, which
answers 400 rather than Litestar's parameter 422: a bad precondition is a bad request)."""

IfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        required=False,
        # documented as a plain string: a nullable header makes generated clients send "null"
        schema_extra={"oneOf": None, "type": OpenAPIType.STRING, "pattern": IF_MATCH_PATTERN},
        description='Current version as an ETag (`"7"`; `7` and `W/"7"` accepted). '
        "On mismatch the write is refused with 412.",
    ),
]


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(if_match: str | None) -> int | None:
    """The version `If-Match` requires, or None for no precondition; 400 if malformed."""
    if if_match is None:
        return None
    value = if_match.strip()
    if value == "*":
        return None
    m = _IF_MATCH_RE.match(value)
    if m is None:
        raise ClientException(
            detail='malformed If-Match header: expected a version like "7"',
            extra={"header": "If-Match"},
        )
    return int(m.group(1) or m.group(2))
