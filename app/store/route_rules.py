"""Route-table rules, once for every backend: a purpose appears once, at most one route is
the default, a phone number is answered by at most one route, and what each route write
does to the table. The backends only swap whole
tables atomically (`RoutesBackend.swap`, which also refuses a route to a missing agent)."""

from __future__ import annotations

from datetime import datetime

from app.domain import InvalidInput, NotFound, Route
from app.domain.errors import NumberTaken


def by_purpose(routes: list[Route]) -> list[Route]:
    return sorted(routes, key=lambda r: r.purpose)


def check_table(routes: list[Route]) -> None:
    purposes = [r.purpose for r in routes]
    if len(set(purposes)) != len(purposes):
        raise InvalidInput("a purpose is listed twice")
    if sum(r.is_default for r in routes) > 1:
        raise InvalidInput("at most one route can be the default")
    holders: dict[str, str] = {}
    for r in routes:
        for number in r.phone_numbers:
            if number in holders:
                raise NumberTaken(number, holders[number], r.purpose)
            holders[number] = r.purpose


def check_numbers_free(routes: list[Route], route: Route) -> None:
    """`NumberTaken` if another route (not `route.purpose`) already answers one of its numbers."""
    for other in routes:
        if other.purpose == route.purpose:
            continue
        for number in route.phone_numbers:
            if number in other.phone_numbers:
                raise NumberTaken(number, other.purpose, route.purpose)


def stamped(route: Route, now: datetime) -> Route:
    return route.model_copy(update={"updated_at": now})


def with_route(routes: list[Route], route: Route) -> list[Route]:
    """Create or replace `route.purpose`; a new default clears the flag on every other route."""
    check_numbers_free(routes, route)
    out = [r for r in routes if r.purpose != route.purpose]
    if route.is_default:
        out = [r.model_copy(update={"is_default": False}) if r.is_default else r for r in out]
    return by_purpose([*out, route])


def without_route(routes: list[Route], purpose: str) -> list[Route]:
    out = [r for r in routes if r.purpose != purpose]
    if len(out) == len(routes):
        raise NotFound(f"route {purpose!r} not found", purpose=purpose)
    return out


def find_route(routes: list[Route], purpose: str) -> Route:
    for r in routes:
        if r.purpose == purpose:
            return r
    raise NotFound(f"route {purpose!r} not found", purpose=purpose)


def in_use_by(routes: list[Route], agent_id: str) -> list[str]:
    return sorted(r.purpose for r in routes if r.agent_id == agent_id)
