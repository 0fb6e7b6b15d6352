"""opentelemetry-sdk: a span's scalar attribute written straight into its attribute map;
lean spans for a tracer whose processors are all known.

Written against opentelemetry-sdk 1.45.2: `Span.set_attribute` and `Span.set_attributes`
of `opentelemetry.sdk.trace`, which take the span's lock, then the attribute map's
(`BoundedAttributes._lock`), and run the value through `_clean_attribute_value`, for
every attribute. `install()` checks the installed version first and leaves both alone,
with one warning, when it differs. Lean spans also read opentelemetry-api 1.45.2 (released
with the SDK): `SpanContext` as the tuple it is, the runtime context's `ContextVar`
(`ContextVarsRuntimeContext._current_context`, used only when that is the runtime context
and the API's version matches) and `trace.propagation._SPAN_KEY`.

Why: LiveKit Agents writes dozens of attributes per traced turn (and `CallAttributes`
three per span) on the event loop that also serves live audio, and each write paid for
both locks and the check. For the common case, a `str`, `bool`, `int` or `float` value
(or a list or tuple of them) under a non-empty string key, on a live span, with no
attribute-length limit set and room in the map (or the key already in it), the checks
cannot change the outcome, so the value is stored as the library would store it (a
sequence as a tuple; a key written again moves to the end of the map, as the library's
delete-then-insert does). Every other case (`None`, bytes, nested or mixed values, an
ended span, a full map, a length limit) takes the library's own path, a mapping of
several attributes whole, so its warnings come in its order. The span's lock guards
against a concurrent `end()`; spans are written from the thread that runs them, and one
dictionary store is atomic under the GIL, so the worst a race with `end()` on another
thread can do is keep one attribute the library would have refused with a warning.

Lean spans (`LeanTracer`, for LiveKit's tracer, which starts several spans per turn): the
SDK's `Tracer.start_span` and `Span` build, per span, a bounded attribute map and event
and link lists with a lock each, a sampling result and a read-only copy at `end()` for
the processors. Where every processor of the provider is known, a `LeanSpan`
(an SDK `Span`, so `isinstance` checks and the SDK's other methods still hold) keeps
plain dicts and lists, starts through the same sampler, id generator and `on_start`s,
and at `end()` hands each batch processor an `EndedSpan`, to which its exporter
(`app.adapters.otlp_exporter`) applies the registered filters (LiveKit's PII filter:
`app.adapters.livekit_agents`) as it encodes the batch. Known means: processors whose
`on_end` does nothing, registered filters, then batch processors whose exporter takes
ended spans; anything else (another processor, LiveKit Cloud's exporter attaching, links
at start, a length limit, the SDK's own span metrics or a disabled tracer) and the
library's own span is started, or ended, instead. A lean span that outgrows plain maps
(a full map, a value the library must check or refuse) moves to the library's bounded
ones and its path from there on. A rewritten key moves to the end, as in the library. A lean tracer's
`start_as_current_span` is one object (`CurrentSpan`) instead of the library's two
generator context managers.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from random import getrandbits
from time import time_ns
from typing import Any, cast

from opentelemetry import context as context_api, trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace import Event, Span, SpanProcessor, SynchronousMultiSpanProcessor, Tracer
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, ParentBased, ParentBasedTraceIdRatio
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util import types

from app.adapters.pins import installed_version, matches

log = logging.getLogger(__name__)

DISTRIBUTION = "opentelemetry-sdk"
API_DISTRIBUTION = "opentelemetry-api"
WRITTEN_AGAINST = "1.45.2"
"""Of both: the API and the SDK are released together."""

_SCALARS = frozenset({str, bool, int, float})
_NOT_PLAIN = object()
_installed = False
_active = False
_library_set_attribute: Callable[[Span, str, types.AnyValue], None] = Span.set_attribute
_library_set_attributes: Callable[[Span, Mapping[str, types.AnyValue]], None] = Span.set_attributes


def _room(span: Span, keys: Iterable[Any]) -> dict[str, Any] | None:
    """The span's attribute map when these keys can be stored as the library would store
    them without its checks changing the outcome (module doc); else None."""
    if span._end_time is not None:
        return None
    bounded = cast(BoundedAttributes, span._attributes)  # a live span's: the SDK's bounded map
    if bounded.max_value_len is not None:
        return None
    attributes = bounded._dict
    new = 0
    for key in keys:
        if type(key) is not str or not key:
            return None
        new += key not in attributes
    if bounded.maxlen is not None and len(attributes) + new > bounded.maxlen:
        return None  # full: the library drops the oldest and counts it
    return attributes


def _plain(value: Any) -> Any:
    """`value` as the library stores it, when its checks cannot change it: a scalar as it
    is, a list or tuple of scalars as a tuple; else `_NOT_PLAIN`."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is tuple or kind is list:
        for item in value:
            if type(item) not in _SCALARS:
                return _NOT_PLAIN
        return tuple(value)
    return _NOT_PLAIN


