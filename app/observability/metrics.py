"""The service's Prometheus metrics, in `prometheus_client`'s default registry.

The default registry on purpose: LiveKit Agents registers its own worker metrics there
(`lk_agents_worker_load`, `lk_agents_active_job_count`), so `GET /metrics` serves ours
and LiveKit's from one place. `python -m app dev|start` runs calls in worker processes
(and webhooks in another), so it turns on `prometheus_client`'s multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, which LiveKit supports too): every process writes its
values to files there and `exposition()` adds them up; each gauge says how (`livesum`:
the live processes' sum). Labels stay bounded: agent id and config version, status,
tool name, outcome; never a session, room or user id. Recording is a dictionary lookup
and a lock, cheap enough for the audio path.

Under `dev`/`start` every process of the service records into shared files
(app/observability/processes.py) and `render` merges them; each gauge says how
(`multiprocess_mode`: the sum over live processes, or the stalest, or the largest).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from app.observability import processes

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Seconds: fine where voice turns live (a few hundred ms), coarse past the point where
a caller is already waiting too long."""

WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

TURN_STAGES: Mapping[str, str] = {
    # stage label: the per-turn metrics entry's field (app/worker/sessions.py)
    "eou": "eou_delay_ms",
    "llm_ttft": "llm_ttft_ms",
    "tts_ttfb": "tts_ttfb_ms",
    "e2e": "total_ms",
}

SESSIONS_ACTIVE = Gauge(
    "voice_sessions_active", "Sessions running now, by the agent they started with.",
    ["agent_id"], multiprocess_mode="livesum",
)
SESSIONS_STARTED = Counter(
    "voice_sessions_started", "Sessions started, by the agent they started with.", ["agent_id"],
)
SESSIONS_ENDED = Counter(
    "voice_sessions_ended", "Sessions ended, by the agent they started with and how they ended.",
    ["agent_id", "status"],
)
TURN_LATENCY = Histogram(
    "voice_turn_latency_seconds",
    "Voice turn latency by stage: eou (end of user speech to turn committed), llm_ttft (model "
    "time to first token), tts_ttfb (TTS time to first audio), e2e (end of user speech to the "
    "first agent audio played).",
    ["agent_id", "version", "stage"],
    buckets=LATENCY_BUCKETS,
)
TOOL_CALLS = Counter(
    "voice_tool_calls", "Tool calls by agent, tool and outcome (ok or error).",
    ["agent_id", "tool", "outcome"],
)
STORE_WRITE_SECONDS = Histogram(
    "store_session_write_seconds", "One batch of session-record writes, by outcome.",
    ["outcome"], buckets=WRITE_BUCKETS,
)
STORE_WRITES_BUFFERED = Gauge(
    "store_session_writes_buffered",
    "Session-record writes queued in memory, not yet stored (sessions' queues and the "
    "process buffer for writes that outlived their session).",
    multiprocess_mode="livesum",
)
CONFIG_CONFIRMED_AT = Gauge(
    "config_cache_confirmed_timestamp_seconds",
    "When the config snapshot was last confirmed current by the store (Unix time; age = "
    "time() - this); with several processes, the stalest of them.",
    ["cache"], multiprocess_mode="livemin",  # labelled: only processes with a cache report one
)
CONFIG_CACHE = "configs"
CONFIG_RELOADS = Counter(
    "config_cache_reloads", "Config snapshot reloads by outcome (ok, unavailable, error).", ["outcome"],
)

WEBHOOK_ATTEMPTS = Counter(
    "webhook_delivery_attempts",
    "Webhook delivery attempts by event type and outcome: delivered, retrying (failed, tried "
    "again later), failed (for good: window over or no retry), gone (410: endpoint disabled).",
    ["event_type", "outcome"],
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "webhook_delivery_attempt_seconds", "One webhook delivery attempt, request to answer (or failure).",
    buckets=WRITE_BUCKETS,
)
WEBHOOK_DUE = Gauge(
    "webhook_deliveries_due",
    "Deliveries due now and not yet running, across the store (the queue the dispatchers work "
    "through), as the dispatcher last counted it.",
    multiprocess_mode="livemax",
)

UNKNOWN_TOOL = "unknown"
"""The label of a call naming no tool the agent has (a model may invent names)."""


def session_started(agent_id: str) -> None:
    SESSIONS_STARTED.labels(agent_id).inc()
    SESSIONS_ACTIVE.labels(agent_id).inc()


def session_ended(agent_id: str, status: str) -> None:
    SESSIONS_ENDED.labels(agent_id, status).inc()
    SESSIONS_ACTIVE.labels(agent_id).dec()


def turn_observed(agent_id: str, version: int, entry: Mapping[str, Any]) -> None:
    """One per-turn metrics entry (milliseconds, null where LiveKit reported nothing)."""
    v = str(version)
    for stage, field in TURN_STAGES.items():
        ms = entry.get(field)
        if isinstance(ms, (int, float)):
            TURN_LATENCY.labels(agent_id, v, stage).observe(ms / 1000)


def tool_calls(agent_id: str, calls: Iterable[tuple[str, bool]], known: frozenset[str]) -> None:
    """`calls`: (tool name, failed) pairs; names outside `known` count as `unknown`."""
    for name, failed in calls:
        TOOL_CALLS.labels(agent_id, name if name in known else UNKNOWN_TOOL, "error" if failed else "ok").inc()


def render() -> bytes:
    """The text exposition of every process of this service (see the module docstring),
    or of this process alone when it runs without shared metrics."""
    path = processes.directory()
    if path is None:
        return generate_latest(REGISTRY)
    processes.forget_dead_processes(path)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def process_gone(pid: int) -> None:
    """A process of the service exited: its present values stop counting now rather than at
    the next scrape (its totals stay)."""
    path = processes.directory()
    if path is not None:
        processes.forget_dead_processes(path)
