"""The livekit-agents adapter's chat-context skip (`app.adapters.livekit_agents`): an
`llm_node` span gets no chat-context JSON to build when its PII filter would drop it
anyway, and keeps it wherever anything may receive it (content allowed, LiveKit Cloud
attached, `input_delta` recording). What the model receives never changes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from livekit.agents.llm import ChatContext
from livekit.agents.telemetry import input_delta, traces
from opentelemetry.sdk.trace import TracerProvider

from app.adapters import livekit_agents


def conversation() -> ChatContext:
    ctx = ChatContext.empty()
    ctx.add_message(role="system", content="You are the support agent.")
    ctx.add_message(role="user", content="My order is AB1234567.")
    ctx.add_message(role="assistant", content="Thanks, looking it up.")
    return ctx


@pytest.fixture
def restore_livekit_tracer() -> Iterator[None]:
    before = traces.tracer._tracer_provider
    yield
    traces.tracer.set_provider(before)


def use_provider(*, allow_pii: bool) -> TracerProvider:
    """LiveKit's tracer on a provider of the test's own (undone by `restore_livekit_tracer`),
    with LiveKit's PII filter as `set_tracer_provider(..., allow_pii=...)` installs it."""
    provider = TracerProvider()
    traces._install_pii_redaction(provider, allow_pii=allow_pii)
    traces.tracer.set_provider(provider)
    return provider


def node_delta(provider: TracerProvider) -> tuple[input_delta.InputDelta, input_delta.InputDelta]:
    ctx = conversation()
    with provider.get_tracer("t").start_as_current_span("llm_node") as span:
        return input_delta.compute(input_delta.LLM_NODE, ctx, span), input_delta.InputDelta.full(ctx)


def test_the_adapter_wraps_what_livekit_calls() -> None:
    from livekit.agents.voice import generation

    assert livekit_agents.active()
    assert generation.input_delta is input_delta and hasattr(input_delta.compute, "__wrapped__")


@pytest.mark.usefixtures("restore_livekit_tracer")
def test_no_chat_context_to_serialize_when_the_filter_drops_it() -> None:
    provider = use_provider(allow_pii=False)
    assert livekit_agents.chat_context_dropped()
    delta, full = node_delta(provider)
    assert delta.chat_ctx.items == []
    assert delta.chat_ctx.to_dict(exclude_audio=True, exclude_image=True) == {"items": []}
    # the rest of the record (used for GenAI content, when allowed) is the full one
    assert delta.instructions == full.instructions and delta.conversation == full.conversation
    assert delta.base is None and delta.dropped_from_base is None


@pytest.mark.usefixtures("restore_livekit_tracer")
def test_the_chat_context_is_kept_when_content_is_allowed() -> None:
    provider = use_provider(allow_pii=True)
    assert not livekit_agents.chat_context_dropped()
    delta, full = node_delta(provider)
    assert [i.id for i in delta.chat_ctx.items] == [i.id for i in full.chat_ctx.items] and len(full.chat_ctx.items) == 3


@pytest.mark.usefixtures("restore_livekit_tracer")
def test_the_chat_context_is_kept_for_livekit_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = use_provider(allow_pii=False)
    monkeypatch.setattr(traces._cloud, "_trace_provider_attached", provider)  # Cloud gets unfiltered spans
    assert not livekit_agents.chat_context_dropped()
    delta, _ = node_delta(provider)
    assert len(delta.chat_ctx.items) == 3


@pytest.mark.usefixtures("restore_livekit_tracer")
def test_input_delta_recording_and_the_request_span_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = use_provider(allow_pii=False)
    token = input_delta.set_scope(input_delta.InputDeltaTracker().begin())
    try:
        delta, _ = node_delta(provider)
    finally:
        input_delta.reset_scope(token)
    assert len(delta.chat_ctx.items) == 3
    ctx = conversation()
    with provider.get_tracer("t").start_as_current_span("llm_request") as span:
        request = input_delta.compute(input_delta.LLM_REQUEST, ctx, span)
    assert request.chat_ctx is ctx


def test_no_provider_means_nothing_to_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.trace import ProxyTracerProvider

    monkeypatch.setattr(traces.tracer, "_tracer_provider", ProxyTracerProvider())
    assert not livekit_agents.chat_context_dropped()