def set_attribute(self: Span, key: str, value: types.AnyValue) -> None:
    plain = _plain(value)
    attributes = None if plain is _NOT_PLAIN else _room(self, (key,))
    if attributes is None:
        _library_set_attribute(self, key, value)
        return
    attributes.pop(key, None)  # a key written again moves to the end, as in the library
    attributes[key] = plain


def set_attributes(self: Span, attributes: Mapping[str, types.AnyValue]) -> None:
    plain = [(key, _plain(value)) for key, value in attributes.items()]
    stored = None if any(value is _NOT_PLAIN for _, value in plain) else _room(self, attributes.keys())
    if stored is None:
        _library_set_attributes(self, attributes)  # its warnings, in its order
        return
    for key, value in plain:
        stored.pop(key, None)
        stored[key] = value


# ------------------------------------------------------------------ lean spans

EndFilter = Callable[[Any, types.Attributes, Sequence[Event], Status], tuple[types.Attributes, Sequence[Event], Status] | None]
"""(processor, attributes, events, status) -> what the span exports instead, or None for
no change: what that processor's `on_end` does to the read-only copy it is given."""

_end_filters: dict[type, EndFilter] = {}
_batch_exporters: list[Callable[[object], bool]] = []
_lock = threading.Lock()
"""Guards a lean span's status and name as the span's own lock would (`_check_span_ended`);
one for all: what it guards is a field write, never nested."""


def register_end_filter(processor_type: type, end_filter: EndFilter) -> None:
    """Let lean spans run with a processor of exactly this type, applying `end_filter`
    where its `on_end` would run."""
    _end_filters[processor_type] = end_filter


def register_batch_exporter(accepts: Callable[[object], bool]) -> None:
    """Let lean spans run with a `BatchSpanProcessor` whose exporter `accepts`: one that
    exports `EndedSpan`s, which its batch processor then queues in place of the spans."""
    _batch_exporters.append(accepts)


class EndedSpan:
    """A lean span as it ended, queued by each batch processor in its place, with the
    fields the batch processor and an exporter's grouping read. What it exports is asked
    for on the export thread (`exported()`): the end filters run there, with the encoding,
    in a loop over the batch rather than on the call's event loop between its turns."""

    __slots__ = ("span", "context", "resource", "instrumentation_scope", "attributes", "events", "status", "filters")

    def __init__(self, span: LeanSpan, filters: tuple[tuple[EndFilter, SpanProcessor], ...]) -> None:
        self.span = span
        self.context = span._context
        self.resource = span._resource
        self.instrumentation_scope = span._instrumentation_scope
        # as they were at the end; an ended span refuses writes, and keeps these
        self.attributes: types.Attributes = span._attributes
        self.events: Sequence[Event] = span._events
        self.status: Status = span._status
        self.filters = filters

    def exported(self) -> tuple[types.Attributes, Sequence[Event], Status]:
        """The attributes, events and status to export: the span's, through the filters."""
        attributes, events, status = self.attributes, self.events, self.status
        for end_filter, processor in self.filters:
            changed = end_filter(processor, attributes, events, status)
            if changed is not None:
                attributes, events, status = changed
        return attributes, events, status


