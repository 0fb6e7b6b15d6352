"""opentelemetry-exporter-otlp-proto-common: the OTLP span encoder, writing the wire format.

Written against opentelemetry-exporter-otlp-proto-common 1.45.2
(`opentelemetry.exporter.otlp.proto.common._internal.trace_encoder.encode_spans`, which
the HTTP and gRPC trace exporters call through their module-level `encode_spans` name);
`install()` checks the installed version first and leaves the encoder alone, with one
warning, when it differs.

Why: the library builds a protobuf message per attribute, value, event, span, scope and
resource, each copied into its parent, and hashes each span's `Resource` (its attributes
dumped to JSON) to group them; run on the export thread, that was the largest share of
what tracing costs per span. Here the request's protobuf bytes are written directly,
field by field in field number order, proto3's defaults left out as upb leaves them out
(a oneof's default kept), so they are the bytes the library's request serializes to
(tests compare both on LiveKit's, Litestar's and our spans and on generated ones). What
repeats from span to span is encoded once and kept in bounded caches: attributes with a
str, bool or int value or a tuple of str (a float's key), span and event names, resource
and scope headers. Spans are grouped by identity, by equality only when two distinct
resources or scopes are equal.

Also written against opentelemetry-sdk 1.45.2 for reading spans: ReadableSpan's,
Event's, BoundedAttributes' and BoundedList's own fields, because their properties copy
the events and links and take a lock per attribute. `install()` reads the fields only
with that SDK version installed (the `opentelemetry_sdk` adapter warns on another),
the properties otherwise.

`encode_spans` (installed in the HTTP exporter, which only calls
`SerializePartialToString()` on it) returns the bytes in an `EncodedSpans`;
`encode_request` (installed in the gRPC exporter, whose stub serializes a real message,
and in the common module, which other callers and later imports take the name from)
parses them into the library's `ExportTraceServiceRequest`.

A lean span (`app.adapters.opentelemetry_sdk`) reaches the batch as an `EndedSpan`: its
end filters (LiveKit's PII filter) run here, as the batch is encoded, off the call's
event loop; one whose filters or encoding fail is logged and left out, and the rest of
the batch is sent.
"""

from __future__ import annotations

import logging
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from app.adapters.opentelemetry_sdk import EndedSpan
from app.adapters.pins import installed_version, matches

log = logging.getLogger(__name__)

DISTRIBUTION = "opentelemetry-exporter-otlp-proto-common"
WRITTEN_AGAINST = "1.45.2"
EXPORTERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)
"""Modules that call `encode_spans` by their own module-level name."""
HTTP_EXPORTER, GRPC_EXPORTER = EXPORTERS

_installed = False
_active = False

# Field keys (field number << 3 | wire type) are written as literal bytes below; the
# field numbers are those of opentelemetry-proto's trace.proto, common.proto, resource.proto.
_MASK64 = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_BYTE = tuple(bytes((n,)) for n in range(128))
_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_times = struct.Struct("<BQBQ").pack  # Span: start_time_unix_nano (7), end_time_unix_nano (8)
_pack_event_time = struct.Struct("<BQ").pack  # Event: time_unix_nano (1)

# Span.kind (6): the enum's value is SpanKind's plus one.
_KIND = {kind: b"\x30" + _BYTE[kind.value + 1] for kind in SpanKind}
# Span.flags / Link.flags: SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK, | ..._IS_REMOTE_MASK.
_SPAN_FLAGS_LOCAL, _SPAN_FLAGS_REMOTE = b"\x85\x01\x00\x01\x00\x00", b"\x85\x01\x00\x03\x00\x00"
_LINK_FLAGS_LOCAL, _LINK_FLAGS_REMOTE = b"\x35\x00\x01\x00\x00", b"\x35\x00\x03\x00\x00"

_CACHE_SIZE = 4096
"""Entries per cache; a full cache is emptied and refilled."""
_CACHED_STR_LEN = 200
"""Longer string values are encoded each time (they seldom repeat)."""
_CACHED_TUPLE_LEN = 16
_HEADER_CACHE_SIZE = 64

