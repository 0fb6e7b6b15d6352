"""Cheaper span recording (`app.adapters.opentelemetry_sdk`, and the PII key test kept
per key in `app.adapters.livekit_agents`): what a span ends up holding is what the
library alone would give it, for any mix of writes, values, limits and a write after
the span ended; the PII filter answers as LiveKit's own function does."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from livekit.agents.telemetry import pii
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.adapters import install_adapters, livekit_agents, opentelemetry_sdk

KEYS = st.sampled_from(["a", "b", "c", "session_id", "lk.pii.text", "", "d"])
VALUES = st.one_of(
    st.text(max_size=12), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=False),
    st.booleans(), st.none(), st.binary(max_size=4), st.lists(st.text(max_size=3), max_size=3),
    st.tuples(st.integers(), st.text(max_size=2)), st.lists(st.one_of(st.none(), st.booleans()), max_size=2),
    st.lists(st.lists(st.integers(), max_size=1), max_size=2), st.just(object()),
)
WRITE = st.one_of(
    st.tuples(st.just("one"), KEYS, VALUES),
    st.tuples(st.just("many"), st.dictionaries(KEYS, VALUES, max_size=4)),
    st.tuples(st.just("end")),
)
LIMITS = st.sampled_from([SpanLimits(), SpanLimits(max_span_attributes=0), SpanLimits(max_span_attributes=3),
                          SpanLimits(max_span_attribute_length=4)])


def _record(limits: SpanLimits, writes: list[tuple[Any, ...]], fast: bool,
            caplog: pytest.LogCaptureFixture) -> tuple[list[tuple[str, Any]], int, list[str]]:
    one = opentelemetry_sdk.set_attribute if fast else opentelemetry_sdk._library_set_attribute
    many = opentelemetry_sdk.set_attributes if fast else opentelemetry_sdk._library_set_attributes
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    caplog.clear()
    span = provider.get_tracer("t").start_span("s", attributes={"b": "first"})
    assert isinstance(span, Span)
    ended = False
    for write in writes:
        if write[0] == "one":
            one(span, write[1], write[2])
        elif write[0] == "many":
            many(span, write[1])
        elif not ended:
            span.end()
            ended = True
    if not ended:
        span.end()
    (done,) = exporter.get_finished_spans()
    assert isinstance(done, ReadableSpan) and done.attributes is not None
    return list(done.attributes.items()), done.dropped_attributes, [r.getMessage() for r in caplog.records]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limits=LIMITS, writes=st.lists(WRITE, max_size=12))
def test_any_writes_leave_the_span_as_the_library_would(
    limits: SpanLimits, writes: list[tuple[Any, ...]], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        fast = _record(limits, writes, True, caplog)
        library = _record(limits, writes, False, caplog)
    assert fast == library  # attributes in the same order, same dropped count, same warnings


def test_installed_on_the_sdk_span() -> None:
    install_adapters()
    assert opentelemetry_sdk.active()
    assert Span.set_attribute is opentelemetry_sdk.set_attribute
    assert Span.set_attributes is opentelemetry_sdk.set_attributes


def test_a_rewritten_key_moves_to_the_end_and_a_full_map_drops_the_oldest() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("s")
    assert isinstance(span, Span)
    opentelemetry_sdk.set_attributes(span, {"a": 1, "b": 2})
    opentelemetry_sdk.set_attribute(span, "a", 3)
    opentelemetry_sdk.set_attribute(span, "c", 4)  # full: "b", now the oldest, goes
    span.end()
    (done,) = exporter.get_finished_spans()
    assert list((done.attributes or {}).items()) == [("a", 3), ("c", 4)] and done.dropped_attributes == 1


def test_the_pii_key_test_answers_as_livekits_own() -> None:
    install_adapters()
    assert livekit_agents.active()
    memo = pii.is_pii_attribute
    original = memo.__wrapped__  # type: ignore[attr-defined]
    keys = ["lk.pii.chat_ctx", "gen_ai.input.messages", "gen_ai.prompt.variable.name", "lk.pii", "session_id",
            "gen_ai.request.model", "lk.speech_id", "pii", "xpii.y", "gen_ai.tool.call.arguments", ""]
    for _ in range(2):  # the second round answers from the memo
        assert [memo(k) for k in keys] == [original(k) for k in keys]
    assert [memo(k) for k in keys[:5]] == [True, True, True, True, False]
    assert memo.cache_info().hits >= len(keys)  # type: ignore[attr-defined]
    assert pii.filter_attributes({"lk.pii.chat_ctx": "[...]", "session_id": "s1"}) == {"session_id": "s1"}
