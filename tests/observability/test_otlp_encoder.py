"""The OTLP span encoder adapter (`app.adapters.otlp_exporter`): the bytes it produces
are the library's own, byte for byte, on spans of every shape (attribute types, events,
links, status, remote parents, trace state, several resources and scopes, dropped
counts, values that cannot be encoded), read through the SDK's fields or its public
properties, with its caches cold, warm and evicted; the HTTP exporter gets the bytes,
the gRPC exporter a message. The end-to-end tests in test_tracing.py decode its output
in a real OTLP receiver."""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans as library_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from app.adapters import otlp_exporter


@contextmanager
def sdk_internals(on: bool) -> Iterator[None]:
    before = otlp_exporter._sdk_internals
    otlp_exporter._sdk_internals = on
    try:
        yield
    finally:
        otlp_exporter._sdk_internals = before


def same_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    """Ours equal the library's: through the SDK's fields and its properties, each twice
    (the second time from the caches), and as the gRPC exporter's message."""
    expected = library_encode(spans).SerializePartialToString()
    for internals in (True, False, True):
        with sdk_internals(internals):
            assert otlp_exporter.encode_spans(spans).SerializePartialToString() == expected
            assert otlp_exporter.encode_spans(spans).SerializeToString() == expected
    request = otlp_exporter.encode_request(spans)
    assert type(request) is ExportTraceServiceRequest
    assert ExportTraceServiceRequest.SerializeToString(request) == expected  # what the gRPC stub calls
    assert otlp_exporter.encode_spans(spans).message() == request
    return expected


def recorded(build: Any, *, resource: Resource | None = None, limits: SpanLimits | None = None) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource, span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    build(provider)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def test_installed_in_the_exporters() -> None:
    from opentelemetry.exporter.otlp.proto.common import trace_encoder
    from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_exporter
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    assert otlp_exporter.active() and otlp_exporter._sdk_internals
    assert trace_exporter.encode_spans is otlp_exporter.encode_spans  # type: ignore[attr-defined, comparison-overlap]  # bytes
    # a message, which the gRPC stub serializes; a gRPC exporter imported after install()
    # takes the common module's name
    assert trace_encoder.encode_spans is otlp_exporter.encode_request
    assert grpc_exporter.encode_spans is otlp_exporter.encode_request  # type: ignore[attr-defined]


def test_the_grpc_exporter_sends_the_librarys_request() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    spans = recorded(lambda p: p.get_tracer("t").start_span("s", attributes={"a": 1}).end())
    exporter = OTLPSpanExporter(endpoint="localhost:4317", insecure=True)
    try:
        request = exporter._translate_data(spans)
    finally:
        exporter.shutdown()
    assert ExportTraceServiceRequest.SerializeToString(request) == library_encode(spans).SerializeToString()


def test_spans_of_every_shape_encode_to_the_librarys_bytes() -> None:
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")]))

    def build(provider: TracerProvider) -> None:
        lk = provider.get_tracer("livekit-agents", "1.8.9", schema_url="https://opentelemetry.io/schemas/1.21.0",
                                 attributes={"scope.attr": "x"})
        app = provider.get_tracer("app")
        with app.start_as_current_span("call", attributes={"session_id": "s1", "config_version": 3}):
            with lk.start_as_current_span("agent_turn", kind=SpanKind.SERVER) as span:
                span.set_attributes({
                    "s": "text", "b": True, "i": -7, "f": 0.25, "big": 2**62,
                    "ss": ("a", "b"), "bs": [True, False], "is": (1, 2, 3), "fs": (0.5,), "empty": (),
                    "unicode": "naïve ✓",
                })
                span.add_event("generation", {"n": 1, "names": ("x",)})
                span.add_event("bare")
                span.add_link(remote, {"why": "delta base"})
                span.add_link(SpanContext(0x1, 0x2, is_remote=False))
                span.set_status(Status(StatusCode.ERROR, "store write unavailable"))
            with lk.start_as_current_span("ok") as ok:
                ok.set_status(Status(StatusCode.OK))
        with lk.start_as_current_span("child of remote", context=trace.set_span_in_context(trace.NonRecordingSpan(remote))):
            pass
        for kind in SpanKind:
            with app.start_as_current_span(f"kind {kind.name}", kind=kind):
                pass

    spans = recorded(build, resource=Resource.create({"service.name": "voice-platform", "n": 1}))
    assert len(spans) == 9
    same_bytes(spans)
    # several resources in one batch (a provider replaced mid-process), in first-seen order
    others = recorded(lambda p: p.get_tracer("other").start_span("x").end(),
                      resource=Resource({"service.name": "other"}, schema_url="https://example.test/schema"))
    same_bytes([spans[0], *others, *spans[1:]])
    assert same_bytes([]) == b""