SDK_DISTRIBUTION, SDK_WRITTEN_AGAINST = "opentelemetry-sdk", "1.45.2"
_sdk_internals = False
"""Read spans through the SDK's fields rather than its properties (set by `install()`)."""


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _BYTE[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _utf8(value: Any) -> bytes:
    """A proto string field's bytes, accepting what upb accepts."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        value.decode()  # upb takes UTF-8 bytes for a string field
        return value
    raise TypeError("bad argument type for built-in operation")


def _string_field(key: bytes, value: Any) -> bytes:
    """A proto3 string field: left out when empty or None (unset)."""
    if value is None:
        return b""
    data = _utf8(value)
    return key + _varint(len(data)) + data if data else b""


def _int64(value: int) -> bytes:
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"Value out of range: {value}")
    return _varint(value & _MASK64)


def _any_value(value: Any) -> bytes:
    """The library's `_encode_value` (same type order): an AnyValue's body. The value is
    a oneof, so a default (``""``, ``0``, ``False``) is written, not left out."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        data = value.encode()
        return b"\x0a" + _varint(len(data)) + data
    if isinstance(value, int):
        return b"\x18" + _int64(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return b"\x3a" + _varint(len(value)) + value
    if isinstance(value, Sequence):
        body = b"".join([b"\x0a" + _varint(len(item)) + item for item in map(_any_value, value)])
        return b"\x2a" + _varint(len(body)) + body
    if isinstance(value, Mapping):
        body = b"".join([_field(b"\x0a", _key_value(str(k), item)) for k, item in value.items()])
        return b"\x32" + _varint(len(body)) + body
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: Any, value: Any) -> bytes:
    """A KeyValue's body: key (1) left out when empty, value (2) always there."""
    any_value = _any_value(value)
    return _string_field(b"\x0a", key) + b"\x12" + _varint(len(any_value)) + any_value


def _field(key: bytes, body: bytes) -> bytes:
    return key + _varint(len(body)) + body


class _AttributeCache:
    """Encoded attribute fields (field key, length, KeyValue) for one repeated field of
    one message type: whole fields by (attribute key, value) for str, bool, int values
    and tuples of str; for a float value, all but its 8 bytes by attribute key."""

    __slots__ = ("field_key", "strs", "ints", "bools", "str_tuples", "floats")

    def __init__(self, field_key: bytes) -> None:
        self.field_key = field_key
        self.strs: dict[tuple[str, str], bytes] = {}
        self.ints: dict[tuple[str, int], bytes] = {}
        self.bools: dict[tuple[str, bool], bytes] = {}
        self.str_tuples: dict[tuple[str, tuple[str, ...]], bytes] = {}
        self.floats: dict[str, bytes] = {}

    def add(self, out: list[bytes], attributes: Attributes) -> None:
        """Append each attribute's field to `out`. Like the library, an attribute that
        cannot be encoded is logged and left out; the others are kept."""
        if not attributes:
            return
        mapping: Mapping[Any, Any] = attributes
        if _sdk_internals and type(mapping) is BoundedAttributes:
            mapping = mapping._dict  # what its locked __iter__ and __getitem__ read
        strs, ints, bools = self.strs, self.ints, self.bools
        for key, value in mapping.items():
            kind = type(value)
            if kind is str:
                field = strs.get((key, value))
                if field is None:
                    field = self._encode(key, value, strs if len(value) <= _CACHED_STR_LEN else None)
            elif kind is int:
                field = ints.get((key, value))
                if field is None:
                    field = self._encode(key, value, ints)
            elif kind is bool:
                field = bools.get((key, value))
                if field is None:
                    field = self._encode(key, value, bools)
            elif kind is float:
                prefix = self.floats.get(key)
                field = prefix + _pack_double(value) if prefix is not None else self._float(key, value)
            elif kind is tuple and len(value) <= _CACHED_TUPLE_LEN and all(type(item) is str for item in value):
                # only all-str tuples: (1,) == (True,) == (1.0,) as dict keys
                field = self.str_tuples.get((key, value))
                if field is None:
                    field = self._encode(key, value, self.str_tuples)
            else:
                field = self._encode(key, value, None)
            if field:
                out.append(field)

    def _encode(self, key: Any, value: Any, cache: dict[Any, bytes] | None) -> bytes:
        try:
            field = _field(self.field_key, _key_value(key, value))
        except Exception as error:
            log.exception("Failed to encode key %s: %s", key, error)
            return b""
        if cache is not None:
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[(key, value)] = field
        return field

    def _float(self, key: Any, value: float) -> bytes:
        field = self._encode(key, value, None)
        if field and type(key) is str:
            if len(self.floats) >= _CACHE_SIZE:
                self.floats.clear()
            self.floats[key] = field[:-8]
        return field


_span_attributes = _AttributeCache(b"\x4a")  # Span.attributes (9)
_event_attributes = _AttributeCache(b"\x1a")  # Event.attributes (3)
_link_attributes = _AttributeCache(b"\x22")  # Link.attributes (4)


def _cached_string_field(cache: dict[str, bytes], key: bytes) -> Callable[[str], bytes]:
    def encode(value: str) -> bytes:
        field = cache.get(value)
        if field is None:
            field = _string_field(key, value)
            if type(value) is str and len(value) <= _CACHED_STR_LEN:
                if len(cache) >= _CACHE_SIZE:
                    cache.clear()
                cache[value] = field
        return field

    return encode


_span_names: dict[str, bytes] = {}
_event_names: dict[str, bytes] = {}
_span_name = _cached_string_field(_span_names, b"\x2a")  # Span.name (5)
_event_name = _cached_string_field(_event_names, b"\x12")  # Event.name (2)

_headers: dict[int, tuple[object, bytes]] = {}
"""Encoded resource bodies and scope headers, by id() of the object they hold on to
(a Resource's and an InstrumentationScope's attributes are immutable)."""


def _header(obj: Any, encode: Callable[[Any], bytes]) -> bytes:
    entry = _headers.get(id(obj))
    if entry is not None and entry[0] is obj:
        return entry[1]
    header = encode(obj)
    if len(_headers) >= _HEADER_CACHE_SIZE:
        _headers.clear()
    _headers[id(obj)] = (obj, header)
    return header


def _resource_body(resource: Resource) -> bytes:
    """Resource: attributes (1)."""
    out: list[bytes] = []
    _AttributeCache(b"\x0a").add(out, resource.attributes)
    return b"".join(out)


def _scope_field(scope: InstrumentationScope | None) -> bytes:
    """ScopeSpans.scope (1): an InstrumentationScope, there even when empty."""
    if scope is None:
        return b"\x0a\x00"
    out = [_string_field(b"\x0a", scope.name)]
    if scope.version is not None:
        out.append(_string_field(b"\x12", scope.version))
    _AttributeCache(b"\x1a").add(out, scope.attributes)
    return _field(b"\x0a", b"".join(out))


def _status_field(code: int, description: str | None) -> bytes:
    """Span.status (15): message (2), code (3)."""
    body = b"" if description is None else _string_field(b"\x12", description)
    if code:
        body += b"\x18" + _BYTE[code]
    return _field(b"\x7a", body)


def _trace_state(context: SpanContext) -> bytes:
    """Span.trace_state (3), as the library joins it."""
    state = context.trace_state
    if state is None:
        return b""
    return _string_field(b"\x1a", ",".join([f"{key}={value}" for key, value in state.items()]))


def _dropped(collection: object) -> int:
    """ReadableSpan's and Event's `dropped_*` properties, on the collection they read."""
    kind = type(collection)
    if kind is dict or kind is list or kind is tuple:
        return 0
    if kind is BoundedAttributes or kind is BoundedList or isinstance(collection, (BoundedAttributes, BoundedList)):
        dropped: int = collection.dropped  # type: ignore[attr-defined]
        return dropped
    return 0


def _events(out: list[bytes], events: Sequence[Event]) -> None:
    """Span.events (11): time_unix_nano (1), name (2), attributes (3),
    dropped_attributes_count (4)."""
    add_attributes = _event_attributes.add
    for event in events:
        if _sdk_internals and type(event) is Event:
            timestamp, name, attributes = event._timestamp, event._name, event._attributes
            dropped = _dropped(attributes)
        else:
            timestamp, name, attributes = event.timestamp, event.name, event.attributes
            dropped = event.dropped_attributes
        body = [_pack_event_time(0x09, timestamp) if timestamp else b"", _event_names.get(name) or _event_name(name)]
        add_attributes(body, attributes)
        if dropped:
            body.append(b"\x20" + _varint(dropped))
        encoded = b"".join(body)
        out.append(b"\x5a" + _varint(len(encoded)) + encoded)


def _links(out: list[bytes], links: Sequence[Link]) -> None:
    """Span.links (13): trace_id (1), span_id (2), attributes (4),
    dropped_attributes_count (5), flags (6)."""
    for link in links:
        context = link.context
        body = [b"\x0a\x10" + context.trace_id.to_bytes(16, "big") + b"\x12\x08" + context.span_id.to_bytes(8, "big")]
        _link_attributes.add(body, link.attributes)
        dropped = link.dropped_attributes
        if dropped:
            body.append(b"\x28" + _varint(dropped))
        body.append(_LINK_FLAGS_REMOTE if context.is_remote else _LINK_FLAGS_LOCAL)
        out.append(_field(b"\x6a", b"".join(body)))


def _span(span: ReadableSpan | EndedSpan) -> bytes | None:
    """A Span's body, in field number order; None for a lean span whose filters or
    encoding failed (logged: the span is left out, the rest of the batch is sent)."""
    if type(span) is EndedSpan:
        try:
            return _span_body(span.span, *span.exported())
        except Exception:
            log.exception("span %r not exported", span.span._name)
            return None
    assert isinstance(span, ReadableSpan)
    if _sdk_internals and type(span) is ReadableSpan:
        return _span_body(span, span._attributes, span._events, span._status)
    context, parent, name, kind = span.get_span_context(), span.parent, span.name, span.kind
    assert context is not None  # a ReadableSpan always has one
    return _body(
        context, parent, name, kind, span.start_time, span.end_time, span.status,
        span.attributes, span.events, span.links, span.dropped_attributes, span.dropped_events, span.dropped_links,
    )


def _span_body(span: ReadableSpan, attributes: Attributes, events: Sequence[Event], status: Status | None) -> bytes:
    """The body of a span read from the SDK's own fields (1.45.2: its properties copy events
    and take locks), with these attributes, events and status."""
    links = span._links
    # a lean span's plain maps and lists have dropped nothing
    dropped_attributes = 0 if type(attributes) is dict else _dropped(attributes)
    dropped_events = 0 if type(events) is list or type(events) is tuple else _dropped(events)
    dropped_links = 0 if type(links) is tuple else _dropped(links)
    if type(events) is BoundedList:
        events = events._dq  # type: ignore[attr-defined]  # what its locked __iter__ copies
    if type(links) is BoundedList:
        links = links._dq  # type: ignore[attr-defined]
    assert span._context is not None  # a ReadableSpan always has one
    return _body(
        span._context, span._parent, span._name, span._kind, span._start_time, span._end_time, status,
        attributes, events, links, dropped_attributes, dropped_events, dropped_links,
    )


def _body(
    context: SpanContext, parent: SpanContext | None, name: str, kind: SpanKind, start: int | None, end: int | None,
    status: Status | None, attributes: Attributes, events: Sequence[Event], links: Sequence[Link],
    dropped_attributes: int, dropped_events: int, dropped_links: int,
) -> bytes:
    out = [b"\x0a\x10" + context.trace_id.to_bytes(16, "big") + b"\x12\x08" + context.span_id.to_bytes(8, "big")]
    if context.trace_state:
        out.append(_trace_state(context))
    if parent:
        out.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    out.append(_span_names.get(name) or _span_name(name))
    out.append(b"\x30\x01" if kind is SpanKind.INTERNAL else _KIND[kind])
    if start and end:
        out.append(_pack_times(0x39, start, 0x41, end))
    else:
        if start:
            out.append(b"\x39" + _pack_fixed64(start))
        if end:
            out.append(b"\x41" + _pack_fixed64(end))
    _span_attributes.add(out, attributes)
    if dropped_attributes:
        out.append(b"\x50" + _varint(dropped_attributes))
    if events:
        _events(out, events)
    if dropped_events:
        out.append(b"\x60" + _varint(dropped_events))
    if links:
        _links(out, links)
    if dropped_links:
        out.append(b"\x70" + _varint(dropped_links))
    if status is not None:
        code, description = status.status_code, status.description
        if code is StatusCode.UNSET and description is None:
            out.append(b"\x7a\x00")
        else:
            out.append(_status_field(code.value, description))
    out.append(_SPAN_FLAGS_REMOTE if parent is not None and parent.is_remote else _SPAN_FLAGS_LOCAL)
    return b"".join(out)


def accepts_ended(exporter: object) -> bool:
    """Whether this exporter's requests are encoded here, so that its batches may hold
    lean spans' `EndedSpan`s."""
    module = sys.modules.get(type(exporter).__module__)
    return _active and _sdk_internals and getattr(module, "encode_spans", None) in (encode_spans, encode_request)


Groups = dict[Resource, dict[InstrumentationScope | None, list[ReadableSpan]]]


def _grouped(sdk_spans: Sequence[ReadableSpan]) -> Groups:
    """Spans by resource, then scope, in the order they first appear; equal resources
    (scopes) are one group, as in the library's dicts. Grouped by identity first: hashing
    a Resource serializes its attributes."""
    by_id: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[ReadableSpan]]]]] = {}
    for span in sdk_spans:
        resource = span.resource
        entry = by_id.get(id(resource))
        if entry is None:
            entry = by_id[id(resource)] = (resource, {})
        scope = span.instrumentation_scope or None
        scope_entry = entry[1].get(id(scope))
        if scope_entry is None:
            scope_entry = entry[1][id(scope)] = (scope, [])
        scope_entry[1].append(span)
    grouped: Groups = {}
    for resource, scopes in by_id.values():
        grouped[resource] = dict(scopes.values())
        if len(grouped[resource]) != len(scopes):
            break
    else:
        if len(grouped) == len(by_id):
            return grouped
    # Distinct but equal resources or scopes: grouped by equality, span by span.
    grouped = {}
    for span in sdk_spans:
        grouped.setdefault(span.resource, {}).setdefault(span.instrumentation_scope or None, []).append(span)
    return grouped


