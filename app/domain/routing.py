"""Session metadata → which agent runs the session: the routing rules.

Metadata is untrusted JSON from up to three places (job dispatch, room, first remote
participant). The first source that parses as a JSON object wins; later sources are
not consulted even if the winner names nothing routable, because the dispatch
metadata is what our own token endpoint wrote and the others are only fallbacks for
dispatches made elsewhere.

Rules, in order, on the winning object — the first *present* key decides:
1. `agent_id`: must be a slug, exist and be enabled; otherwise → default.
2. `purpose`: must be a known route whose agent is enabled; otherwise → default.
3. neither present, and the session is a phone call with a dialled number (LiveKit's
   `sip.trunkPhoneNumber`, passed as `called_number`): the route listing that number in
   its `phone_numbers`, if its agent is enabled; otherwise → default.
4. otherwise → default route.

Rule 3 also applies when no source parsed at all: an inbound call from a LiveKit dispatch
rule usually carries no metadata, only the SIP participant's attributes.

An explicit but bad `agent_id` goes to the default rather than on to `purpose`: the
caller asked for one agent, and guessing another one from a second key would hide
the mistake (the reason names it, the log line says which room).

This module never raises and never passes a raw metadata value on: everything in the
`RouteDecision` is either an id from the `RoutingTable` or a size-capped, type-checked
string. It is pure (no I/O, no LiveKit): the store's resolver (`app.store.resolver`)
applies it for session starts, `GET /api/v1/resolve` and `POST /api/v1/token` alike.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from app.domain.models import (
    MAX_VARIABLE_VALUE_CHARS,
    PURPOSE_RE,
    SLUG_RE,
    VAR_NAME_RE,
    AgentConfig,
    Route,
)

logger = logging.getLogger(__name__)

MAX_METADATA_BYTES = 8 * 1024
MAX_VARIABLES = 32
MAX_USER_ID_CHARS = 128
LOG_PREVIEW_CHARS = 200

_SLUG = re.compile(SLUG_RE)
_PURPOSE = re.compile(PURPOSE_RE)
_VAR_NAME = re.compile(VAR_NAME_RE)

SourceName = Literal["job", "room", "participant"]


class MetadataSource(NamedTuple):
    """One place metadata may come from; `raw` exactly as LiveKit handed it over."""

    name: SourceName
    raw: str | bytes | None


@dataclass(frozen=True)
class RoutingTable:
    """An immutable snapshot of what can be routed to.

    `known` holds every agent id that exists (enabled or not) so a decision can tell
    "unknown" from "disabled"; `enabled` is the subset sessions may be routed to.
    `default_agent_id` is None when there is no default route or its agent is not
    enabled (a disabled agent is never routed to, not even by default).
    """

    routes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    numbers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """E.164 number → the purpose of the route answering it."""
    default_agent_id: str | None = None
    enabled: frozenset[str] = frozenset()
    known: frozenset[str] = frozenset()

    @classmethod
    def build(cls, routes: Iterable[Route], agents: Iterable[AgentConfig]) -> RoutingTable:
        agent_list = list(agents)
        enabled = frozenset(a.agent_id for a in agent_list if a.enabled)
        known = frozenset(a.agent_id for a in agent_list)
        route_list = sorted(routes, key=lambda r: r.purpose)
        table = {r.purpose: r.agent_id for r in route_list}
        defaults = [r for r in route_list if r.is_default]
        default = defaults[0].agent_id if defaults else None
        if len(defaults) > 1:
            logger.warning(
                "several default routes (%s); using %r",
                ", ".join(r.purpose for r in defaults),
                defaults[0].purpose,
            )
        if default is not None and default not in enabled:
            logger.warning("default route points at %r, which is not an enabled agent", default)
            default = None
        numbers = {n: r.purpose for r in route_list for n in r.phone_numbers}
        return cls(
            routes=MappingProxyType(table), numbers=MappingProxyType(numbers), default_agent_id=default,
            enabled=enabled, known=known,
        )


Reason = Literal[
    "agent_id",
    "purpose",
    "called_number",
    "default",
    "default:unknown_agent_id",
    "default:disabled_agent",
    "default:unknown_purpose",
    "default:unknown_called_number",
    "default:bad_metadata",
    "default:no_metadata",
]


@dataclass(frozen=True)
class RouteDecision:
    agent_id: str | None
    """An enabled agent, or None when routing fell back and there is no default."""
    reason: Reason
    source: SourceName | None = None
    """The source whose metadata was used, None when none parsed."""
    purpose: str | None = None
    """The requested purpose when it was a well-formed purpose string."""
    variables: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    user_id: str | None = None
    version: int | None = None
    """A pinned config version (a draft tried out): only from the job's dispatch metadata
    (what our token endpoint signs) and only with an explicit `agent_id`."""
    skipped: tuple[str, ...] = ()
    """`<source>:<why>` for each source that did not parse, for diagnostics."""
    direction: Literal["inbound", "outbound"] | None = None
    """`call.direction` of the metadata: the outbound call API sets `outbound`."""

    @property
    def is_fallback(self) -> bool:
        return self.reason.startswith("default")


# ---------------------------------------------------------------------------- parsing


def _parse(raw: str | bytes | None) -> dict[str, Any] | str:
    """The metadata as a dict, or a short reason why not. Never raises."""
    if raw is None:
        return "empty"
    if isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
        if len(data) > MAX_METADATA_BYTES:
            return "too_large"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return "invalid_utf8"
    elif isinstance(raw, str):
        # a char is at least one byte: check the cheap length before encoding
        if len(raw) > MAX_METADATA_BYTES:
            return "too_large"
        try:
            if len(raw.encode("utf-8")) > MAX_METADATA_BYTES:
                return "too_large"
        except UnicodeEncodeError:  # lone surrogates
            return "invalid_utf8"
        text = raw
    else:
        return "not_text"
    if not text.strip():
        return "empty"
    try:
        value = json.loads(text)
    except RecursionError:
        return "too_deep"
    except (ValueError, TypeError):
        return "invalid_json"
    if not isinstance(value, dict):
        return "not_an_object"
    return value


def _variables(value: object) -> Mapping[str, str]:
    if not isinstance(value, dict):
        return MappingProxyType({})
    out: dict[str, str] = {}
    for k, v in value.items():
        if len(out) >= MAX_VARIABLES:
            break
        if (
            isinstance(k, str)
            and _VAR_NAME.fullmatch(k)
            and isinstance(v, str)
            and len(v) <= MAX_VARIABLE_VALUE_CHARS
        ):
            out[k] = v
    return MappingProxyType(out)


def _direction(value: object) -> Literal["inbound", "outbound"] | None:
    if isinstance(value, dict):
        d = value.get("direction")
        if d == "inbound":
            return "inbound"
        if d == "outbound":
            return "outbound"
    return None


def _user_id(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_USER_ID_CHARS:
        return value
    return None


def _preview(raw: str | bytes | None) -> str:
    if raw is None:
        return ""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return repr(bytes(raw[: LOG_PREVIEW_CHARS // 2]))[:LOG_PREVIEW_CHARS]
    if isinstance(raw, str):
        return repr(raw[: LOG_PREVIEW_CHARS // 2])[:LOG_PREVIEW_CHARS]
    return type(raw).__name__


# ---------------------------------------------------------------------------- routing


def determine_agent_type(
    sources: Sequence[MetadataSource | tuple[str, str | bytes | None]],
    routes: RoutingTable,
    *,
    room: str = "",
    called_number: str | None = None,
) -> RouteDecision:
    """Pick the agent for a session. Never raises; falls back to the default route.
    `called_number`: the normalised E.164 number a phone caller dialled, if any."""
    try:
        return _determine(sources, routes, room, called_number)
    except Exception:  # belt and braces: a routing bug must not kill the entrypoint
        logger.exception("routing failed unexpectedly in room %r; using the default", room[:200])
        return RouteDecision(agent_id=routes.default_agent_id, reason="default:bad_metadata")


def _determine(
    sources: Sequence[MetadataSource | tuple[str, str | bytes | None]],
    table: RoutingTable,
    room: str,
    called_number: str | None = None,
) -> RouteDecision:
    room = str(room)[:200]
    skipped: list[str] = []
    winner: tuple[SourceName, dict[str, Any], str | bytes | None] | None = None
    for item in sources:
        name, raw = item[0], item[1]
        parsed = _parse(raw)
        if isinstance(parsed, dict):
            winner = (name, parsed, raw)  # type: ignore[assignment]
            break
        skipped.append(f"{name}:{parsed}")
        if parsed != "empty":
            logger.debug("room %r: %s metadata skipped (%s): %s", room, name, parsed, _preview(raw))

    if winner is None:
        if called_number:
            return _by_number(table, called_number, room, {"skipped": tuple(skipped)})
        bad = any(not s.endswith(":empty") for s in skipped)
        reason: Reason = "default:bad_metadata" if bad else "default:no_metadata"
        return _fallback(table, reason, room, skipped=tuple(skipped), detail=", ".join(skipped))

    source, meta, raw = winner
    purpose_raw = meta.get("purpose")
    purpose = purpose_raw if isinstance(purpose_raw, str) and _PURPOSE.fullmatch(purpose_raw) else None
    common: dict[str, Any] = {
        "source": source,
        "purpose": purpose,
        "variables": _variables(meta.get("variables")),
        "user_id": _user_id(meta.get("user_id")),
        "skipped": tuple(skipped),
        "direction": _direction(meta.get("call")),
    }

    agent_id = meta.get("agent_id")
    if agent_id is not None and agent_id != "":
        if not isinstance(agent_id, str) or not _SLUG.fullmatch(agent_id) or agent_id not in table.known:
            return _fallback(table, "default:unknown_agent_id", room, raw=raw, **common)
        if agent_id not in table.enabled:
            return _fallback(table, "default:disabled_agent", room, raw=raw, detail=agent_id, **common)
        version = meta.get("version")
        pinned = version if source == "job" and type(version) is int and 1 <= version < 2**31 else None
        return RouteDecision(agent_id=agent_id, reason="agent_id", version=pinned, **common)

    if purpose_raw is not None and purpose_raw != "":
        target = table.routes.get(purpose) if purpose is not None else None
        if target is None:
            return _fallback(table, "default:unknown_purpose", room, raw=raw, **common)
        if target not in table.enabled:
            return _fallback(table, "default:disabled_agent", room, raw=raw, detail=target, **common)
        return RouteDecision(agent_id=target, reason="purpose", **common)

    if called_number:
        return _by_number(table, called_number, room, common)
    if table.default_agent_id is None:
        logger.warning("room %r: no agent_id or purpose and no default route", room)
    return RouteDecision(agent_id=table.default_agent_id, reason="default", **common)


def _by_number(table: RoutingTable, number: str, room: str, common: dict[str, Any]) -> RouteDecision:
    """Rule 3. The number is not logged: on a shared platform a dialled number can name
    a person's direct line; the reason and the room are enough to find the call."""
    purpose = table.numbers.get(number)
    target = table.routes.get(purpose) if purpose is not None else None
    if purpose is None or target is None:
        return _fallback(table, "default:unknown_called_number", room, **common)
    common = {**common, "purpose": purpose}
    if target not in table.enabled:
        return _fallback(table, "default:disabled_agent", room, detail=target, **common)
    return RouteDecision(agent_id=target, reason="called_number", **common)


def _fallback(
    table: RoutingTable,
    reason: Reason,
    room: str,
    *,
    raw: str | bytes | None = None,
    detail: str = "",
    **fields: Any,
) -> RouteDecision:
    level = logging.INFO if reason == "default:no_metadata" else logging.WARNING
    logger.log(
        level,
        "room %r: routing fell back to default %r (%s)%s%s",
        room,
        table.default_agent_id,
        reason,
        f" {detail[:LOG_PREVIEW_CHARS]}" if detail else "",
        f" metadata={_preview(raw)}" if raw is not None else "",
    )
    return RouteDecision(agent_id=table.default_agent_id, reason=reason, **fields)
