"""Publishing and canaries: which version of an agent routing hands out, the canary split,
and the comparison that decides whether a canary is worse than the stable version.

Pure (no I/O): the store keeps the `Release` state per agent, the resolver calls `arm_for`
at session start, the guard calls `compare` with figures the store computed.

Arm assignment: a caller's bucket is the first 8 bytes of SHA-256 over
`"<agent_id>\\n<caller>"` (the caller is the session's `user_id`, else the room name), as
a big-endian integer modulo 10 000; the canary arm takes buckets below `percent * 100`.
So a caller keeps their arm for the whole rollout, in every process, and another agent's
canary picks its callers independently.

The comparison (`compare`): for each outcome rate where lower (or higher) is worse, the
lower bound of Newcombe's hybrid score interval (Wilson intervals of each arm combined;
Newcombe 1998, method 10) for `stable - canary` (or `canary - stable` for bad outcomes)
at one-sided confidence `1 - alpha / k` (Bonferroni over the `k` rates tested). The
canary is worse when that bound exceeds `margin`: we are that confident the canary is at
least `margin` worse. Unlike a z-test on the raw difference it stays sound at rates of
0 or 1 and small samples, where the plain standard error collapses to zero.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.domain.latency import percentile
from app.domain.models import AgentConfig
from app.domain.values import UtcDatetime

Arm = Literal["stable", "canary"]
RolloutStatus = Literal["running", "promoted", "aborted"]

BUCKETS = 10_000
MIN_PERCENT = 1
MAX_PERCENT = 99
LLM_UNAVAILABLE = "llm_unavailable"
"""The end reason of a session no LLM answered (`app.worker.model_unavailable`)."""
GUARD_ACTOR = "rollout-guard"
"""The actor recorded for an automatic abort."""


def caller_bucket(agent_id: str, caller: str) -> int:
    """0..9999, stable for (agent, caller) across processes and releases (not `hash()`)."""
    digest = hashlib.sha256(f"{agent_id}\n{caller}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def arm_for(agent_id: str, caller: str, percent: int) -> Arm:
    return "canary" if caller_bucket(agent_id, caller) < percent * (BUCKETS // 100) else "stable"


class Rollout(BaseModel):
    """A canary: `percent` of new sessions run `version`, the rest `stable_version`.
    Kept on the agent after it ends (promoted or aborted) until the next one starts."""

    id: str
    version: int = Field(description="The canary version")
    stable_version: int = Field(description="The published version the rest of the callers get")
    percent: int = Field(ge=MIN_PERCENT, le=MAX_PERCENT)
    status: RolloutStatus
    started_at: UtcDatetime
    started_by: str | None = None
    ended_at: UtcDatetime | None = None
    ended_by: str | None = Field(None, description=f"Who ended it; `{GUARD_ACTOR}` for the automatic guard")
    reason: str | None = Field(None, description="Why it was aborted")

    @property
    def running(self) -> bool:
        return self.status == "running"


class Release(BaseModel):
    """What routing hands out for one agent. `rev` changes with every publish, canary
    start, promote and abort: it is the ETag that `If-Match` on those requests names."""

    agent_id: str
    current_version: int = Field(description="The newest version (drafts included)")
    published_version: int = Field(description="What routing hands out (the stable arm during a canary)")
    rev: int
    rollout: Rollout | None = Field(None, description="The running canary, or the last one that ended")

    @property
    def canary(self) -> Rollout | None:
        return self.rollout if self.rollout is not None and self.rollout.running else None

    @property
    def drafts(self) -> list[int]:
        """Versions written after the published one that are not the running canary."""
        canary = self.canary.version if self.canary is not None else None
        return [v for v in range(self.published_version + 1, self.current_version + 1) if v != canary]


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**31 - 1, description="The version to publish (or to run as the canary)")
    canary_percent: int | None = Field(
        None, ge=MIN_PERCENT, le=MAX_PERCENT,
        description="Run `version` as a canary for this share of new sessions instead of publishing it",
    )


# ------------------------------------------------------------------- comparison


@dataclass(frozen=True, slots=True)
class ArmSession:
    """What the rollout figures need of one session (a projection the store reads)."""

    arm: str
    config_version: int | None
    status: str
    end_reason: str | None
    collected: dict[str, Any]
    handoffs: int
    tool_errors: int
    turn_ms: list[float] = field(default_factory=list)


class ArmFigures(BaseModel):
    """One arm's outcomes over its finished sessions since the rollout started."""

    arm: Arm
    version: int
    sessions: int = Field(description="Sessions started on this arm (active ones included)")
    finished: int = Field(description="Sessions that ended: the denominator of every rate")
    completed: int
    required_complete: int = Field(description="Finished sessions that collected every required field")
    tool_errors: int = Field(description="Finished sessions with at least one failed tool call")
    handoffs: int = Field(description="Finished sessions handed to another agent")
    llm_failures: int = Field(description="Finished sessions that ended because no LLM answered")
    turns: int = Field(0, description="Spoken turns with a latency figure")
    turn_p50_ms: float | None = None
    turn_p95_ms: float | None = None

    def rate(self, count: int) -> float | None:
        return count / self.finished if self.finished else None

    @property
    def completion_rate(self) -> float | None:
        return self.rate(self.completed)

    @property
    def required_complete_rate(self) -> float | None:
        return self.rate(self.required_complete)

    @property
    def tool_error_rate(self) -> float | None:
        return self.rate(self.tool_errors)

    @property
    def handoff_rate(self) -> float | None:
        return self.rate(self.handoffs)

    @property
    def llm_failure_rate(self) -> float | None:
        return self.rate(self.llm_failures)


