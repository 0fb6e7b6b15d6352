"""One error shape for every failure: Litestar's `{"status_code", "detail", "extra"}`.

Domain errors raised by the store are mapped to HTTP here, once, so controllers just
call the store and let exceptions propagate. Field-level failures (Litestar's own body
and parameter validation, pydantic errors from the domain model) become 422 with
`extra` as a list of `{"key": "<dotted.path>", "message": ...}` entries, the format
Litestar itself emits. Malformed JSON stays a plain 400: it never reached validation;
that includes bodies the JSON decoder fails on with a bare Python exception instead of
a decode error (nested too deeply, invalid UTF-8). Anything unexpected is logged here and answered with a generic 500, so no traceback,
SQL or configuration value ever reaches a client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    NotFoundException,
    SerializationException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.exceptions.responses import ExceptionResponseContent
from litestar.openapi.datastructures import ResponseSpec
from litestar.serialization import decode_json, decode_msgpack
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_412_PRECONDITION_FAILED,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap
from pydantic import ValidationError

from app.api.conditional import etag
from app.domain import (
    AlreadyExists,
    CorruptRecord,
    DomainError,
    InProgress,
    InUse,
    InvalidInput,
    InvalidReference,
    NotFound,
    NumberTaken,
    PublishRefused,
    ReleaseConflict,
    RolloutConflict,
    StoreUnavailable,
    VersionConflict,
    WrongState,
)
from app.domain.agent_tests import InvalidTestDocument, TestsNotPassing
from app.domain.field_errors import field_errors

log = logging.getLogger(__name__)


@dataclass
class FieldError:
    """One entry of a 422's `extra`."""

    message: str
    key: str | None = None


@dataclass
class ErrorBody:
    """The body of every error response (documented in OpenAPI)."""

    status_code: int
    detail: str
    extra: list[FieldError] | dict[str, Any] | None = None