def _encode(sdk_spans: Sequence[ReadableSpan]) -> bytes:
    """The bytes of the library's `encode_spans(sdk_spans)` serialized."""
    request: list[bytes] = []
    for resource, scopes in _grouped(sdk_spans).items():
        resource_spans = [_field(b"\x0a", _header(resource, _resource_body))]  # ResourceSpans.resource (1)
        for scope, members in scopes.items():
            scope_spans = [_header(scope, _scope_field)]
            for span in members:
                body = _span(span)
                if body is not None:
                    scope_spans.append(b"\x12" + _varint(len(body)) + body)  # ScopeSpans.spans (2)
            if len(scope_spans) == 1:
                continue  # every span of the scope left out (`_span`)
            if scope is not None and scope.schema_url is not None:
                scope_spans.append(_string_field(b"\x1a", scope.schema_url))  # ScopeSpans.schema_url (3)
            resource_spans.append(_field(b"\x12", b"".join(scope_spans)))  # ResourceSpans.scope_spans (2)
        if len(resource_spans) == 1:
            continue
        if resource.schema_url is not None:
            resource_spans.append(_string_field(b"\x1a", resource.schema_url))  # ResourceSpans.schema_url (3)
        request.append(_field(b"\x0a", b"".join(resource_spans)))  # ExportTraceServiceRequest.resource_spans (1)
    return b"".join(request)


