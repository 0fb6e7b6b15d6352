"""OpenTelemetry traces, configured by the standard `OTEL_*` environment variables.

Off unless an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): with no provider set, every span below is
OpenTelemetry's no-op and costs a function call. On, one SDK `TracerProvider` serves the
whole process: LiveKit Agents' spans (session, LLM, STT, TTS, tools; the worker layer
hands it the provider), Litestar's request spans and ours. Exports run on the SDK's
batch thread, never on the event loop.

Every span of one call carries `session_id`, `agent_id` and `config_version`:
`call_started` puts them in a context variable that the tasks of the session inherit,
and `CallAttributes` stamps them on each span as it starts.
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Mapping

from opentelemetry import context as otel_context, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "voice-platform"
tracer = trace.get_tracer("app")
"""Resolves to the process's provider once `configure` sets it (a no-op until then)."""

_call: contextvars.ContextVar[Mapping[str, str | int] | None] = contextvars.ContextVar("call_attributes", default=None)
_provider: TracerProvider | None = None


class CallAttributes(SpanProcessor):
    """Stamps the current call's identity on every span started in its tasks."""

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        attributes = _call.get()
        if attributes:
            span.set_attributes(attributes)


def enabled_by(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _exporter(environ: Mapping[str, str]) -> SpanExporter:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    ).strip().lower()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol != "http/protobuf":
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: use http/protobuf or grpc")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()  # endpoint, headers, timeout, compression: from OTEL_* as the spec says


def configure(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Set the process's tracer provider from the environment; None when tracing is off.
    Idempotent: a second call returns the provider of the first."""
    global _provider
    environ = os.environ if environ is None else environ
    if _provider is not None or not enabled_by(environ):
        return _provider
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over our default name.
    try:
        exporter = _exporter(environ)
    except ValueError as e:  # a typo in the environment must not stop the service
        log.error("tracing off: %s", e)
        return None
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    resource = Resource.create({} if named else {SERVICE_NAME: DEFAULT_SERVICE_NAME})
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER(_ARG)
    provider.add_span_processor(CallAttributes())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info("tracing on: spans go to the OTLP endpoint of OTEL_EXPORTER_OTLP_*")
    return provider


def provider() -> TracerProvider | None:
    return _provider


def shutdown() -> None:
    """Export what is buffered and stop (blocking: call it in a thread)."""
    if _provider is not None:
        _provider.shutdown()


def call_started(session_id: str, agent_id: str, config_version: int) -> trace.Span:
    """Open the span of one call and make it the current span of the calling task (and
    of every task it starts from now on), with the call's identity for every span below.

    Parent: the current span if it is live (LiveKit's `job_entrypoint` in a worker job),
    else none: a new trace, so that several calls run one after another in one task
    (`chat`, the sim) are never nested in each other's traces.
    """
    attributes: dict[str, str | int] = {
        "session_id": session_id, "agent_id": agent_id, "config_version": config_version,
    }
    _call.set(attributes)
    current = trace.get_current_span()
    parent = None if current.is_recording() else otel_context.Context()
    span = tracer.start_span("call", context=parent, attributes=attributes)
    otel_context.attach(trace.set_span_in_context(span))
    return span


def record_span(
    name: str, start_ns: int, end_ns: int, attributes: Mapping[str, AttributeValue], *, error: str | None = None
) -> None:
    """Record a span for work that has already happened (its times given), under the
    current span: for work traced only when it turned out worth a look (slow, retried,
    failed), so the common fast case costs no span at all. `error`: a short, content-free
    description that marks the span failed."""
    span = tracer.start_span(name, start_time=start_ns, attributes=attributes)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end(end_time=end_ns)