def test_dropped_counts_are_carried() -> None:
    def build(provider: TracerProvider) -> None:
        with provider.get_tracer("t").start_as_current_span("limited") as span:
            span.set_attributes({f"a{i}": i for i in range(5)})
            for i in range(4):
                span.add_event(f"e{i}", {f"x{j}": j for j in range(4)})

    (span,) = recorded(build, limits=SpanLimits(max_span_attributes=2, max_events=2, max_event_attributes=1))
    assert span.dropped_attributes == 3 and span.dropped_events == 2
    same_bytes([span])


def test_a_value_that_cannot_be_encoded_is_left_out_as_the_library_does(caplog: pytest.LogCaptureFixture) -> None:
    """SDK spans clean their attributes; a hand-built ReadableSpan need not."""
    context = SpanContext(0x1, 0x2, is_remote=False)
    span = ReadableSpan(
        name="hand-built", context=context, attributes=cast(Any, {"ok": 1, "bad": object(), "after": "kept"}),
        events=(Event("e", cast(Any, {"bad": object()}), timestamp=5),), start_time=1, end_time=2,
        resource=Resource({}), instrumentation_scope=InstrumentationScope("t"),
    )
    with caplog.at_level(logging.ERROR):
        same_bytes([span])
    assert any("Failed to encode key bad" in r.getMessage() and r.name == otlp_exporter.__name__ for r in caplog.records)


def test_a_span_without_a_scope_encodes_to_the_librarys_bytes() -> None:
    span = ReadableSpan(name="no scope", context=SpanContext(0x1, 0x2, is_remote=False), start_time=1, end_time=2,
                        resource=Resource({"service.name": "x"}), instrumentation_scope=None)
    same_bytes([span])


scalars = st.one_of(
    st.text(max_size=20), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False), st.binary(max_size=8),
)
values = st.one_of(
    scalars, st.lists(st.text(max_size=5), max_size=3).map(tuple), st.lists(st.integers(-5, 5), max_size=3).map(tuple),
    st.lists(st.floats(allow_nan=False), max_size=3).map(tuple), st.lists(st.booleans(), max_size=3).map(tuple),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attrs=st.lists(st.dictionaries(st.text(min_size=1, max_size=12), values, max_size=8), min_size=1, max_size=4),
    names=st.lists(st.text(max_size=10), min_size=1, max_size=4),
)
def test_generated_spans_encode_to_the_librarys_bytes(attrs: list[dict[str, Any]], names: list[str]) -> None:
    def build(provider: TracerProvider) -> None:
        tracers = [provider.get_tracer(n) for n in names]
        for i, a in enumerate(attrs):
            with tracers[i % len(tracers)].start_as_current_span(f"span {i}", attributes=a) as span:
                span.add_event("ev", a)

    same_bytes(recorded(build))


class Level(enum.IntEnum):
    HIGH = 3


class Text(str):
    pass


def hand_built(attributes: dict[Any, Any], *, name: str = "hand-built", resource: Resource | None = None,
               scope: InstrumentationScope | None = None, **fields: Any) -> ReadableSpan:
    """A ReadableSpan as a test or another SDK may build it: attributes the SDK would
    have cleaned or refused."""
    fields.setdefault("context", SpanContext(0x1, 0x2, is_remote=False))
    fields.setdefault("start_time", 1)
    fields.setdefault("end_time", 2)
    return ReadableSpan(name=name, attributes=cast(Any, attributes), resource=resource or Resource({}),
                        instrumentation_scope=scope or InstrumentationScope("t"), **fields)