@dataclass(frozen=True, slots=True)
class _Plan:
    """What starting and ending a span means for one provider's processors, in order."""

    starts: tuple[SpanProcessor, ...]
    filters: tuple[tuple[EndFilter, SpanProcessor], ...]
    emits: tuple[Callable[[Any], None], ...]
    """Each batch processor's queue `emit`: `BatchSpanProcessor.on_end` less its sampled
    check, which a lean span makes as it ends."""


def _overrides(processor: SpanProcessor, name: str) -> bool:
    return getattr(type(processor), name) is not getattr(SpanProcessor, name)


def _make_plan(processors: tuple[SpanProcessor, ...]) -> _Plan | None:
    starts: list[SpanProcessor] = []
    filters: list[tuple[EndFilter, SpanProcessor]] = []
    emits: list[Callable[[Any], None]] = []
    for processor in processors:
        if type(processor) is BatchSpanProcessor:  # its on_start and _on_ending do nothing
            exporter = processor._batch_processor._exporter
            if not any(accepts(exporter) for accepts in _batch_exporters):
                return None
            emits.append(processor._batch_processor.emit)
            continue
        if _overrides(processor, "_on_ending"):
            return None
        if _overrides(processor, "on_start"):
            starts.append(processor)
        if (end_filter := _end_filters.get(type(processor))) is not None:
            if emits:
                return None  # a batch processor before a filter: the library's spans keep the library's order
            filters.append((end_filter, processor))
        elif _overrides(processor, "on_end"):
            return None
    return _Plan(tuple(starts), tuple(filters), tuple(emits))


def _plan(tracer: Tracer) -> _Plan | None:
    """The plan for this tracer's processors as they are now; None: the library's spans."""
    multi = tracer.span_processor
    if type(multi) is not SynchronousMultiSpanProcessor or type(tracer._tracer_metrics) is not NoOpTracerMetrics:
        return None
    processors = multi._span_processors
    cached: tuple[tuple[SpanProcessor, ...], _Plan | None] | None = getattr(multi, "_lean_plan", None)
    if cached is not None and cached[0] is processors:
        return cached[1]
    plan = _make_plan(processors)
    multi._lean_plan = (processors, plan)  # type: ignore[attr-defined]  # kept until the processors change
    return plan


def _defers_to_parent(sampler: object) -> bool:
    """A ParentBased sampler with the default delegates: a child is sampled iff its parent is."""
    return (
        (type(sampler) is ParentBased or type(sampler) is ParentBasedTraceIdRatio)
        and sampler._remote_parent_sampled is ALWAYS_ON
        and sampler._local_parent_sampled is ALWAYS_ON
        and sampler._remote_parent_not_sampled is ALWAYS_OFF
        and sampler._local_parent_not_sampled is ALWAYS_OFF
    )


_deferring: tuple[object, bool] = (None, False)
"""The last sampler asked about and `_defers_to_parent`'s answer (a provider's sampler is
set once, at its creation)."""


_FLAGS = {
    (sampled, random): TraceFlags((TraceFlags.SAMPLED if sampled else 0) | (TraceFlags.RANDOM_TRACE_ID if random else 0))
    for sampled in (False, True) for random in (False, True)
}
_UNSET = Status(StatusCode.UNSET)
_SAMPLED = int(TraceFlags.SAMPLED)
_RANDOM_TRACE_ID = int(TraceFlags.RANDOM_TRACE_ID)
_context_var: ContextVar[context_api.Context] | None = None
"""The API's current-context variable (`ContextVarsRuntimeContext`, the default runtime
context), read and set directly by lean spans once `install()` found it; else None and
they go through `opentelemetry.context`, whose functions reach the same variable through
a chain of calls (`attach` -> the runtime context -> the variable) several times a span."""


def _current_span(context: context_api.Context | None) -> trace_api.Span:
    """`trace_api.get_current_span(context)`."""
    if context is None:
        context = _context_var.get() if _context_var is not None else context_api.get_current()
    span = context.get(_SPAN_KEY)
    return span if isinstance(span, trace_api.Span) else trace_api.INVALID_SPAN


