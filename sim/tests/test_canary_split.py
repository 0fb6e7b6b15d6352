"""The canary split as callers meet it: 1,000 distinct user_ids through the resolver (the
one session starts, /resolve and /token use) land within ±3 points of the canary share,
and a caller keeps their arm: every time, in every snapshot of the same rollout, and
whether the user_id comes in the metadata or from the session (room as the last resort)."""

from __future__ import annotations

import json

import pytest

from app.domain import AgentConfig, Route
from app.domain.routing import MetadataSource
from app.store.cache import Canary, ConfigSnapshot
from app.store.resolver import resolve

T0 = "2026-01-01T00:00:00Z"


def cfg(version: int, *, enabled: bool = True) -> AgentConfig:
    return AgentConfig.model_validate({
        "agent_id": "support", "name": "Support", "enabled": enabled, "version": version,
        "created_at": T0, "updated_at": T0, "prompt_config": {"instructions": f"Version {version}."},
    })


def snapshot(percent: int, *, canary_enabled: bool = True, epoch: int = 1) -> ConfigSnapshot:
    return ConfigSnapshot.build(
        epoch=epoch, configs={"support": cfg(1)},
        routes=[Route(purpose="support", agent_id="support", is_default=True)],
        canaries={"support": Canary(cfg(2, enabled=canary_enabled), percent, "ro_test")},
    )


def arm_of(snap: ConfigSnapshot, user_id: str) -> tuple[str | None, int]:
    meta = json.dumps({"purpose": "support", "user_id": user_id})
    res = resolve(snap, [MetadataSource("job", meta)], room=f"room-{user_id}")
    return res.arm, res.config.version


@pytest.mark.parametrize("percent", [10, 20])
def test_a_thousand_callers_land_within_three_points_of_the_share(percent: int) -> None:
    """The issue's shares (10 % in the API example, 20 % in the story). The split is a
    hash, so the share of any 1,000 callers is binomial: 1.3 points standard deviation
    at 20 %, 1.6 at 50 % (where ±3 is under 2 sigma: with these ids 50 % came out at
    46.8 %). `test_the_hash_is_unbiased` checks the mean on many more callers."""
    snap = snapshot(percent)
    users = [f"user-{i:04d}@example.com" for i in range(1000)]
    arms = {u: arm_of(snap, u) for u in users}
    canary = [u for u, (arm, version) in arms.items() if arm == "canary"]
    assert all(version == (2 if arm == "canary" else 1) for arm, version in arms.values())
    assert {arm for arm, _ in arms.values()} == {"stable", "canary"}
    share = 100 * len(canary) / len(users)
    assert abs(share - percent) <= 3, f"{share:.1f}% of callers on a {percent}% canary"
    # sticky: the same caller, asked again and through a reloaded snapshot, keeps the arm
    again = snapshot(percent, epoch=2)
    assert all(arm_of(again, u) == arms[u] for u in users)
    assert all(arm_of(snap, u) == arms[u] for u in users[:100])


def test_without_user_id_the_room_decides_and_a_disabled_canary_takes_nobody() -> None:
    snap = snapshot(50)
    by_room = {resolve(snap, [MetadataSource("job", '{"purpose": "support"}')], room=f"r{i}").arm for i in range(50)}
    assert by_room == {"stable", "canary"}
    assert resolve(snap, [], room="r1").arm == resolve(snap, [], room="r1").arm
    # the session's user_id (not in the metadata) is used before the room
    with_user = resolve(snap, [], room="r1", user_id="user-0001@example.com")
    assert (with_user.arm, with_user.config.version) == arm_of(snap, "user-0001@example.com")
    off = snapshot(50, canary_enabled=False)
    assert {arm_of(off, f"u{i}") for i in range(50)} == {(None, 1)}


def test_other_agents_have_no_arm() -> None:
    snap = ConfigSnapshot.build(
        epoch=1, configs={"support": cfg(1)}, routes=[Route(purpose="support", agent_id="support")])
    assert arm_of(snap, "anyone") == (None, 1)


@pytest.mark.parametrize("percent", [5, 50, 90])
def test_the_hash_is_unbiased(percent: int) -> None:
    """20,000 callers: the share within 1 point (binomial sd at most 0.36 points)."""
    snap = snapshot(percent)
    canary = sum(1 for i in range(20_000) if arm_of(snap, f"caller-{i}")[0] == "canary")
    assert abs(100 * canary / 20_000 - percent) <= 1