EDGE_VALUES: dict[Any, Any] = {
    "neg": -7, "neg big": -(2**63), "max": 2**63 - 1, "min+1": -(2**63) + 1, "zero": 0, "false": False,
    "empty": "", "": "empty key", "naïve ✓ 🎙": "ключ ✓ 🎙", "long": "x" * 300, "longer": "ü" * 9000,
    "-0.0": -0.0, "0.0": 0.0, "inf": float("inf"), "-inf": float("-inf"), "nan": float("nan"), "tiny": 5e-324,
    "bytes": b"\x00\xff", "no bytes": b"", "none": None, "enum": Level.HIGH, "str subclass": Text("t"),
    "nested": [1, "a", None, [2, [3.5]], {"k": [True]}, b"b"], "kvlist": {"a": {"b": None}, 1: "int key", "": ()},
    "empty tuple": (), "mixed tuple": (1, True, 1.0), "str tuple": ("a", ""), "long tuple": tuple("abcdefghijklmnopqrstu"),
    "bytearray": bytearray(b"ab"),
}


def test_edge_values_encode_to_the_librarys_bytes() -> None:
    same_bytes([hand_built(EDGE_VALUES)])
    # The caches keep equal values of different types apart: 1 == True == 1.0, (1,) == (True,).
    same_bytes([hand_built({"x": v, "t": (v,)}) for v in (1, True, 1.0, "1", 0, False, 0.0, -0.0, None)])


def test_unencodable_values_and_keys_are_left_out_as_the_library_does(caplog: pytest.LogCaptureFixture) -> None:
    bad: dict[Any, Any] = {
        "first": 1, "too big": 2**63, "too small": -(2**63) - 1, "object": object(), "in a list": [1, object()],
        "in a dict": {"k": object()}, "surrogate": "\ud800", "\ud800": "surrogate key", 7: "int key",
        b"bytes key": "upb takes UTF-8 bytes for a string", b"\xff": "not UTF-8", "last": "kept",
    }
    span = hand_built(bad, events=(Event("e", cast(Any, bad), timestamp=5),),
                      links=(Link(SpanContext(0x3, 0x4, is_remote=True), cast(Any, bad)),))
    with caplog.at_level(logging.ERROR):
        encoded = ExportTraceServiceRequest.FromString(same_bytes([span]))
    keys = [kv.key for kv in encoded.resource_spans[0].scope_spans[0].spans[0].attributes]
    assert keys == ["first", "bytes key", "last"]
    failed = {r.getMessage().split(":")[0] for r in caplog.records if r.name == otlp_exporter.__name__}
    assert "Failed to encode key too big" in failed and "Failed to encode key 7" in failed


def test_span_fields_at_their_edges_encode_to_the_librarys_bytes() -> None:
    state = TraceState([("vendor", "a=b"), ("other", "x")])
    remote = SpanContext(2**128 - 1, 2**64 - 1, is_remote=True, trace_state=state)
    spans = [
        hand_built({}, name="", start_time=None, end_time=None, status=cast(Any, None)),
        hand_built({}, name="ö" * 200, start_time=0, end_time=5, kind=SpanKind.CONSUMER,
                   status=Status(StatusCode.ERROR, "")),
        hand_built({"a": 1}, name="remote parent", context=SpanContext(0x5, 0x6, is_remote=False, trace_state=state),
                   parent=remote, status=Status(StatusCode.ERROR, "ünïcode")),
        hand_built({}, name="local parent", parent=SpanContext(0x5, 0x7, is_remote=False), start_time=3, end_time=None,
                   events=(Event("", None, timestamp=0), Event("e", {"k": "v", "n": 1.5}, timestamp=2**64 - 1)),
                   links=(Link(remote, {"why": "base", "n": 2}), Link(SpanContext(0, 0, is_remote=False)))),
    ]
    same_bytes(spans)