def _attach_span(span: trace_api.Span) -> Token[context_api.Context]:
    """`context_api.attach(trace_api.set_span_in_context(span))`."""
    if _context_var is None:
        return context_api.attach(trace_api.set_span_in_context(span))
    values = dict(_context_var.get())
    values[_SPAN_KEY] = span
    return _context_var.set(context_api.Context(values))


def _detach(token: Token[context_api.Context]) -> None:
    """`context_api.detach(token)`: a token that cannot be reset goes to the API, which
    logs the failure as it would have."""
    if _context_var is not None:
        try:
            _context_var.reset(token)
            return
        except Exception:  # logged by the API's own attempt below
            pass
    context_api.detach(token)


def _plain_map(attributes: types.Attributes, maxlen: int | None) -> dict[str, Any] | None:
    """`attributes` as the library would store them, when its checks cannot change them."""
    if not attributes:
        return {}
    if maxlen is not None and len(attributes) > maxlen:
        return None
    stored: dict[str, Any] = {}
    for key, value in attributes.items():
        if type(key) is not str or not key:
            return None
        if type(value) not in _SCALARS:
            value = _plain(value)
            if value is _NOT_PLAIN:
                return None
        stored[key] = value
    return stored


class LeanSpan(Span):
    """An SDK span on plain maps, ended through a `_Plan` (module doc)."""

    # what every lean span starts with, until it is written (no event list until an event)
    _trace_config = None
    _record_end_metrics = None
    _lock = _lock
    _status = _UNSET
    _end_time = None
    _events: tuple[()] | list[Event] | BoundedList[Event] = ()
    _links: tuple[()] | BoundedList[trace_api.Link] = ()

    def __init__(
        self, name: str, context: trace_api.SpanContext, parent: trace_api.SpanContext | None, tracer: Tracer,
        kind: SpanKind, attributes: types.Attributes, record_exception: bool, set_status_on_exception: bool,
    ) -> None:
        limits = tracer._span_limits
        self._name, self._context, self._parent, self._kind = name, context, parent, kind
        self._resource, self._instrumentation_scope = tracer.resource, tracer._instrumentation_scope
        self._instrumentation_info = tracer.instrumentation_info
        self._sampler, self._span_processor = tracer.sampler, tracer.span_processor
        self._record_exception, self._set_status_on_exception = record_exception, set_status_on_exception
        self._limits, self._tracer = limits, tracer
        stored = _plain_map(attributes, limits.max_span_attributes)
        self._attributes: dict[str, Any] | BoundedAttributes = (
            stored if stored is not None
            else BoundedAttributes(limits.max_span_attributes, attributes, immutable=False)
        )

    def _bounded_attributes(self) -> None:
        if type(self._attributes) is dict:
            self._attributes = BoundedAttributes(self._limits.max_span_attributes, self._attributes, immutable=False)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        attributes = self._attributes
        if type(attributes) is dict and self._end_time is None:
            plain = value if type(value) in _SCALARS else _plain(value)
            if plain is not _NOT_PLAIN and type(key) is str and key:
                if key in attributes:
                    del attributes[key]  # moves to the end, as in the library
                    attributes[key] = plain
                    return
                maxlen = self._limits.max_span_attributes
                if maxlen is None or len(attributes) < maxlen:
                    attributes[key] = plain
                    return
            self._bounded_attributes()
        super().set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        stored = self._attributes
        if type(stored) is dict and self._end_time is None:
            plain = _plain_map(attributes, None)
            maxlen = self._limits.max_span_attributes
            if plain is not None and (maxlen is None or len(stored) + len(plain.keys() - stored.keys()) <= maxlen):
                for key, value in plain.items():
                    stored.pop(key, None)
                    stored[key] = value
                return
            self._bounded_attributes()
        super().set_attributes(attributes)

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        events = self._events
        limits = self._limits
        if type(events) is not BoundedList and self._end_time is None and limits.max_attribute_length is None:
            stored = _plain_map(attributes, limits.max_event_attributes)
            if stored is not None and (limits.max_events is None or len(events) < limits.max_events):
                if not isinstance(events, list):
                    events = []
                    self._events = events
                events.append(Event(name, stored, timestamp))
                return
        if type(events) is not BoundedList:
            self._events = BoundedList.from_seq(limits.max_events, events)
        super().add_event(name, attributes, timestamp)

    def add_link(self, context: trace_api.SpanContext, attributes: types.Attributes = None) -> None:
        if type(self._links) is tuple:
            self._links = BoundedList(self._limits.max_links)
        super().add_link(context, attributes)

    def end(self, end_time: int | None = None) -> None:
        with _lock:
            if self._start_time is None:
                raise RuntimeError("Calling end() on a not started span.")
            if self._end_time is not None:
                already_ended = True
            else:
                already_ended = False
                self._end_time = end_time if end_time is not None else time_ns()
                if type(self._attributes) is BoundedAttributes:
                    self._attributes._immutable = True
        if already_ended:
            log.warning("Calling end() on an ended span.")
            return
        plan = _plan(self._tracer)
        if plan is None:  # the processors changed since the start: theirs, on the library's copy
            self._span_processor._on_ending(self)
            self._span_processor.on_end(self._readable_span())
            return
        if plan.emits and self._context[3] & _SAMPLED:  # type: ignore[index]  # SpanContext's trace_flags
            ended = EndedSpan(self, plan.filters)
            for emit in plan.emits:
                emit(ended)


