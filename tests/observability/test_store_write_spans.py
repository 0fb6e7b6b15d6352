"""`store.session_write` spans: a session-record write batch is traced when it is slow,
retried or failed, never when it went fine and fast (every batch is timed by the
`store_session_write_seconds` histogram instead). Real SQLite store; the spans go to the
SDK's in-memory exporter through a provider of the test's own, with the call's attributes
stamped as in production."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from app.domain import SessionRecord
from app.observability import tracing
from app.store.base import UpdateSession
from app.worker.sessions import SessionManager
from tests.worker.recording_store import RecordingStore, recording_store


@pytest.fixture
async def store(tmp_path: Any) -> Any:
    async with recording_store(tmp_path) as s:
        yield s


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(tracing.CallAttributes())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "tracer", provider.get_tracer("app"))
    yield exporter
    provider.shutdown()


def writes(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == "store.session_write"]


async def run_call(store: RecordingStore, body: Callable[[SessionManager], Any], **kwargs: Any) -> ReadableSpan:
    """A session under its `call` span, as `session_start` runs it; returns the call span."""
    call = tracing.call_started("sess-1", "support-agent-v1", 3)
    try:
        m = SessionManager(
            store, SessionRecord(session_id="sess-1", room="r", agent_id="support-agent-v1", config_version=3),
            retry_max_delay=0.05, **kwargs,
        )
        await m.start()
        await body(m)
        assert await m.flush(5)
        await m.aclose()
    finally:
        call.end()
    return call  # type: ignore[return-value]


async def test_fast_writes_make_no_span(store: RecordingStore, exported: InMemorySpanExporter) -> None:
    async def talk(m: SessionManager) -> None:
        for i in range(3):
            m.add_turn("user", f"t{i}")
            await m.flush(5)

    await run_call(store, talk, trace_slow_write=5.0)  # "fast": under the threshold, even on a loaded machine
    rec = await store.get_session("sess-1")
    assert [t.text for t in rec.turns] == ["t0", "t1", "t2"]  # written, yet not traced
    assert writes(exported) == []
    assert [s.name for s in exported.get_finished_spans()] == ["call"]


async def test_a_slow_write_gets_a_span_under_the_call(store: RecordingStore, exported: InMemorySpanExporter) -> None:
    slowed_at: list[int] = []

    async def talk(m: SessionManager) -> None:
        assert await m.flush(5)  # the session row (a loaded machine may make even that slow)
        slowed_at.append(time.time_ns())
        store.delay = 0.06
        m.add_turn("user", "slow")
        m.add_turn("assistant", "reply")

    call = await run_call(store, talk, trace_slow_write=0.05)
    spans = [s for s in writes(exported) if (s.start_time or 0) >= slowed_at[0]]
    assert spans, "no span for a write slower than the threshold"
    slow = spans[0]
    assert slow.attributes is not None and slow.end_time is not None and slow.start_time is not None
    assert slow.attributes["outcome"] == "ok" and slow.attributes["attempt"] == 1
    assert slow.attributes["ops"] == 2 and slow.attributes["ops_failed"] == 0
    assert slow.end_time - slow.start_time >= 50_000_000  # its real duration, in ns
    assert slow.status.status_code is StatusCode.UNSET
    assert slow.parent is not None and slow.parent.span_id == call.get_span_context().span_id
    assert slow.context.trace_id == call.get_span_context().trace_id
    assert slow.attributes["session_id"] == "sess-1" and slow.attributes["config_version"] == 3


async def test_zero_threshold_traces_every_batch(store: RecordingStore, exported: InMemorySpanExporter) -> None:
    async def talk(m: SessionManager) -> None:
        await m.flush(5)
        m.add_turn("user", "t0")

    await run_call(store, talk, trace_slow_write=0)
    assert [s.attributes["outcome"] for s in writes(exported) if s.attributes] == ["ok", "ok", "ok"]  # start, turn, finish


async def test_an_outage_traces_each_failed_attempt_and_the_retry(
    store: RecordingStore, exported: InMemorySpanExporter
) -> None:
    async def talk(m: SessionManager) -> None:
        await m.flush(5)
        store.fail = lambda ops: True
        m.add_turn("user", "during the outage")
        await asyncio.sleep(0.2)
        store.fail = lambda ops: False

    await run_call(store, talk)
    spans = writes(exported)
    failed = [s for s in spans if s.attributes and s.attributes["outcome"] == "unavailable"]
    assert len(failed) >= 2
    assert [s.attributes["attempt"] for s in failed if s.attributes] == list(range(1, len(failed) + 1))
    for s in failed:
        assert s.status.status_code is StatusCode.ERROR and s.status.description == "store write unavailable"
    retried = [s for s in spans if s.attributes and s.attributes["outcome"] == "ok"]
    assert retried and retried[0].attributes is not None and retried[0].attributes["attempt"] == len(failed) + 1
    rec = await store.get_session("sess-1")
    assert [t.text for t in rec.turns] == ["during the outage"]


async def test_a_lost_op_marks_its_batch_failed(store: RecordingStore, exported: InMemorySpanExporter) -> None:
    async def talk(m: SessionManager) -> None:
        await m.flush(5)
        m.add_turn("user", "before")
        m._enqueue(UpdateSession({"status": "hacked"}))  # not an updatable field: fails for good
        m.add_turn("assistant", "after")

    await run_call(store, talk, trace_slow_write=5.0)  # only the failed batch, however slow the machine
    (span,) = writes(exported)
    assert span.attributes is not None
    assert span.attributes["outcome"] == "ops_failed" and span.attributes["ops_failed"] == 1
    assert span.attributes["ops"] == 3 and span.status.status_code is StatusCode.ERROR
    assert "hacked" not in str(dict(span.attributes)) and "hacked" not in (span.status.description or "")
