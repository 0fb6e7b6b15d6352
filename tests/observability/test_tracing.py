"""Traces: a spoken call run with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a real OTLP
receiver on loopback yields one trace holding our spans and LiveKit's, each carrying
the call's session_id, agent_id and config_version; no conversation content unless
TRACE_CONTENT allows it; admin requests are traced; nothing is exported when unset."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

from app.observability.tracing import configure, enabled_by
from sim.otlp_receiver import OtlpReceiver, ReceivedSpan

SCRIPT = Path(__file__).with_name("traced_call.py")


async def run_traced_call(receiver: OtlpReceiver, **env: str) -> tuple[str, list[ReceivedSpan]]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACE_"))}
    environ.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="200", **env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), env=environ,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, err.decode()[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert not result["failures"], result["failures"]
    return result["session_id"], receiver.spans


async def test_one_trace_per_call_with_our_spans_and_livekits() -> None:
    receiver = OtlpReceiver()
    await receiver.start()
    try:
        # every store write traced (by default only slow, retried or failed ones are)
        session_id, spans = await run_traced_call(receiver, OTEL_SERVICE_NAME="voice-test", TRACE_SLOW_STORE_WRITE_MS="0")
    finally:
        await receiver.stop()
    assert receiver.requests >= 1
    calls = [s for s in spans if s.name == "call"]
    assert [c.attributes["session_id"] for c in calls] == [session_id]
    call = calls[0]
    assert call.parent_id == ""  # the root: no job span in the sim
    assert call.attributes["agent_id"] == "support-agent-v1" and call.attributes["config_version"] == 1
    assert call.attributes["route_reason"] == "purpose"
    assert call.attributes["arm"] == "none"  # no canary running
    trace = [s for s in spans if s.trace_id == call.trace_id]
    names = defaultdict(list)
    for s in trace:
        names[s.name].append(s)
    # ours, and LiveKit's session, model, speech and tool spans, in the one trace
    for name in ("call", "store.session_write", "agent_session", "agent_turn", "llm_node", "tts_node", "function_tool"):
        assert names[name], f"no {name!r} span in the call's trace: {sorted(names)}"
    assert all(w.attributes["outcome"] == "ok" and w.attributes["ops"] >= 1 for w in names["store.session_write"])
    for s in trace:  # every span of the call names it
        assert s.attributes.get("session_id") == session_id, s.name
        assert s.attributes.get("agent_id") == "support-agent-v1" and s.attributes.get("config_version") == 1, s.name
    assert {s.resource.get("service.name") for s in spans} == {"voice-test"}
    # tool calls: the name and the outcome, never the arguments or result (TRACE_CONTENT off)
    tools = {s.attributes.get("gen_ai.tool.name") for s in names["function_tool"]}
    assert {"record_order_id", "end_session"} <= tools, tools
    for s in trace:
        assert not any("arguments" in k or "pii" in k.split(".") or k.startswith("gen_ai.input") for k in s.attributes), s
    # the admin request, in a trace of its own
    api = [s for s in spans if s.name == "GET /api/v1/agents/config"]
    assert len(api) == 1 and api[0].trace_id != call.trace_id
    assert api[0].attributes["http.status_code"] == 200
    assert not any("authorization" in k.lower() for k in api[0].attributes)  # the admin key stays out


async def test_content_goes_on_spans_only_when_allowed() -> None:
    receiver = OtlpReceiver()
    await receiver.start()
    try:
        _, spans = await run_traced_call(receiver, TRACE_CONTENT="true")
    finally:
        await receiver.stop()
    args = [s.attributes.get("gen_ai.tool.call.arguments") for s in spans if s.name == "function_tool"]
    assert any(a and "AB1234567" in a for a in args), args
    # LiveKit's own record of the model's input is there too (built only when it may leave)
    chats = [s.attributes.get("lk.pii.chat_ctx") for s in spans if s.name == "llm_node"]
    assert any(c and "AB1234567" in c for c in chats), chats
    assert {s.resource.get("service.name") for s in spans} == {"voice-platform"}


def test_tracing_is_off_without_an_endpoint() -> None:
    assert not enabled_by({})
    assert not enabled_by({"OTEL_SERVICE_NAME": "x"})
    assert enabled_by({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert enabled_by({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not enabled_by({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert not enabled_by({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"})
    assert configure({}) is None


def test_an_unsupported_protocol_leaves_tracing_off_with_one_error(caplog) -> None:  # type: ignore[no-untyped-def]
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    assert configure(env) is None
    (line,) = [r.getMessage() for r in caplog.records if r.name == "app.observability.tracing"]
    assert line.startswith("tracing off:") and "http/json" in line and "http/protobuf or grpc" in line