class LeanTracer(trace_api.Tracer):
    """The SDK tracer `tracer`, starting `LeanSpan`s where its processors allow (module doc)."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        tracer = self.tracer
        enabled = tracer._tracer_config.is_enabled  # `Tracer._is_enabled()`
        plan = _plan(tracer) if not links and enabled and tracer._span_limits.max_span_attribute_length is None else None
        current = _current_span(context).get_span_context()
        if plan is None or not isinstance(current, trace_api.SpanContext):
            return tracer.start_span(name, context, kind, attributes, links, start_time, record_exception,
                                     set_status_on_exception)
        ids = tracer.id_generator
        # SpanContext is a tuple: (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid)
        parent_trace_id, _, _, parent_flags, parent_state, parent_valid = current
        parent: trace_api.SpanContext | None = current if parent_valid else None
        if parent is not None:
            trace_id = parent_trace_id
            random_id = bool(parent_flags & _RANDOM_TRACE_ID)
        else:
            trace_id = ids.generate_trace_id()
            random_id = ids.is_trace_id_random()
        global _deferring
        sampler = tracer.sampler
        deferring = _deferring  # one read: another thread may replace it
        if deferring[0] is not sampler:
            deferring = _deferring = (sampler, _defers_to_parent(sampler))
        trace_state: trace_api.TraceState | None
        if parent is not None and deferring[1]:
            sampled = bool(parent_flags & _SAMPLED)
            recording, trace_state = sampled, parent_state
            initial = attributes if sampled else None
        else:
            result = sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            recording = result.decision is not Decision.DROP
            initial, trace_state = result.attributes, result.trace_state
        span_id = getrandbits(64) if type(ids) is RandomIdGenerator else ids.generate_span_id()
        if not span_id:  # as RandomIdGenerator: never the invalid id
            span_id = ids.generate_span_id()
        span_context = trace_api.SpanContext(
            trace_id, span_id, is_remote=False, trace_flags=_FLAGS[(sampled, random_id)], trace_state=trace_state,
        )
        if not recording:
            return trace_api.NonRecordingSpan(context=span_context)
        span = LeanSpan(name, span_context, parent, tracer, kind, initial, record_exception, set_status_on_exception)
        span._start_time = start_time if start_time is not None else time_ns()
        for processor in plan.starts:
            processor.on_start(span, parent_context=context)
        return span

    def start_as_current_span(  # type: ignore[override]  # the API names its generator-based class
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> CurrentSpan:
        """The SDK tracer's `start_as_current_span` (see `CurrentSpan`)."""
        return CurrentSpan(self, name, context, kind, attributes, links, start_time, record_exception,
                           set_status_on_exception, end_on_exit)


