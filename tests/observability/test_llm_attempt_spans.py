"""An LLM request's attempts around a lean tracer (`livekit_agents._attempt_spans_on_failure`):
a first attempt that succeeds gets no span of its own, its attributes go on the request's
span; one that fails gets the span LiveKit's own code would have made, and so does every
retry. LiveKit's real `LLMStream` runs the request, with its retries, against an LLM that
fails a given number of times."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from livekit.agents import APIConnectionError, APIConnectOptions, llm
from livekit.agents.llm import ChatChunk, ChatContext, ChoiceDelta
from livekit.agents.telemetry import pii, traces
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import StatusCode

from app.adapters import livekit_agents
from app.observability import tracing
from tests.observability.test_lean_spans import (  # noqa: F401  # adapters: the same autouse fixture
    Capture,
    Sequential,
    _span_message,
    _timeless,
    adapters,
)


class FlakyLLM(llm.LLM):
    """Fails its first `failures` requests with a retryable error, then answers."""

    def __init__(self, failures: int, hang: bool = False) -> None:
        super().__init__()
        self.failures = failures
        self.hang = hang
        self.calls = 0

    @property
    def model(self) -> str:
        return "flaky-1"

    @property
    def provider(self) -> str:
        return "flaky"

    def chat(self, *, chat_ctx: ChatContext, tools: list[Any] | None = None,
             conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS, **_: Any) -> llm.LLMStream:
        return FlakyStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class FlakyStream(llm.LLMStream):
    _llm: FlakyLLM

    async def _run(self) -> None:
        self._llm.calls += 1
        if self._llm.calls <= self._llm.failures:
            raise APIConnectionError(f"attempt {self._llm.calls} refused")
        self._event_ch.send_nowait(ChatChunk(id=f"req-{self._llm.calls}",
                                             delta=ChoiceDelta(role="assistant", content="hello")))
        for _ in range(3):  # as a provider's stream would, the metrics monitor reads the chunk meanwhile
            await asyncio.sleep(0)
        if self._llm.hang:
            await asyncio.Event().wait()


async def _request(failures: int, max_retry: int, allow_pii: bool, cancel: bool = False) -> tuple[list[bytes], str]:
    capture = Capture(False)
    provider = TracerProvider(id_generator=Sequential(True))
    provider.add_span_processor(tracing.CallAttributes())
    provider.add_span_processor(BatchSpanProcessor(capture))
    before = traces.tracer._tracer_provider
    traces.set_tracer_provider(provider, allow_pii=allow_pii)
    outcome = "answered"
    try:
        flaky = FlakyLLM(failures, hang=cancel)
        flaky.on("error", lambda _: None)  # LiveKit emits each attempt's error
        stream = flaky.chat(chat_ctx=ChatContext.empty(),
                            conn_options=APIConnectOptions(max_retry=max_retry, retry_interval=0))
        try:
            async with stream:
                async for _ in stream:
                    if cancel:
                        break
        except APIConnectionError:
            outcome = "failed"
    finally:
        traces.tracer.set_provider(before)
        provider.force_flush()
        provider.shutdown()
    return _timeless(capture), outcome


async def _both(monkeypatch: pytest.MonkeyPatch, failures: int, max_retry: int, allow_pii: bool,
                cancel: bool = False) -> tuple[list[Any], list[Any], str]:
    ours, outcome = await _request(failures, max_retry, allow_pii, cancel)
    monkeypatch.setattr(llm.LLMStream, "_attempt_span", llm.LLMStream._attempt_span._app_original)  # type: ignore[attr-defined]
    livekit, livekit_outcome = await _request(failures, max_retry, allow_pii, cancel)
    monkeypatch.undo()
    assert outcome == livekit_outcome
    return [_span_message(b) for b in livekit], [_span_message(b) for b in ours], outcome


def _by_name(spans: list[Any]) -> dict[str, list[Any]]:
    named: dict[str, list[Any]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


CLOCK_READ = {"gen_ai.response.time_to_first_chunk", "langfuse.observation.completion_start_time", "lk.llm_metrics"}
"""Attributes of the request's span that the clock, not the tracer, decides."""


def _attributes(span: Any) -> dict[str, Any]:
    return {a.key: a.value for a in span.attributes}


ATTEMPT_FRAME = re.compile(r'  File "[^"]*/livekit/agents/llm/llm\.py", line \d+, in _attempt_span\n    yield span\n')
"""The frame LiveKit's stack trace of a failed attempt starts with, the generator that held
it; the adapter's first attempt is no generator."""


def _clockless(span: Any) -> bytes:
    """The span's bytes, without what the clock decides, and LiveKit's `_attempt_span`
    frame left out of a recorded stack trace."""
    for attribute in [*span.attributes, *(a for event in span.events for a in event.attributes)]:
        if attribute.key in CLOCK_READ:
            attribute.value.Clear()
        if attribute.key == "exception.stacktrace":
            attribute.value.string_value = ATTEMPT_FRAME.sub("", attribute.value.string_value)
    return bytes(span.SerializeToString())


