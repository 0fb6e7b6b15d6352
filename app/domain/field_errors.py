"""Pydantic validation errors as (location, message) pairs, worded for people.

The one formatter behind every place a validation error reaches a person: the admin
API's 422 `extra`, the config-file loaders (seed, the PTE source), the CLI's settings
errors and the sim's scenario loader. Why it exists: pydantic words a `ValueError`
raised in a validator as "Value error, <message>" (an `AssertionError` as "Assertion
failed, ..."). Our validators' messages are written for the reader and must reach
them as written, so the message is taken from the exception itself.

Validators that know which field is wrong say so by raising `field_error(...)`-built
errors from a model validator (`raise_field_errors`): pydantic then reports them at
that field's path (`prompt_config.instructions`), not at the model's.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

Loc = tuple[int | str, ...]

_WRAPPED = frozenset({"value_error", "assertion_error"})
"""Error types whose `msg` is pydantic's prefix + the raised exception's text."""


def error_message(err: ErrorDetails) -> str:
    """The message of one pydantic error, without pydantic's "Value error, " prefix."""
    cause = (err.get("ctx") or {}).get("error")
    if err["type"] in _WRAPPED and isinstance(cause, BaseException) and str(cause):
        return str(cause)
    return err["msg"]


def field_errors(exc: ValidationError) -> list[tuple[Loc, str]]:
    """Every problem of `exc` as `(loc, message)`; input values are never included."""
    return [
        (tuple(e["loc"]), error_message(e))
        for e in exc.errors(include_url=False, include_input=False, include_context=True)
    ]


def format_location(loc: Sequence[int | str]) -> str:
    """`("schema_config", "properties", 0)` -> `schema_config.properties[0]` (files and CLI)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


def field_error(field: str, message: str) -> InitErrorDetails:
    """One problem located at `field` of the model being validated."""
    return InitErrorDetails(
        type=PydanticCustomError("value_error", "{reason}", {"reason": message}),
        loc=(field,),
        input=None,
    )


def raise_field_errors(model: str, problems: Sequence[InitErrorDetails]) -> None:
    """From a model validator: report `problems` at their fields (no-op when empty).

    pydantic nests the locations under the model's own path, so a `PromptConfig`
    problem at `greeting` is reported at `prompt_config.greeting`."""
    if problems:
        raise ValidationError.from_exception_data(model, list(problems))