class EncodedSpans:
    """An ExportTraceServiceRequest already serialized: what the HTTP exporter asks of
    `encode_spans`'s result; `message()` parses it for anything else."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializePartialToString(self, **_options: Any) -> bytes:
        return self.data

    def SerializeToString(self, **_options: Any) -> bytes:
        return self.data

    def ByteSize(self) -> int:
        return len(self.data)

    def message(self) -> ExportTraceServiceRequest:
        return ExportTraceServiceRequest.FromString(self.data)


def encode_spans(sdk_spans: Sequence[ReadableSpan]) -> EncodedSpans:
    """The library's `encode_spans`, serialized: for the HTTP exporter."""
    return EncodedSpans(_encode(sdk_spans))


def encode_request(sdk_spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """The library's `encode_spans`, as its message: for the gRPC exporter and any other
    caller of the common module's name."""
    return ExportTraceServiceRequest.FromString(_encode(sdk_spans))


def install() -> bool:
    """Point the OTLP trace exporters (the ones imported now, and the common module
    those imported later take the name from) at the encoder (idempotent)."""
    global _installed, _active, _sdk_internals
    if _installed:
        return _active
    _installed = True
    if not matches(DISTRIBUTION, WRITTEN_AGAINST, adapter=__name__):
        return False
    _sdk_internals = installed_version(SDK_DISTRIBUTION) == SDK_WRITTEN_AGAINST
    from opentelemetry.exporter.otlp.proto.common import trace_encoder
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_exporter  # noqa: F401

    original = trace_encoder.encode_spans
    encode_spans.__wrapped__ = original  # type: ignore[attr-defined]
    encode_request.__wrapped__ = original  # type: ignore[attr-defined]
    trace_encoder.encode_spans = encode_request
    for name, ours in ((HTTP_EXPORTER, encode_spans), (GRPC_EXPORTER, encode_request)):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "encode_spans", None) is original:
            module.encode_spans = ours  # type: ignore[attr-defined]
    _active = True
    if _sdk_internals:
        from app.adapters import opentelemetry_sdk

        opentelemetry_sdk.register_batch_exporter(accepts_ended)
    return True


def active() -> bool:
    return _active
