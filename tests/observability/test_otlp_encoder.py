"""The OTLP span encoder adapter (`app.adapters.otlp_exporter`): the bytes it produces
are the library's own, byte for byte, on spans of every shape (attribute types, events,
links, status, remote parents, trace state, several resources and scopes, dropped
counts, values that cannot be encoded); the exporters use it once installed. The
end-to-end tests in test_tracing.py decode its output in a real OTLP receiver."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans as library_encode
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from app.adapters import otlp_exporter


def same_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    ours = otlp_exporter.encode_spans(spans).SerializePartialToString()
    assert ours == library_encode(spans).SerializePartialToString()
    return ours


def recorded(build: Any, *, resource: Resource | None = None, limits: SpanLimits | None = None) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource, span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    build(provider)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def test_installed_in_the_exporters() -> None:
    from opentelemetry.exporter.otlp.proto.common import trace_encoder
    from opentelemetry.exporter.otlp.proto.http import trace_exporter

    assert otlp_exporter.active()
    assert trace_exporter.encode_spans is otlp_exporter.encode_spans
    assert trace_encoder.encode_spans is otlp_exporter.encode_spans  # what a later-imported gRPC exporter takes


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
        name="hand-built", context=context, attributes={"ok": 1, "bad": object(), "after": "kept"},
        events=(Event("e", {"bad": object()}, timestamp=5),), start_time=1, end_time=2,
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