def _json_error(
    status_code: int,
    detail: str,
    extra: dict[str, Any] | list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    return ExceptionResponseContent(
        status_code=status_code,
        detail=detail,
        extra=extra,
        headers=headers,
        media_type=MediaType.JSON,
    ).to_response()


def field_error(key: str, message: str, detail: str | None = None) -> ValidationException:
    """A 422 about one body field, for rules the handler checks itself."""
    return ValidationException(
        detail=detail or f"invalid value for {key}", extra=[{"message": message, "key": key}]
    )


def pydantic_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as Litestar's `[{"message", "key"}]`, worded by the domain's one
    formatter (`app.domain.field_errors`: no "Value error, " prefix); input values are
    never echoed."""
    out: list[dict[str, str]] = []
    for loc, message in field_errors(exc):
        entry = {"message": message}
        if loc:
            entry["key"] = ".".join(str(p) for p in loc)
        out.append(entry)
    return out


def _pydantic_cause(exc: BaseException) -> ValidationError | None:
    """The pydantic error behind a Litestar `ValidationException`, if any: Litestar
    validates a pydantic body itself and words the errors from pydantic's raw `msg`."""
    seen: set[int] = set()
    cause = exc.__cause__
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ValidationError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__
    return None


# ------------------------------------------------------------------------- handlers


def _validation_exception(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    # Litestar raises ValidationException (400) both for field errors (extra is a list)
    # and for transport problems like a missing multipart boundary (no extra). Only the
    # former is "unprocessable content".
    if not isinstance(exc.extra, list):
        return _json_error(exc.status_code, exc.detail, exc.extra)
    cause = _pydantic_cause(exc)
    extra = pydantic_errors(cause) if cause is not None else [_readable(e) for e in exc.extra]
    return _json_error(HTTP_422_UNPROCESSABLE_ENTITY, exc.detail, extra)


def _readable(entry: Any) -> Any:
    # An absent body surfaces from Litestar as a KeyError message "'data'"; say what it means.
    if isinstance(entry, dict) and entry.get("key") == "data" and entry.get("message") == "'data'":
        return {**entry, "message": "a JSON request body is required"}
    return entry


def _client_error(request: Request[Any, Any, Any], exc: ClientException) -> Response[Any]:
    # Litestar reports undecodable JSON as a bare msgspec message ("Input data was
    # truncated"); say that it is the body's syntax, not its content, that is wrong.
    # A 413 names the limit, so a client knows how far over it is.
    detail = exc.detail
    if isinstance(exc.__cause__, SerializationException):
        detail = f"malformed JSON body: {detail}"
    elif isinstance(exc, RequestEntityTooLarge):
        limit = request.route_handler.resolve_request_max_body_size()
        detail = f"request body exceeds the {limit}-byte limit"
    headers = exc.headers
    if exc.status_code == HTTP_429_TOO_MANY_REQUESTS:
        # Litestar's rate limiter sends only the draft RateLimit-* headers; Retry-After is
        # what HTTP clients and proxies act on (RFC 9110 §10.2.3).
        headers = dict(headers or {})
        reset = next((v for k, v in headers.items() if k.lower() == "ratelimit-reset"), None)
        headers.setdefault("Retry-After", str(reset or 60))
    return _json_error(exc.status_code, detail, exc.extra, headers)


_DECODERS = frozenset({decode_json.__code__, decode_msgpack.__code__})


def _raised_decoding_the_body(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code in _DECODERS:
            return True
        tb = tb.tb_next
    return False


def _undecodable_body(request: Request[Any, Any, Any], exc: RecursionError | UnicodeDecodeError) -> Response[Any]:
    """Litestar turns msgspec's decode errors into a 400, but msgspec raises a plain
    RecursionError for a body nested ~1000 levels deep and UnicodeDecodeError for bytes
    that are not UTF-8: the same client mistake, and an unhandled 500 before this.
    Raised anywhere else, they are server bugs and stay 500s."""
    if not _raised_decoding_the_body(exc):
        return _internal_error(request, exc)
    reason = "nested too deeply" if isinstance(exc, RecursionError) else "not valid UTF-8"
    return _json_error(HTTP_400_BAD_REQUEST, f"malformed JSON body: {reason}")


def file_not_found(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """For static file routers: Litestar's 404 names the absolute path it looked at,
    and a 401 for an unreadable file names it too. A client learns only "not there"."""
    return _json_error(HTTP_404_NOT_FOUND, "file not found")


STATIC_FILE_HANDLERS: ExceptionHandlersMap = {
    NotFoundException: file_not_found,
    NotAuthorizedException: file_not_found,
}
"""`exception_handlers=` for a `create_static_files_router`."""


def _pydantic_validation(request: Request[Any, Any, Any], exc: ValidationError) -> Response[Any]:
    return _json_error(
        HTTP_422_UNPROCESSABLE_ENTITY,
        f"Validation failed for {request.method} {request.url.path}",
        pydantic_errors(exc),
    )


def _not_found(request: Request[Any, Any, Any], exc: NotFound) -> Response[Any]:
    return _json_error(HTTP_404_NOT_FOUND, exc.message, exc.extra or None)


def _conflict(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    return _json_error(HTTP_409_CONFLICT, exc.message, exc.extra or None)


def _version_conflict(request: Request[Any, Any, Any], exc: VersionConflict) -> Response[Any]:
    # 412 answers a failed precondition the client asked for; without If-Match the
    # conflict came from a concurrent writer and is a plain 409.
    status = HTTP_412_PRECONDITION_FAILED if "if-match" in request.headers else HTTP_409_CONFLICT
    headers = {"ETag": etag(exc.actual)} if exc.actual is not None else None
    return _json_error(status, exc.message, exc.extra, headers)


def _release_conflict(request: Request[Any, Any, Any], exc: ReleaseConflict) -> Response[Any]:
    # As for versions: 412 answers the client's own precondition, 409 a lost race.
    status = HTTP_412_PRECONDITION_FAILED if "if-match" in request.headers else HTTP_409_CONFLICT
    headers = {"ETag": etag(exc.actual)} if exc.actual is not None else None
    return _json_error(status, exc.message, exc.extra, headers)


def _invalid_input(request: Request[Any, Any, Any], exc: InvalidInput) -> Response[Any]:
    # A rule spanning records (e.g. a route naming an unknown agent). The store puts
    # the offending field in `extra` (`InvalidReference(..., agent_id=...)`): that
    # field name becomes the error key, like any other field error.
    entry: dict[str, Any] = {"message": exc.message}
    if isinstance(exc, InvalidReference) and exc.extra:
        entry["key"] = str(exc.extra.get("field") or next(iter(exc.extra)))
    elif isinstance(exc.extra.get("field"), str):  # a rule about one body field (`field=`)
        entry["key"] = str(exc.extra["field"])
    return _json_error(HTTP_422_UNPROCESSABLE_ENTITY, exc.message, [entry])


def _invalid_test(request: Request[Any, Any, Any], exc: InvalidTestDocument) -> Response[Any]:
    # Each problem of the scenario at its line, keyed by its path inside `content`.
    entries = [{"key": "content" + (f".{p.field}" if p.field and not p.field.startswith("[") else p.field),
                "message": p.message, "line": p.line} for p in exc.problems]
    return _json_error(HTTP_422_UNPROCESSABLE_ENTITY, exc.message, entries)


def _store_unavailable(request: Request[Any, Any, Any], exc: StoreUnavailable) -> Response[Any]:
    return _json_error(
        HTTP_503_SERVICE_UNAVAILABLE, "store unavailable, retry shortly", None, {"Retry-After": "1"}
    )


def _corrupt_record(request: Request[Any, Any, Any], exc: CorruptRecord) -> Response[Any]:
    # The server's data is wrong, not the request: a 500 that says which record, so an
    # operator can fix or roll it back (the message names ids, never stored values).
    log.error("%s %s: %s", request.method, request.url.path, exc.message)
    return _json_error(HTTP_500_INTERNAL_SERVER_ERROR, exc.message, exc.extra or None)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Every exception without a more specific handler (and every HTTP 500)."""
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return _json_error(HTTP_500_INTERNAL_SERVER_ERROR, "Internal Server Error")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ClientException: _client_error,
    ValidationException: _validation_exception,
    ValidationError: _pydantic_validation,
    NotFound: _not_found,
    AlreadyExists: _conflict,
    InUse: _conflict,
    NumberTaken: _conflict,
    InProgress: _conflict,
    WrongState: _conflict,
    VersionConflict: _version_conflict,
    ReleaseConflict: _release_conflict,
    RolloutConflict: _conflict,
    PublishRefused: _conflict,
    InvalidInput: _invalid_input,
    InvalidTestDocument: _invalid_test,
    TestsNotPassing: _conflict,
    StoreUnavailable: _store_unavailable,
    CorruptRecord: _corrupt_record,
    RecursionError: _undecodable_body,
    UnicodeDecodeError: _undecodable_body,
    HTTP_500_INTERNAL_SERVER_ERROR: _internal_error,
}
"""Passed to `Litestar(exception_handlers=...)`. Lookup is by class (most specific in
the MRO wins), and the 500 entry catches everything else; other server-side
HTTPExceptions (405, 503 raised by Litestar itself) keep Litestar's default
rendering, which already has the shared shape."""


# ------------------------------------------------------------------------- openapi

_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request (bad JSON, bad If-Match header)",
    401: "Missing or invalid bearer token",
    403: "The key's role does not allow this operation; `detail` names the role needed",
    404: "Not found",
    409: "Conflict (already exists, in use, or a concurrent write)",
    412: "If-Match does not name the current version; `extra.current_version` does",
    413: "Request body too large",
    415: "Unsupported content type",
    422: "Validation failed; `extra` lists `{key, message}` per field",
    429: "Too many requests from this client; retry after the `Retry-After` seconds",
    503: "Store unavailable",
}


ADMIN_ERRORS = (401, 403, 503)
"""Every admin handler can answer these: no/wrong key, a role too low, store outage."""


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """`responses=` for an admin handler: the listed codes plus `ADMIN_ERRORS`, with
    the shared error body."""
    return {
        code: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS[code], generate_examples=False)
        for code in sorted({*codes, *ADMIN_ERRORS})
    }


__all__ = [
    "EXCEPTION_HANDLERS",
    "STATIC_FILE_HANDLERS",
    "ErrorBody",
    "FieldError",
    "error_responses",
    "field_error",
    "pydantic_errors",
]