def _timeless_attributes(span: Any) -> list[tuple[str, bytes]]:
    return [(a.key, b"" if a.key in CLOCK_READ else a.value.SerializeToString()) for a in span.attributes]


async def test_a_first_attempt_that_succeeds_puts_its_attributes_on_the_requests_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    livekit, ours, outcome = await _both(monkeypatch, failures=0, max_retry=3, allow_pii=False)
    assert outcome == "answered"
    assert [s.name for s in livekit] == ["llm_request_run", "llm_request"]
    assert [s.name for s in ours] == ["llm_request"]
    run, request = livekit
    [merged] = ours
    # the request's span is LiveKit's, with the attempt's own attributes added, in order
    added = [(k, v) for k, v in _timeless_attributes(run) if k not in _attributes(request)]
    assert [k for k, _ in added] == ["lk.retry_count", "lk.provider_request_ids"]
    assert sorted(_timeless_attributes(merged)) == sorted(_timeless_attributes(request) + added)
    assert _attributes(merged)["lk.retry_count"].int_value == 0
    assert [v.string_value for v in _attributes(merged)["lk.provider_request_ids"].array_value.values] == ["req-1"]
    assert merged.status == request.status and merged.parent_span_id == request.parent_span_id


@pytest.mark.parametrize("allow_pii", [False, True])
@pytest.mark.parametrize(("failures", "max_retry", "expected"), [(1, 3, "answered"), (2, 2, "answered"),
                                                                 (3, 2, "failed"), (1, 0, "failed")])
async def test_a_failed_first_attempt_gets_the_span_livekit_would_have_made(
    monkeypatch: pytest.MonkeyPatch, failures: int, max_retry: int, expected: str, allow_pii: bool,
) -> None:
    """The same spans, bytes for bytes but the clock: names, ids, parents, attributes,
    exception events (with the stack trace when PII may be exported) and statuses."""
    livekit, ours, outcome = await _both(monkeypatch, failures, max_retry, allow_pii)
    assert outcome == expected
    assert [_clockless(s) for s in ours] == [_clockless(s) for s in livekit]
    runs = _by_name(ours)["llm_request_run"]
    assert len(runs) == min(failures + 1, max_retry + 1)  # every attempt made
    first = runs[0]
    assert first.status.code == StatusCode.ERROR.value
    assert [e.name for e in first.events] == ["exception"]
    assert _attributes(first)["lk.retry_count"].int_value == 0
    [request] = _by_name(ours)["llm_request"]
    assert all(run.parent_span_id == request.span_id for run in runs)


async def test_a_cancelled_first_attempt_gets_no_span_and_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    livekit, ours, outcome = await _both(monkeypatch, failures=0, max_retry=3, allow_pii=False, cancel=True)
    assert [s.name for s in livekit] == ["llm_request_run", "llm_request"]
    assert livekit[0].status.code == StatusCode.UNSET.value and not livekit[0].events
    [request] = ours
    assert request.status.code == StatusCode.UNSET.value
    assert _attributes(request)["lk.retry_count"].int_value == 0


async def test_a_stream_without_attempt_spans_and_a_library_tracer_keep_livekits_path(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A stream class whose attempts run in the request's span (LiveKit's FallbackAdapter)
    and a tracer that is not lean take LiveKit's own `_attempt_span`."""
    monkeypatch.setattr(FlakyStream, "_llm_attempt_span_name", None)
    spans, _ = await _request(failures=1, max_retry=1, allow_pii=False)
    assert [_span_message(b).name for b in spans] == ["llm_request"]
    assert "first attempt was not recorded" not in caplog.text  # it never took the first-attempt path
    monkeypatch.undo()

    capture = Capture(True)
    provider = TracerProvider()
    provider.add_span_processor(pii._PIIFilteringSpanProcessor(allow_pii=False))
    provider.add_span_processor(BatchSpanProcessor(capture))  # not an exporter lean spans go to
    before = traces.tracer._tracer_provider
    traces.tracer.set_provider(provider)
    monkeypatch.setattr(traces.tracer, "_tracer", provider.get_tracer("livekit-agents"))
    try:
        stream = FlakyLLM(0).chat(chat_ctx=ChatContext.empty())
        async with stream:
            async for _ in stream:
                pass
    finally:
        monkeypatch.undo()
        traces.tracer.set_provider(before)
        provider.force_flush()
        provider.shutdown()
    assert sorted(s.name for r in capture.requests for rs in r.resource_spans for ss in rs.scope_spans
                  for s in ss.spans) == ["llm_request", "llm_request_run"]


async def test_a_failure_to_record_the_attempt_is_logged_and_the_retry_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("exporter bug")

    monkeypatch.setattr(livekit_agents._FirstAttempt, "failed", broken)
    spans, outcome = await _request(failures=1, max_retry=2, allow_pii=False)
    assert outcome == "answered"
    assert [_span_message(b).name for b in spans] == ["llm_request_run", "llm_request"]  # the retry's
    assert "an LLM request's first attempt was not recorded" in caplog.text
