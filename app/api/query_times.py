"""Date-time query parameters (`since`, `until`) shared by the list and report endpoints:
RFC 3339 with an offset, or a 422 naming the parameter."""

from __future__ import annotations

import re
from datetime import datetime

from litestar.exceptions import ValidationException
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)
TIME_DOC = {"oneOf": None, "type": OpenAPIType.STRING, "format": OpenAPIFormat.DATE_TIME}
"""Documented as exactly what `query_time` accepts (not `datetime | None`, which Litestar's
parser would also fill from `?since=0.5` as a Unix time, or from the string "null")."""


def query_error(route: str, key: str, message: str) -> ValidationException:
    return ValidationException(
        detail=f"Validation failed for {route}", extra=[{"key": key, "message": message, "source": "query"}]
    )


def query_time(value: str | None, key: str, route: str) -> datetime | None:
    """An RFC 3339 date-time with an offset (JSON Schema's `date-time`), else a 422."""
    if value is None:
        return None
    m = _RFC3339.match(value)
    if m is not None:
        text = value.upper().replace("Z", "+00:00")
        if m.group(1) == "60":  # a leap second: the filter bound is the second before
            text = text[: m.start(1)] + "59" + text[m.end(1):]
        if m.group(2) and len(m.group(2)) > 7:  # datetime takes microseconds at most
            text = text[: m.start(2) + 7] + text[m.end(2):]
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    raise query_error(route, key, "expected an RFC 3339 date-time, e.g. 2025-01-31T09:00:00Z")
