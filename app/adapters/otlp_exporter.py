"""opentelemetry-exporter-otlp-proto-common: the OTLP span encoder, building the request in place.

Written against opentelemetry-exporter-otlp-proto-common 1.45.2
(`opentelemetry.exporter.otlp.proto.common._internal.trace_encoder.encode_spans`, which
the HTTP and gRPC trace exporters call through their module-level `encode_spans` name);
`install()` checks the installed version first and leaves the encoder alone, with one
warning, when it differs.

Why: the library builds every attribute, span and scope as a message of its own and
hands each to its parent's constructor, which copies it; a span is copied once per
level (attribute, span, scope, resource, request) before it is serialized. Run on the
export thread, that encoding was the largest share of what tracing costs per span.
`encode_spans` here fills one request message in place (`add()`), field by field as
the library sets them, so the serialized bytes are the same (tests compare both on
LiveKit's, Litestar's and our spans and on generated ones).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any, cast

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan, SpanFlags, Status as PbStatus
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.util.types import Attributes

from app.adapters.pins import matches

log = logging.getLogger(__name__)

DISTRIBUTION = "opentelemetry-exporter-otlp-proto-common"
WRITTEN_AGAINST = "1.45.2"
EXPORTERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)
"""Modules that call `encode_spans` by their own module-level name."""

_KIND = {
    SpanKind.INTERNAL: PbSpan.SpanKind.SPAN_KIND_INTERNAL,
    SpanKind.SERVER: PbSpan.SpanKind.SPAN_KIND_SERVER,
    SpanKind.CLIENT: PbSpan.SpanKind.SPAN_KIND_CLIENT,
    SpanKind.PRODUCER: PbSpan.SpanKind.SPAN_KIND_PRODUCER,
    SpanKind.CONSUMER: PbSpan.SpanKind.SPAN_KIND_CONSUMER,
}
_HAS_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK

_installed = False
_active = False


def _flags(context: SpanContext | None) -> int:
    return _HAS_IS_REMOTE | _IS_REMOTE if context is not None and context.is_remote else _HAS_IS_REMOTE


def _value(out: AnyValue, value: Any) -> None:
    """The library's `_encode_value`, written into `out` (same type order)."""
    kind = type(value)
    if kind is str:
        out.string_value = value
    elif kind is bool:
        out.bool_value = value
    elif kind is int:
        out.int_value = value
    elif kind is float:
        out.double_value = value
    elif value is None:
        out.SetInParent()
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, Sequence):
        array = out.array_value
        array.SetInParent()
        for item in value:
            _value(array.values.add(), item)
    elif isinstance(value, Mapping):
        kvlist = out.kvlist_value
        kvlist.SetInParent()
        for k, item in value.items():
            entry = kvlist.values.add()
            entry.key = str(k)
            _value(entry.value, item)
    else:
        raise TypeError(f"Invalid type {type(value)} of value {value}")


def _attributes(out: Any, attributes: Attributes) -> None:
    """`out`: a repeated KeyValue field. Like the library, an attribute that cannot be
    encoded is logged and left out; the others are kept."""
    if not attributes:
        return
    for key, value in attributes.items():
        entry: KeyValue = out.add()
        try:
            entry.key = key
            _value(entry.value, value)
        except Exception as error:
            del out[-1]
            log.exception("Failed to encode key %s: %s", key, error)


def _span(out: PbSpan, span: ReadableSpan) -> None:
    context = span.get_span_context()
    assert context is not None  # a ReadableSpan always has one
    out.trace_id = context.trace_id.to_bytes(length=16, byteorder="big", signed=False)
    out.span_id = context.span_id.to_bytes(length=8, byteorder="big", signed=False)
    if context.trace_state is not None:
        out.trace_state = ",".join([f"{key}={value}" for key, value in context.trace_state.items()])
    parent = span.parent
    if parent:
        out.parent_span_id = parent.span_id.to_bytes(length=8, byteorder="big", signed=False)
    out.name = span.name
    out.kind = _KIND[span.kind]
    if span.start_time is not None:
        out.start_time_unix_nano = span.start_time
    if span.end_time is not None:
        out.end_time_unix_nano = span.end_time
    _attributes(out.attributes, span.attributes)
    for event in span.events:
        pb_event = out.events.add()
        pb_event.name = event.name
        pb_event.time_unix_nano = event.timestamp
        _attributes(pb_event.attributes, event.attributes)
        pb_event.dropped_attributes_count = event.dropped_attributes
    for link in span.links:
        pb_link = out.links.add()
        pb_link.trace_id = link.context.trace_id.to_bytes(length=16, byteorder="big", signed=False)
        pb_link.span_id = link.context.span_id.to_bytes(length=8, byteorder="big", signed=False)
        _attributes(pb_link.attributes, link.attributes)
        pb_link.dropped_attributes_count = link.dropped_attributes
        pb_link.flags = _flags(link.context)
    status = span.status
    if status is not None:
        out.status.SetInParent()
        out.status.code = cast(PbStatus.StatusCode.ValueType, status.status_code.value)
        if status.description is not None:
            out.status.message = status.description
    out.dropped_attributes_count = span.dropped_attributes
    out.dropped_events_count = span.dropped_events
    out.dropped_links_count = span.dropped_links
    out.flags = _flags(parent)


def encode_spans(sdk_spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """The library's `encode_spans`: spans grouped by resource, then scope, in the
    order they first appear."""
    grouped: dict[Resource, dict[InstrumentationScope | None, list[ReadableSpan]]] = {}
    for span in sdk_spans:
        grouped.setdefault(span.resource, {}).setdefault(span.instrumentation_scope or None, []).append(span)
    request = ExportTraceServiceRequest()
    for resource, scopes in grouped.items():
        resource_spans = request.resource_spans.add()
        resource_spans.resource.SetInParent()
        _attributes(resource_spans.resource.attributes, resource.attributes)
        for scope, scope_members in scopes.items():
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.SetInParent()
            if scope is not None:
                scope_spans.scope.name = scope.name
                if scope.version is not None:
                    scope_spans.scope.version = scope.version
                _attributes(scope_spans.scope.attributes, scope.attributes)
                if scope.schema_url is not None:
                    scope_spans.schema_url = scope.schema_url
            for span in scope_members:
                _span(scope_spans.spans.add(), span)
        if resource.schema_url is not None:
            resource_spans.schema_url = resource.schema_url
    return request


def install() -> bool:
    """Point the OTLP trace exporters (the ones imported now, and the common module
    those imported later take the name from) at `encode_spans` (idempotent)."""
    global _installed, _active
    if _installed:
        return _active
    _installed = True
    if not matches(DISTRIBUTION, WRITTEN_AGAINST, adapter=__name__):
        return False
    from opentelemetry.exporter.otlp.proto.common import trace_encoder
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_exporter  # noqa: F401

    original = trace_encoder.encode_spans
    encode_spans.__wrapped__ = original  # type: ignore[attr-defined]
    trace_encoder.encode_spans = encode_spans
    for name in EXPORTERS:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "encode_spans", None) is original:
            module.encode_spans = encode_spans  # type: ignore[attr-defined]
    _active = True
    return True


def active() -> bool:
    return _active