def test_events_links_and_dropped_counts_with_their_attributes() -> None:
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")]))

    def build(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("t")
        with tracer.start_as_current_span("limited") as span:
            for _ in range(3):
                span.add_link(remote, {f"l{i}": i for i in range(300)})
            span.set_attributes({f"a{i}": float(i) for i in range(300)})
            for i in range(200):
                span.add_event(f"e{i % 3}", {f"x{j}": f"v{j}" for j in range(i % 5)})

    limits = SpanLimits(max_span_attributes=2, max_events=150, max_event_attributes=2, max_links=2,
                        max_link_attributes=3)
    (span,) = recorded(build, limits=limits)
    assert (span.dropped_attributes, span.dropped_events, span.dropped_links) == (298, 50, 1)
    assert span.links[0].dropped_attributes == 297
    same_bytes([span])


def test_caches_evicted_and_refilled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp_exporter, "_CACHE_SIZE", 3)
    monkeypatch.setattr(otlp_exporter, "_HEADER_CACHE_SIZE", 2)
    caches = otlp_exporter._span_attributes
    for cache in (caches.strs, caches.ints, caches.bools, caches.floats, caches.str_tuples, otlp_exporter._headers,
                  otlp_exporter._span_names):
        cache.clear()
    resources = [Resource({"service.name": f"r{i % 4}"}) for i in range(6)]
    scopes = [InstrumentationScope(f"s{i}", "1.0", None, {"k": i}) for i in range(5)]
    spans = [
        hand_built({"s": f"v{i % 7}", "i": i % 5, "b": i % 2 == 0, "f": i / 3, "t": (f"{i % 4}",)}, name=f"n{i % 6}",
                   resource=resources[i % 6], scope=scopes[i % 5], events=(Event(f"e{i % 5}", {"k": i % 4}, timestamp=i),))
        for i in range(40)
    ]
    same_bytes(spans)
    assert max(len(caches.strs), len(caches.ints), len(caches.bools), len(caches.floats), len(caches.str_tuples)) <= 3
    assert len(otlp_exporter._headers) <= 2 and len(otlp_exporter._span_names) <= 3


def test_resources_and_scopes_equal_but_distinct_group_as_the_librarys() -> None:
    """Two Resource objects with the same attributes are one resource in the library's
    dict, whichever order their attributes are in, and its spans keep their order."""
    first, equal, reordered = Resource({"a": 1, "b": 2}), Resource({"a": 1, "b": 2}), Resource({"b": 2, "a": 1})
    other = Resource({"a": 1}, schema_url="https://example.test/schema")
    scope, same_scope = InstrumentationScope("s", "1", "https://example.test/s"), InstrumentationScope("s", "1", "https://example.test/s")
    spans = [
        hand_built({}, name="1", resource=equal, scope=scope), hand_built({}, name="2", resource=other, scope=None),
        hand_built({}, name="3", resource=reordered, scope=same_scope), hand_built({}, name="4", resource=first, scope=None),
        hand_built({}, name="5", resource=equal, scope=InstrumentationScope("s")),
    ]
    spans[1]._instrumentation_scope = None
    spans[3]._instrumentation_scope = None
    same_bytes(spans)
    same_bytes(spans[::-1])


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64), st.floats(),
              st.text(max_size=20), st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=3).map(tuple),
                            st.dictionaries(st.one_of(st.text(max_size=5), st.integers(0, 9)), inner, max_size=3)),
    max_leaves=8,
)
pools = (
    [Resource({"service.name": "a"}), Resource({"service.name": "a"}), Resource({}, schema_url="u"), Resource({"n": 1})],
    [InstrumentationScope("a"), InstrumentationScope("a"), InstrumentationScope("b", "2", "u", {"x": (1, 2)}), None],
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spans=st.lists(st.tuples(
    st.dictionaries(st.text(max_size=8), json_values, max_size=6), st.text(max_size=10),
    st.integers(0, 3), st.integers(0, 3), st.booleans(), st.sampled_from(list(StatusCode)), st.none() | st.text(max_size=5),
), min_size=1, max_size=6))
def test_generated_hand_built_spans_encode_to_the_librarys_bytes(spans: list[tuple[Any, ...]]) -> None:
    built = []
    for attributes, name, resource, scope, remote, code, description in spans:
        span = hand_built(attributes, name=name, resource=pools[0][resource], kind=list(SpanKind)[scope],
                          parent=SpanContext(0x9, 0x8, is_remote=remote), status=Status(code, description),
                          events=(Event(name, attributes, timestamp=len(name)),),
                          links=(Link(SpanContext(0x9, 0x7, is_remote=not remote), attributes),))
        span._instrumentation_scope = pools[1][scope]
        built.append(span)
    same_bytes(built)
