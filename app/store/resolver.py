"""Which agent runs? The one answer, for session starts, `/api/v1/resolve` and `/api/v1/token`.

`resolve` turns a config snapshot and the untrusted metadata sources into a
`Resolution`: the routing decision (`app.domain.routing`, on the snapshot's prebuilt
routing table), the config to run (an enabled agent of the snapshot, or the built-in
fallback agent) and whether the answer is degraded (no fresh snapshot). It never
raises. `resolve_current` first gets the snapshot from a `SnapshotSource`, turning an
outage into a degraded resolution instead of an error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from app.domain import AgentConfig, StoreUnavailable
from app.domain.fallback import FALLBACK_CONFIG
from app.domain.rollout import Arm, arm_for
from app.domain.routing import MetadataSource, RouteDecision, RoutingTable, determine_agent_type
from app.store.cache import ConfigSnapshot
from app.store.sources import SnapshotSource

log = logging.getLogger(__name__)

Sources = Sequence[MetadataSource | tuple[str, str | bytes | None]]

_NO_ROUTES = RoutingTable()


@dataclass(frozen=True)
class Resolution:
    decision: RouteDecision
    config: AgentConfig
    """An enabled agent of `snapshot`, or `FALLBACK_CONFIG`."""
    snapshot: ConfigSnapshot | None
    """What was resolved against; None when no config could be loaded at all."""
    degraded: str | None = None
    """Why the answer is not from a fresh snapshot (for logs and the session record)."""
    arm: Arm | None = None
    """The rollout arm while the agent has a canary running (`config` is then the canary's
    or the published one); None otherwise."""

    @property
    def stale(self) -> bool:
        """True unless a current snapshot was used (store down, nothing or old data cached)."""
        return self.snapshot is None or self.snapshot.stale

    @property
    def epoch(self) -> int | None:
        return self.snapshot.epoch if self.snapshot is not None else None

    @property
    def is_fallback_agent(self) -> bool:
        return self.config is FALLBACK_CONFIG

    def replacement(self) -> AgentConfig:
        """The config to run when `config` cannot start (a required prompt variable has
        no value): the default route's agent if that is another enabled agent needing
        no variable, else the fallback agent."""
        snap = self.snapshot
        default = snap.default_agent_id if snap is not None else None
        if snap is not None and default is not None and default != self.config.agent_id:
            cfg = snap.enabled(default)
            if cfg is not None and not any(
                v.required and v.default is None for v in cfg.prompt_config.variables.values()
            ):
                return cfg
        return FALLBACK_CONFIG


def resolve(
    snapshot: ConfigSnapshot | None, sources: Sources, *, room: str, degraded: str | None = None,
    called_number: str | None = None,
    user_id: str | None = None,
) -> Resolution:
    """The routing rules applied to `snapshot`; never raises. `called_number`: the E.164
    number a phone caller dialled (routes by `phone_numbers` when the metadata names
    neither agent nor purpose). While the routed agent has a canary, the caller (the
    metadata's `user_id`, else `user_id`, else the room) picks the arm
    (`app.domain.rollout.arm_for`)."""
    table = snapshot.routing if snapshot is not None else _NO_ROUTES
    decision = determine_agent_type(sources, table, room=room, called_number=called_number)
    config = (snapshot.enabled(decision.agent_id) if snapshot and decision.agent_id else None) or FALLBACK_CONFIG
    if config is FALLBACK_CONFIG and degraded is None:
        log.warning("room %s: no routable agent (%s); using the fallback agent", room, decision.reason)
    arm: Arm | None = None
    canary = snapshot.canaries.get(config.agent_id) if snapshot is not None and config is not FALLBACK_CONFIG else None
    if canary is not None and canary.config.enabled:
        arm = arm_for(config.agent_id, decision.user_id or user_id or room, canary.percent)
        if arm == "canary":
            config = canary.config
    return Resolution(decision=decision, config=config, snapshot=snapshot, degraded=degraded, arm=arm)


async def resolve_current(
    configs: SnapshotSource, sources: Sources, *, room: str, called_number: str | None = None,
    user_id: str | None = None,
) -> Resolution:
    """`resolve` on the source's current snapshot: the last known-good one (degraded)
    while the store is down, none (fallback agent, degraded) when nothing was loaded."""
    snapshot: ConfigSnapshot | None = None
    degraded: str | None = None
    try:
        snapshot = configs.snapshot if configs.is_fresh() else await configs.current()
        if snapshot.stale:
            degraded = "store unavailable: using last known-good config"
    except StoreUnavailable as e:
        degraded = f"store unavailable ({e.message}) and no config cached: fallback agent"
    except Exception:  # a bug or an unreadable stored config must not kill the call
        log.exception("room %s: loading configs failed; using the fallback agent", room)
        degraded = "config lookup failed: fallback agent"
    return resolve(snapshot, sources, room=room, degraded=degraded, called_number=called_number, user_id=user_id)
