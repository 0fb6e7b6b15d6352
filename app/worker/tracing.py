"""Hands the process's tracer provider (app/observability/tracing.py) to LiveKit Agents,
so its session, LLM, STT, TTS and tool spans join ours in one trace per call.

Conversation content (messages, tool arguments and results) stays out of the spans
unless `TRACE_CONTENT=true`: LiveKit does not record it, and its in-process filter
would remove it before export.
"""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider

from app.observability import tracing
from app.settings import Settings

_installed: set[int] = set()


def start_tracing(settings: Settings) -> TracerProvider | None:
    """Configure tracing from `OTEL_*` (off when no endpoint is set) for this process and
    LiveKit; safe to call more than once (the supervisor, each job process, `chat`)."""
    provider = tracing.configure()
    if provider is not None and id(provider) not in _installed:
        from livekit.agents.telemetry import gen_ai, set_tracer_provider

        # Off: LiveKit does not even build the content attributes (the whole chat context
        # as JSON on every model request); the PII filter is the second line.
        gen_ai.set_capture_content(settings.trace_content)
        set_tracer_provider(provider, allow_pii=settings.trace_content)
        _installed.add(id(provider))
    return provider