class CurrentSpan:
    """`Tracer.start_as_current_span` for a `LeanTracer`: starts the span on entry and makes
    it current, and on exit restores the context, records an `Exception` as
    `trace_api.use_span` does and ends the span, in the library's order. The library runs
    this as two nested generator context managers per span (its own and `use_span`); this
    is one object. Like the library's, it can decorate a function or coroutine function
    (each call runs in a fresh copy) and is entered once."""

    __slots__ = ("tracer", "name", "context", "kind", "attributes", "links", "start_time", "record_exception",
                 "set_status_on_exception", "end_on_exit", "span", "_token")

    def __init__(
        self, tracer: trace_api.Tracer, name: str, context: context_api.Context | None, kind: SpanKind,
        attributes: types.Attributes, links: Sequence[trace_api.Link] | None, start_time: int | None,
        record_exception: bool, set_status_on_exception: bool, end_on_exit: bool,
    ) -> None:
        self.tracer, self.name, self.context, self.kind = tracer, name, context, kind
        self.attributes, self.links, self.start_time = attributes, links, start_time
        self.record_exception, self.set_status_on_exception = record_exception, set_status_on_exception
        self.end_on_exit = end_on_exit
        self.span: trace_api.Span | None = None

    def _start(self) -> trace_api.Span:
        return self.tracer.start_span(self.name, self.context, self.kind, self.attributes, self.links,
                                      self.start_time, self.record_exception, self.set_status_on_exception)

    def _failed(self, span: trace_api.Span, exc: Exception) -> None:
        """Runs while the span is still current, before the library's own recording."""

    def __enter__(self) -> trace_api.Span:
        if self.span is not None:
            raise RuntimeError(f"the context manager of span {self.name!r} was already entered")
        span = self.span = self._start()
        self._token = _attach_span(span)
        return span

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        span: trace_api.Span = self.span  # type: ignore[assignment]  # entered: started
        try:
            if isinstance(exc, Exception):
                self._failed(span, exc)
        finally:
            try:
                _detach(self._token)
                # as `use_span`: an Exception only (not GeneratorExit, CancelledError, ...)
                if isinstance(exc, Exception) and span.is_recording():
                    if self.record_exception:
                        span.record_exception(exc)
                    if self.set_status_on_exception:
                        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            finally:
                if self.end_on_exit:
                    span.end()

    def _recreate_cm(self) -> CurrentSpan:
        fresh = copy.copy(self)
        fresh.span = None
        return fresh

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._recreate_cm():
                    return await func(*args, **kwargs)

            return async_wrapper

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._recreate_cm():
                return func(*args, **kwargs)

        return wrapper


def lean(tracer: trace_api.Tracer) -> trace_api.Tracer:
    """`tracer` starting lean spans, when it is the SDK's and this adapter is active."""
    if _active and type(tracer) is Tracer:
        return LeanTracer(tracer)
    return tracer


def install() -> bool:
    """Put the fast attribute writes on the SDK's `Span` (idempotent)."""
    global _installed, _active
    if _installed:
        return _active
    _installed = True
    if not matches(DISTRIBUTION, WRITTEN_AGAINST, adapter=__name__):
        return False
    set_attribute.__wrapped__ = _library_set_attribute  # type: ignore[attr-defined]
    set_attributes.__wrapped__ = _library_set_attributes  # type: ignore[attr-defined]
    Span.set_attribute = set_attribute  # type: ignore[method-assign]
    Span.set_attributes = set_attributes  # type: ignore[method-assign]
    _active = True
    _find_context_var()
    return True


def _find_context_var() -> None:
    global _context_var
    runtime = context_api._RUNTIME_CONTEXT
    if type(runtime) is ContextVarsRuntimeContext and installed_version(API_DISTRIBUTION) == WRITTEN_AGAINST:
        _context_var = runtime._current_context


def active() -> bool:
    return _active