GuardMetric = Literal["completion", "required_complete", "tool_error", "llm_failure"]
GOOD: dict[GuardMetric, bool] = {
    # metric: True when higher is better
    "completion": True, "required_complete": True, "tool_error": False, "llm_failure": False,
}
_COUNT = {"completion": "completed", "required_complete": "required_complete", "tool_error": "tool_errors",
          "llm_failure": "llm_failures"}


class GuardPolicy(BaseModel):
    min_sessions: int = Field(30, ge=1, description="Finished sessions each arm needs before any verdict")
    margin: float = Field(0.05, ge=0, lt=1, description="How much worse (absolute rate) counts as worse")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="One-sided, for the whole family of rates")
    metrics: tuple[GuardMetric, ...] = ("completion", "required_complete", "tool_error", "llm_failure")


class MetricCheck(BaseModel):
    metric: GuardMetric
    stable_rate: float
    canary_rate: float
    worse_by_at_least: float = Field(description="Lower confidence bound of how much worse the canary is")
    worse: bool


class Verdict(BaseModel):
    ready: bool = Field(description="Both arms have the minimum number of finished sessions")
    worse: bool
    checks: list[MetricCheck] = Field(default_factory=list)
    reason: str | None = None


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval for a proportion (two-sided at the given z)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def worse_lower_bound(x_ref: int, n_ref: int, x_new: int, n_new: int, z: float) -> float:
    """Lower confidence bound of `p_ref - p_new` (Newcombe's hybrid score interval)."""
    p1, p2 = x_ref / n_ref, x_new / n_new
    l1, _u1 = wilson(x_ref, n_ref, z)
    _l2, u2 = wilson(x_new, n_new, z)
    return (p1 - p2) - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)


def compare(stable: ArmFigures, canary: ArmFigures, policy: GuardPolicy) -> Verdict:
    """Is the canary worse than stable beyond `policy.margin`, with `policy.confidence`?"""
    n = policy.min_sessions
    if stable.finished < n or canary.finished < n:
        return Verdict(ready=False, worse=False)
    k = max(1, len(policy.metrics))
    z = NormalDist().inv_cdf(1 - (1 - policy.confidence) / k)
    checks: list[MetricCheck] = []
    for metric in policy.metrics:
        xs, xc = getattr(stable, _COUNT[metric]), getattr(canary, _COUNT[metric])
        if GOOD[metric]:
            bound = worse_lower_bound(xs, stable.finished, xc, canary.finished, z)
        else:  # a bad outcome: worse when the canary has more of it
            bound = worse_lower_bound(xc, canary.finished, xs, stable.finished, z)
        checks.append(MetricCheck(
            metric=metric, stable_rate=xs / stable.finished, canary_rate=xc / canary.finished,
            worse_by_at_least=round(bound, 4), worse=bound > policy.margin,
        ))
    bad = [c for c in checks if c.worse]
    reason = None
    if bad:
        reason = "; ".join(
            f"{c.metric.replace('_', ' ')} rate {c.canary_rate:.0%} on the canary vs {c.stable_rate:.0%} on stable "
            f"(worse by at least {c.worse_by_at_least:.1%} at {policy.confidence:.0%} confidence)"
            for c in bad
        )
    return Verdict(ready=True, worse=bool(bad), checks=checks, reason=reason)


class RolloutReport(BaseModel):
    """`GET /agents/config/{id}/rollout`: the release state and, for the running (or
    last) canary, each arm's figures since it started and the guard's verdict."""

    release: Release
    drafts: list[int]
    stable: ArmFigures | None = None
    canary: ArmFigures | None = None
    verdict: Verdict | None = None
    truncated: bool = Field(False, description="More sessions matched than were read (the newest are used)")


@dataclass(frozen=True, slots=True)
class PublishedConfig:
    """One agent as routing sees it: the published config, and the running canary's."""

    config: AgentConfig
    canary: AgentConfig | None = None
    rollout: Rollout | None = None
    current_version: int | None = None
    """The newest version (drafts included); None when unknown."""


def _required_complete(collected: dict[str, Any], required: list[str]) -> bool:
    return all(collected.get(name) not in (None, "", [], {}) for name in required)


def arm_figures(
    arm: Arm, version: int, sessions: list[ArmSession], required: dict[int, list[str]]
) -> ArmFigures:
    """One arm's figures over `sessions` (all of one rollout; other arms are skipped).
    `required`: each config version's required fields (`schema_config.required`)."""
    mine = [s for s in sessions if s.arm == arm]
    done = [s for s in mine if s.status != "active"]
    turns = sorted(ms for s in done for ms in s.turn_ms)
    return ArmFigures(
        arm=arm, version=version, sessions=len(mine), finished=len(done),
        completed=sum(1 for s in done if s.status == "completed"),
        required_complete=sum(
            1 for s in done if _required_complete(s.collected, required.get(s.config_version or 0, []))),
        tool_errors=sum(1 for s in done if s.tool_errors),
        handoffs=sum(1 for s in done if s.handoffs),
        llm_failures=sum(1 for s in done if s.end_reason == LLM_UNAVAILABLE),
        turns=len(turns),
        turn_p50_ms=percentile(turns, 50) if turns else None,
        turn_p95_ms=percentile(turns, 95) if turns else None,
    )
