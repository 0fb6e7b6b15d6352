"""Lean spans (`app.adapters.opentelemetry_sdk.LeanTracer`, LiveKit's tracer): what they
export, and what the live span reads, is what the SDK's own tracer gives for the same
calls, with the same processors (LiveKit's PII filter, our call attributes, the batch
processor), sampler, span limits and ids; where a processor is not known, the library's
own spans are started, or ended, instead."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from livekit.agents.telemetry import pii, traces
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._internal import trace_encoder
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    DEFAULT_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, StatusCode

from app.adapters import install_adapters, opentelemetry_sdk, otlp_exporter
from app.observability import tracing


class Capture(SpanExporter):
    """Keeps each batch as the OTLP request it encodes to: the library's encoder for the
    SDK's spans, ours (which the lean spans' batches need) for the others."""

    def __init__(self, library: bool) -> None:
        self.library = library
        self.requests: list[ExportTraceServiceRequest] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.library:
            encode = getattr(trace_encoder.encode_spans, "__wrapped__", trace_encoder.encode_spans)
            self.requests.append(encode(spans))
        else:
            self.requests.append(ExportTraceServiceRequest.FromString(otlp_exporter._encode(spans)))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class Sequential(IdGenerator):
    """The same ids in both runs, so that ratio samplers decide alike."""

    def __init__(self, random: bool) -> None:
        self.counter = itertools.count(1)
        self.random = random

    def generate_span_id(self) -> int:
        return next(self.counter)

    def generate_trace_id(self) -> int:
        return next(self.counter) * 0x9E3779B97F4A7C15_9E3779B97F4A7C15 % (1 << 128) or 1

    def is_trace_id_random(self) -> bool:
        return self.random


@pytest.fixture(autouse=True, scope="module")
def adapters() -> Iterator[None]:
    install_adapters()
    assert opentelemetry_sdk.active() and otlp_exporter.active()
    def accept(exporter: object) -> bool:
        return type(exporter) is Capture and not exporter.library

    opentelemetry_sdk._batch_exporters.append(accept)
    yield
    opentelemetry_sdk._batch_exporters.remove(accept)


def _provider(sampler: Sampler, limits: SpanLimits, allow_pii: bool, library: bool,
              random_ids: bool) -> tuple[TracerProvider, Capture]:
    provider = TracerProvider(sampler=sampler, span_limits=limits, id_generator=Sequential(random_ids))
    provider.add_span_processor(pii._PIIFilteringSpanProcessor(allow_pii=allow_pii))
    provider.add_span_processor(tracing.CallAttributes())
    capture = Capture(library)
    provider.add_span_processor(BatchSpanProcessor(capture))
    return provider, capture


KEYS = st.sampled_from(["a", "b", "lk.pii.text", "gen_ai.input.messages", "exception.message", "", "c"])
VALUES = st.one_of(
    st.text(max_size=6), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=False),
    st.booleans(), st.none(), st.lists(st.text(max_size=3), max_size=3), st.lists(st.integers(), max_size=2),
    st.lists(st.one_of(st.none(), st.booleans()), max_size=2), st.just({"nested": 1}),
)
ATTRIBUTES = st.one_of(st.none(), st.dictionaries(KEYS, VALUES, max_size=4))
EVENT_NAMES = st.sampled_from(["speech_scheduled", "gen_ai.user.message", "exception", "x"])
START = st.tuples(st.just("start"), st.sampled_from(["agent_turn", "llm_node", "llm_request"]), ATTRIBUTES)
OPS = st.tuples(START, st.lists(st.one_of(
    START, START,
    st.tuples(st.just("set"), KEYS, VALUES),
    st.tuples(st.just("set_many"), st.dictionaries(KEYS, VALUES, max_size=4)),
    st.tuples(st.just("event"), EVENT_NAMES, ATTRIBUTES),
    st.tuples(st.just("status"), st.sampled_from([StatusCode.OK, StatusCode.ERROR, StatusCode.UNSET]),
              st.one_of(st.none(), st.just("secret detail"))),
    st.tuples(st.just("exception")),
    st.tuples(st.just("rename"), st.sampled_from(["renamed", "llm_node"])),
    st.tuples(st.just("link")),
    st.tuples(st.just("end")),
    st.tuples(st.just("end_again")),
), min_size=2, max_size=30)).map(lambda first_rest: [first_rest[0], *first_rest[1]])
SAMPLERS = st.sampled_from([
    DEFAULT_ON, ParentBasedTraceIdRatio(0.5), TraceIdRatioBased(0.5), ALWAYS_OFF, StaticSampler(Decision.RECORD_ONLY),
    ParentBased(DEFAULT_ON, local_parent_sampled=StaticSampler(Decision.RECORD_ONLY)),
])
LIMITS = st.sampled_from([
    SpanLimits(), SpanLimits(max_span_attributes=2), SpanLimits(max_events=1, max_event_attributes=1),
    SpanLimits(max_attribute_length=3), SpanLimits(max_span_attribute_length=3), SpanLimits(max_links=0),
])


def _run(ops: list[tuple[Any, ...]], tracer: trace.Tracer, provider: TracerProvider,
         caplog: pytest.LogCaptureFixture) -> tuple[list[Any], list[str], list[tuple[type, bool]]]:
    caplog.clear()
    spans: list[trace.Span] = []
    started: list[tuple[type, bool]] = []  # each span's class, and whether it recorded when started
    stack: list[trace.Span] = []
    call = tracing._call.set({"session_id": "s1", "agent_id": "support", "config_version": 3})
    try:
        for op in ops:
            if op[0] == "start":
                parent = trace.set_span_in_context(stack[-1]) if stack else None
                span = tracer.start_span(op[1], context=parent, attributes=op[2])
                spans.append(span)
                started.append((type(span), span.is_recording()))
                stack.append(span)
                continue
            if not stack:
                continue
            top = stack[-1]
            if op[0] == "set":
                top.set_attribute(op[1], op[2])
            elif op[0] == "set_many":
                top.set_attributes(op[1])
            elif op[0] == "event":
                top.add_event(op[1], op[2], timestamp=1_000)
            elif op[0] == "status":
                top.set_status(op[1], op[2])
            elif op[0] == "exception":
                top.record_exception(ValueError("secret detail"), timestamp=2_000)
            elif op[0] == "rename":
                top.update_name(op[1])
            elif op[0] == "link":
                top.add_link(spans[0].get_span_context(), {"why": "first"})
            elif op[0] == "end":
                stack.pop().end(end_time=5_000)
            else:
                top.end(end_time=6_000)
        for span in reversed(stack):
            span.end(end_time=7_000)
    finally:
        tracing._call.reset(call)
    provider.force_flush()
    live = [(s.get_span_context(), s.is_recording(),
             list(s.attributes.items()) if isinstance(s, ReadableSpan) and s.attributes else None,
             [(e.name, dict(e.attributes or {})) for e in s.events] if isinstance(s, ReadableSpan) else None,
             (s.status.status_code, s.status.description) if isinstance(s, ReadableSpan) else None,
             s.name if isinstance(s, ReadableSpan) else None) for s in spans]
    return live, [r.getMessage() for r in caplog.records], started


def _exported(capture: Capture) -> list[Any]:
    """Every span exported, as the receiver decodes it, with what varies between runs
    (start times: the clock) cleared."""
    out = []
    for request in capture.requests:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    assert span.start_time_unix_nano > 0
                    span.start_time_unix_nano = 0
                    out.append((resource_spans.resource.SerializeToString(), scope_spans.scope.SerializeToString(),
                                span.SerializeToString()))
    return out


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, sampler=SAMPLERS, limits=LIMITS, allow_pii=st.booleans(), random_ids=st.booleans())
@example(ops=[("start", "agent_turn", {"a": [2**63]}), ("end_again",), ("start", "llm_node", None)], sampler=DEFAULT_ON,
         limits=SpanLimits(), allow_pii=False, random_ids=True)
@example(ops=[("start", "agent_turn", {"a": 1}), ("event", "x", None), ("event", "y", {"a": 1})], sampler=DEFAULT_ON,
         limits=SpanLimits(max_events=1, max_event_attributes=1), allow_pii=False, random_ids=True)
@example(ops=[("start", "agent_turn", {"a": 1, "b": 2}), ("set", "a", 3), ("set_many", {"b": 4, "c": 5}),
              ("start", "llm_node", {"lk.pii.text": "hi"}), ("status", StatusCode.ERROR, "secret detail")],
         sampler=ParentBased(DEFAULT_ON, local_parent_sampled=StaticSampler(Decision.RECORD_ONLY)),
         limits=SpanLimits(max_span_attributes=2), allow_pii=False, random_ids=False)
def test_lean_spans_export_and_read_what_the_sdk_does(
    ops: list[tuple[Any, ...]], sampler: Sampler, limits: SpanLimits, allow_pii: bool, random_ids: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    results = []
    for library in (True, False):
        provider, capture = _provider(sampler, limits, allow_pii, library, random_ids)
        sdk_tracer = provider.get_tracer("livekit-agents")
        tracer = sdk_tracer if library else opentelemetry_sdk.lean(sdk_tracer)
        assert isinstance(tracer, opentelemetry_sdk.LeanTracer) != library
        live, warnings, started = _run(ops, tracer, provider, caplog)
        results.append((live, warnings, _exported(capture), started))
        provider.shutdown()
    (live_sdk, warn_sdk, out_sdk, _), (live_lean, warn_lean, out_lean, started) = results
    assert out_lean == out_sdk
    assert live_lean == live_sdk
    # the same warnings, in the same order: the encoder's (a value it cannot write, e.g.
    # an int beyond int64 in a list) as the batch is sent, as the library's
    assert warn_lean == warn_sdk
    if limits.max_span_attribute_length is None:  # else the library's spans, by design
        # every span that recorded was a lean one (a span the sampler drops is the API's no-op)
        assert all(kind is opentelemetry_sdk.LeanSpan for kind, recording in started if recording)


def _livekit_provider(processors: Sequence[Any]) -> TracerProvider:
    provider = TracerProvider()
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def test_an_unknown_processor_gets_the_librarys_spans_and_every_span_that_ends_after_it_joins() -> None:
    capture = Capture(False)
    provider = _livekit_provider([BatchSpanProcessor(capture)])
    before = traces.tracer._tracer_provider
    traces.set_tracer_provider(provider, allow_pii=False)  # the PII filter first, as the worker does
    try:
        tracer = traces.tracer
        assert isinstance(tracer._tracer, opentelemetry_sdk.LeanTracer)
        early = tracer.start_span("early", attributes={"lk.pii.text": "hello", "a": 1})
        assert type(early) is opentelemetry_sdk.LeanSpan

        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))  # e.g. LiveKit Cloud's exporter attaching
        late = tracer.start_span("late")
        assert type(late) is not opentelemetry_sdk.LeanSpan
        late.end()
        early.end()
        provider.force_flush()
        assert [s.name for s in memory.get_finished_spans()] == ["late", "early"]
        # ended through the library's processors: the PII filter ran on its copy, the live span keeps it
        assert dict(memory.get_finished_spans()[1].attributes or {}) == {"a": 1}
        assert early.attributes == {"lk.pii.text": "hello", "a": 1}
        assert sorted(s.name for r in capture.requests for rs in r.resource_spans
                      for ss in rs.scope_spans for s in ss.spans) == ["early", "late"]
    finally:
        traces.tracer.set_provider(before)
        provider.shutdown()


def test_a_batch_processor_whose_exporter_takes_no_ended_spans_gets_the_librarys_spans() -> None:
    memory = InMemorySpanExporter()
    provider = _livekit_provider([BatchSpanProcessor(memory)])
    tracer = opentelemetry_sdk.lean(provider.get_tracer("livekit-agents"))
    span = tracer.start_span("s", attributes={"a": 1})
    assert type(span) is not opentelemetry_sdk.LeanSpan
    span.end()
    provider.force_flush()
    assert [(s.name, dict(s.attributes or {})) for s in memory.get_finished_spans()] == [("s", {"a": 1})]
    provider.shutdown()


def test_a_lean_span_is_context_for_the_librarys_and_ours() -> None:
    """Children in other tracers (ours, Litestar's) see a lean span as their parent."""
    capture = Capture(False)
    provider = _livekit_provider([BatchSpanProcessor(capture)])
    lean = opentelemetry_sdk.lean(provider.get_tracer("livekit-agents"))
    with lean.start_as_current_span("agent_turn") as turn:
        assert type(turn) is opentelemetry_sdk.LeanSpan
        child = provider.get_tracer("app").start_span("store.write")
        child.end()
        inner = lean.start_span("llm_node")
        inner.end()
    provider.force_flush()
    spans = {s.name: s for r in capture.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert spans["store.write"].parent_span_id == spans["agent_turn"].span_id
    assert spans["llm_node"].parent_span_id == spans["agent_turn"].span_id
    assert spans["llm_node"].trace_id == spans["agent_turn"].trace_id == spans["store.write"].trace_id
    provider.shutdown()


def test_a_link_given_at_the_start_gets_the_librarys_span() -> None:
    capture = Capture(False)
    provider = _livekit_provider([BatchSpanProcessor(capture)])
    lean = opentelemetry_sdk.lean(provider.get_tracer("livekit-agents"))
    first = lean.start_span("first")
    linked = lean.start_span("linked", links=[Link(first.get_span_context())])
    assert type(first) is opentelemetry_sdk.LeanSpan and type(linked) is not opentelemetry_sdk.LeanSpan
    linked.end()
    first.end()
    provider.force_flush()
    (request_spans,) = [[s for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
                        for r in capture.requests]
    assert [len(s.links) for s in request_spans] == [1, 0]
    provider.shutdown()


class Failing(SpanProcessor):
    """A known processor whose end filter fails."""


def test_a_span_that_cannot_be_filtered_is_logged_and_left_out_and_the_rest_of_its_batch_is_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(_processor: object, attributes: Any, *_: object) -> None:
        if attributes and attributes.get("fail"):
            raise ValueError("boom")

    opentelemetry_sdk.register_end_filter(Failing, broken)
    try:
        capture = Capture(False)
        provider = _livekit_provider([Failing(), BatchSpanProcessor(capture)])
        lean = opentelemetry_sdk.lean(provider.get_tracer("livekit-agents"))
        spans = [lean.start_span(name, attributes={"fail": name == "s"}) for name in ("before", "s", "after")]
        assert all(type(span) is opentelemetry_sdk.LeanSpan for span in spans)
        for span in spans:
            span.end()  # the filter runs on the export thread, never in the call's task
        assert not caplog.records
        with caplog.at_level(logging.ERROR, logger="app.adapters.otlp_exporter"):
            provider.force_flush()
        assert [r.getMessage() for r in caplog.records] == ["span 's' not exported"]
        assert [s.name for r in capture.requests for rs in r.resource_spans for ss in rs.scope_spans
                for s in ss.spans] == ["before", "after"]
        caplog.clear()
        lean.start_span("s", attributes={"fail": True}).end()
        with caplog.at_level(logging.ERROR, logger="app.adapters.otlp_exporter"):
            provider.force_flush()  # a batch of nothing but a failed span: nothing sent
        assert [r.getMessage() for r in caplog.records] == ["span 's' not exported"]
        assert len(capture.requests) == 2 and not capture.requests[1].resource_spans  # an empty request
        provider.shutdown()
    finally:
        del opentelemetry_sdk._end_filters[Failing]


# ------------------------------------------------- LiveKit's tracer calling a lean tracer directly


TRACER_FRAME = re.compile(
    r'  File "[^"]*/(livekit/agents/telemetry/traces|opentelemetry/trace/__init__|opentelemetry/sdk/trace/__init__)'
    r'\.py", line \d+, in \w+\n    yield span\n'
)


def _timeless(capture: Capture) -> list[bytes]:
    """Every exported span, with its start, end and event times cleared (the clock), and
    the tracers' own frames left out of a recorded stack trace: a direct call (`CurrentSpan`,
    `_direct_lean_calls`) has no generator frame for the exception to pass through."""
    out = []
    for request in capture.requests:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    span.start_time_unix_nano = span.end_time_unix_nano = 0
                    for event in span.events:
                        event.time_unix_nano = 0
                    for attribute in [*span.attributes, *(a for e in span.events for a in e.attributes)]:
                        if attribute.key == "exception.stacktrace":
                            value = attribute.value.string_value
                            attribute.value.string_value = TRACER_FRAME.sub("", value)
                    out.append(span.SerializeToString())
    return out


async def _livekit_calls(tracer: traces._DynamicTracer) -> list[type]:
    """What LiveKit Agents does with its tracer: spans made current, started, used; failing
    bodies (an Exception, a cancellation); decorated functions and coroutines. Returns the
    context managers' types."""
    kinds: list[type] = []
    turn_cm = tracer.start_as_current_span("agent_turn", attributes={"lk.speech_id": "s1"})
    kinds.append(type(turn_cm))
    with turn_cm as turn:
        turn.set_attribute("lk.interrupted", False)
        child = tracer.start_span("agent_speaking", attributes={"a": 1})
        with tracer.use_span(child, end_on_exit=True):
            tracer.start_span("inner").end()  # parented by the span in use
        with pytest.raises(ValueError), tracer.start_as_current_span("fails"):
            raise ValueError("secret detail")
        with pytest.raises(ValueError), tracer.start_as_current_span(
            "quiet", record_exception=False, set_status_on_exception=False
        ):
            raise ValueError("not recorded")
        with pytest.raises(asyncio.CancelledError), tracer.start_as_current_span("cancelled"):
            raise asyncio.CancelledError
        with pytest.raises(KeyError), tracer.use_span(tracer.start_span("used"), end_on_exit=True):
            raise KeyError("k")
        with tracer.start_as_current_span("kept_open", end_on_exit=False) as kept:
            pass
        assert kept.is_recording()
        kept.end()

        @tracer.start_as_current_span("sync_node", attributes={"n": 1})
        def sync_node(x: int) -> int:
            return x * 2

        @tracer.start_as_current_span("async_node")
        async def async_node() -> str:
            await asyncio.sleep(0)
            current: Any = trace.get_current_span()
            return str(current.name)

        assert sync_node(2) == 4 and sync_node(3) == 6
        assert await async_node() == "async_node"
        assert trace.get_current_span() is turn
    assert trace.get_current_span() is trace.INVALID_SPAN
    with pytest.raises(TypeError), tracer.start_as_current_span("x", nonsense=1):  # LiveKit's: as it is entered
        pass
    with pytest.raises(TypeError):
        tracer.start_span()
    return kinds


@pytest.mark.parametrize("allow_pii", [False, True])
async def test_livekits_tracer_around_a_lean_tracer_exports_what_its_own_calls_would(
    allow_pii: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_DynamicTracer`'s methods around a lean tracer (`livekit_agents._direct_lean_calls`)
    against LiveKit's own: the same spans, attributes (the room sid as the conversation id,
    first), parents, statuses and exception events, and the same errors for bad arguments."""
    from livekit.agents.testing import fake_job_context

    from app.adapters import livekit_agents

    exported: list[list[bytes]] = []
    for direct in (False, True):
        if not direct:
            for name in ("start_as_current_span", "start_span", "use_span"):
                monkeypatch.setattr(traces._DynamicTracer, name, getattr(traces._DynamicTracer, name).__wrapped__)
        capture = Capture(False)
        provider = TracerProvider(id_generator=Sequential(True))
        provider.add_span_processor(pii._PIIFilteringSpanProcessor(allow_pii=allow_pii))
        provider.add_span_processor(tracing.CallAttributes())
        provider.add_span_processor(BatchSpanProcessor(capture))
        tracer = traces._DynamicTracer("livekit-agents")
        tracer.set_provider(provider)
        assert isinstance(tracer._tracer, opentelemetry_sdk.LeanTracer)
        call = tracing._call.set({"session_id": "s1", "agent_id": "support", "config_version": 3})
        try:
            with fake_job_context(job_metadata="{}") as ctx:
                ctx.job.room.sid = "RM_both_runs"
                kinds = await _livekit_calls(tracer)
        finally:
            tracing._call.reset(call)
        assert (kinds == [livekit_agents._LiveKitCurrentSpan]) is direct
        provider.force_flush()
        exported.append(_timeless(capture))
        provider.shutdown()
        monkeypatch.undo()
    livekit, ours = exported
    assert len(ours) == 11
    assert ours == livekit
    decoded = {s.name: s for s in (_span_message(b) for b in ours)}
    assert decoded["agent_turn"].attributes[0].key == "gen_ai.conversation.id"
    assert decoded["fails"].status.code == StatusCode.ERROR.value
    assert decoded["quiet"].status.code == StatusCode.UNSET.value and not decoded["quiet"].events
    assert decoded["inner"].parent_span_id == decoded["agent_speaking"].span_id


def _span_message(data: bytes) -> Any:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage

    return SpanMessage.FromString(data)


async def test_lean_start_as_current_span_records_what_the_sdks_does() -> None:
    """`LeanTracer.start_as_current_span` (one object, `CurrentSpan`) against the SDK
    tracer's (two generator context managers): exceptions recorded and statuses set as
    `use_span` does, decorators, a span kept open."""

    async def calls(tracer: trace.Tracer) -> None:
        with tracer.start_as_current_span("outer", attributes={"a": 1}):
            with pytest.raises(ValueError), tracer.start_as_current_span("fails"):
                raise ValueError("boom")
            with pytest.raises(ValueError), tracer.start_as_current_span("quiet", record_exception=False):
                raise ValueError("status only")
            with pytest.raises(asyncio.CancelledError), tracer.start_as_current_span("cancelled"):
                raise asyncio.CancelledError
            with tracer.start_as_current_span("open", end_on_exit=False) as kept:
                pass
            kept.end()

            @tracer.start_as_current_span("decorated")
            async def decorated() -> None:
                await asyncio.sleep(0)

            await decorated()
            await decorated()
        cm = tracer.start_as_current_span("once")
        with cm:
            pass
        if isinstance(cm, opentelemetry_sdk.CurrentSpan):
            with pytest.raises(RuntimeError, match="already entered"), cm:
                pass
        assert trace.get_current_span() is trace.INVALID_SPAN

    exported = []
    for lean in (False, True):
        capture = Capture(False)
        provider = TracerProvider(id_generator=Sequential(True))
        provider.add_span_processor(BatchSpanProcessor(capture))
        sdk_tracer = provider.get_tracer("livekit-agents")
        tracer = opentelemetry_sdk.lean(sdk_tracer) if lean else sdk_tracer
        assert isinstance(tracer, opentelemetry_sdk.LeanTracer) is lean
        await calls(tracer)
        provider.force_flush()
        exported.append(_timeless(capture))
        provider.shutdown()
    assert len(exported[1]) == 8
    assert exported[1] == exported[0]


def test_livekits_functions_decorated_at_import_start_direct_spans_around_a_lean_tracer() -> None:
    """`llm_node`, `tts_node` and the agent hand-off were decorated before the adapter was
    installed: each call's context manager is `_LiveKitCurrentSpan` around a lean tracer,
    LiveKit's own around any other."""
    from opentelemetry.util._decorator import _AgnosticContextManager

    from app.adapters import livekit_agents

    templates = []
    for decorated in livekit_agents._decorated_at_import():
        function: Any = decorated
        while function is not None:
            templates += [c.cell_contents for c in function.__closure__ or ()
                          if isinstance(c.cell_contents, _AgnosticContextManager)]
            function = getattr(function, "__wrapped__", None)
    assert [t.args[1] for t in templates] == ["llm_node", "tts_node", "drain_agent_activity"]
    before = traces.tracer._tracer_provider
    provider = _livekit_provider([BatchSpanProcessor(Capture(False))])
    try:
        traces.tracer.set_provider(provider)
        recreated: list[Any] = [t._recreate_cm() for t in templates]
        assert all(type(cm) is livekit_agents._LiveKitCurrentSpan for cm in recreated)
        traces.tracer.set_provider(trace.NoOpTracerProvider())
        recreated = [t._recreate_cm() for t in templates]
        assert all(type(cm) is _AgnosticContextManager for cm in recreated)
    finally:
        traces.tracer.set_provider(before)
        provider.shutdown()


def test_a_function_without_livekits_decorator_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    from app.adapters import livekit_agents

    def plain() -> None:
        pass

    with caplog.at_level(logging.WARNING, logger="app.adapters.livekit_agents"):
        livekit_agents._direct_decorated(plain, object())
    assert any("no LiveKit tracer decorator found" in r.getMessage() for r in caplog.records)


async def test_the_conversation_id_is_livekits() -> None:
    from livekit.agents.testing import fake_job_context

    from app.adapters import livekit_agents

    cases: list[dict[str, Any] | None] = [None, {}, {"a": 1}, {"gen_ai.conversation.id": "mine", "b": 2}]
    for attributes in cases:
        assert livekit_agents._with_conversation_id(attributes) == traces._with_conversation_id(attributes)
        with fake_job_context(job_metadata="{}") as ctx:
            for _ in range(2):  # the second one from the job context
                ours = livekit_agents._with_conversation_id(attributes)
                assert ours == traces._with_conversation_id(attributes)
                assert list(ours or {}) == list(traces._with_conversation_id(attributes) or {})
            assert ours and ours["gen_ai.conversation.id"] == (attributes or {}).get("gen_ai.conversation.id",
                                                                                  ctx.job.room.sid)


def test_a_context_that_cannot_be_restored_is_logged_as_the_api_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    """A lean span made current in one context and left in another (a context manager
    entered in one task and exited in another): the API's own error, for both tracers."""
    import contextvars

    provider = _livekit_provider([BatchSpanProcessor(Capture(False))])
    messages = []

    def moved(tracer: trace.Tracer) -> None:
        cm = tracer.start_as_current_span("moved")
        span = cm.__enter__()
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="opentelemetry.context"):
            contextvars.copy_context().run(cm.__exit__, None, None, None)
        messages.append([r.getMessage() for r in caplog.records])
        assert trace.get_current_span() is span  # this context keeps it
        assert not span.is_recording()  # ended all the same

    for lean in (False, True):
        sdk_tracer = provider.get_tracer("livekit-agents")
        contextvars.copy_context().run(moved, opentelemetry_sdk.lean(sdk_tracer) if lean else sdk_tracer)
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert messages[0] == messages[1] == ["Failed to detach context"]
    provider.shutdown()


def test_the_direct_calls_take_the_librarys_parameters_and_defaults() -> None:
    """The direct calls skip `Signature.bind`, so their own parameters must be the library's:
    names, order, kinds and defaults (a default of their own would change what a call that
    leaves it out records)."""
    import inspect

    from opentelemetry.sdk.trace import Tracer

    from app.adapters import livekit_agents

    def parameters(function: Any, skip: int) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in list(inspect.signature(function).parameters.values())[skip:]]

    pairs = [
        (livekit_agents._lean_start_span, 1, Tracer.start_span, 1),
        (livekit_agents._lean_current_span, 1, Tracer.start_as_current_span, 1),
        (livekit_agents._lean_used_span, 0, trace.use_span, 0),
        (opentelemetry_sdk.LeanTracer.start_span, 1, Tracer.start_span, 1),
        (opentelemetry_sdk.LeanTracer.start_as_current_span, 1, Tracer.start_as_current_span, 1),
    ]
    for ours, ours_skip, library, library_skip in pairs:
        assert parameters(ours, ours_skip) == parameters(library, library_skip), ours.__qualname__
