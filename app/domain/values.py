"""Value types every domain model uses: UTC times and exact JSON scalars.

Kept apart from `models` so the smaller domain modules (`analysis`, `usage`) can use
them without importing the whole config model.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator


def utcnow() -> datetime:
    return datetime.now(UTC)


def _to_utc(value: datetime) -> datetime:
    """Every stored time is UTC, whatever offset a client or driver used."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _not_a_number(value: Any) -> Any:
    """A time is an RFC 3339 string (or a datetime from a driver), never a bare number:
    lax parsing would read `0` or `true` as a Unix timestamp."""
    if isinstance(value, int | float):
        raise ValueError("expected an RFC 3339 date-time string")
    return value


UtcDatetime = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_to_utc)]


# Exact JSON types for client-written scalars: `"true"`, `0` or `"5"` are not a bool or a
# number. pydantic's lax mode coerces them, and Litestar validates bodies with
# `strict=False` (overriding any model or field `strict`), so the check is a validator.
# Found by fuzzing: bodies the OpenAPI document calls invalid were accepted.
def _exact(*types: type, name: str) -> Any:
    def check(value: Any) -> Any:
        if value is None:  # left to the field's own None handling
            return value
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            raise ValueError(f"Input should be a JSON {name}")
        return value

    return BeforeValidator(check)


BOOL = _exact(bool, name="boolean")
INT = _exact(int, name="integer")
NUMBER = _exact(int, float, name="number")
JsonBool = Annotated[bool, BOOL]
JsonInt = Annotated[int, INT]
JsonNumber = Annotated[float, NUMBER]
"""For a constrained optional, put the bounds first: `Annotated[float, Field(ge=0), NUMBER]`
(after the validator pydantic still enforces them but documents `ge`, not `minimum`)."""
