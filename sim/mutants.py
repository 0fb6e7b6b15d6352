"""Mutants of a scenario: one expectation changed so that it must fail.

Why: a scenario that cannot fail proves nothing. `sim/tests/test_mutations.py` runs
mutants of every scenario in `sim/scenarios/` and requires each to fail *at the
mutated expectation* (the failure's location must lie under the site's anchor). By
default one mutant per scenario runs (kinds chosen round-robin across the suite, so
every kind is exercised); `SIM_MUTATE=all` runs every site of every scenario.

A site is (kind, location of the changed value, anchor, change). Changed values use
the marker "zz-mutant", which no agent, model script or record ever produces.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

MARK = "zz-mutant"
Loc = tuple[int | str, ...]


@dataclass(frozen=True)
class Site:
    kind: str
    loc: Loc
    """Where the mutated value lives in the scenario document."""
    anchor: Loc
    """A failure must be reported at or under this location."""
    change: Callable[[Any], Any]
    """Old value (or None when absent) -> new value."""

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(doc)
        parent: Any = out
        for part in self.loc[:-1]:
            parent = parent[part]
        last = self.loc[-1]
        old = parent[last] if (isinstance(parent, dict) and last in parent) or isinstance(parent, list) else None
        parent[last] = self.change(old)
        return out

    def describe(self) -> str:
        from app.domain.field_errors import format_location

        return f"{self.kind} at {format_location(self.loc)}"


def _bump(v: Any) -> Any:
    return v + 1


def _text(v: Any) -> Any:
    return f"{v} {MARK}"


def _mark(_: Any) -> Any:
    return MARK


def _other_arm(v: Any) -> Any:
    return "stable" if v == "canary" else "canary"


def _add(v: Any) -> Any:
    if isinstance(v, list):
        return [*v, MARK]
    return [v, MARK] if v is not None else [MARK]


def sites(doc: dict[str, Any]) -> Iterator[Site]:
    """Every mutation site of a scenario document (as loaded from YAML)."""
    for i, op in enumerate(doc.get("config") or []):
        yield from _config_sites(op, ("config", i))
    for s, session in enumerate(doc.get("sessions") or []):
        sl: Loc = ("sessions", s)
        for i, op in enumerate(session.get("config") or []):
            yield from _config_sites(op, (*sl, "config", i))
        route = session.get("route") or {}
        for name, change in (
            ("agent_id", _mark), ("version", _bump), ("reason", _mark), ("user_id", _mark),
            ("fallback", lambda v: not v), ("source", lambda v: "room" if v == "job" else "job"),
            ("degraded", lambda v: MARK if v is None else None), ("arm", _other_arm),
        ):
            if name in route:
                yield Site(f"route.{name}", (*sl, "route", name), (*sl, "route", name), change)
        if "start" in session and session["start"]:
            yield from _step_sites(session["start"], (*sl, "start"))
        for t, turn in enumerate(session.get("turns") or []):
            yield from _step_sites(turn, (*sl, "turns", t))
            for i, op in enumerate(turn.get("config") or []):
                yield from _config_sites(op, (*sl, "turns", t, "config", i))
        participant = session.get("participant") or {}
        attrs = participant.get("attributes") or {}
        if participant.get("kind") == "sip" and "sip.trunkPhoneNumber" in attrs and route.get("reason") == "called_number":
            # an input mutant: the call routed by its number arrives on one no route
            # answers; routing by number that ignored the number would survive it
            yield Site("sip.called_number", (*sl, "participant", "attributes", "sip.trunkPhoneNumber"),
                       (*sl, "route"), lambda v: "+19999999999")
        if "dtmf_sent" in session:
            yield Site("dtmf_sent", (*sl, "dtmf_sent"), (*sl, "dtmf_sent"), _text)
        if session.get("closes") is True:
            yield Site("closes", (*sl, "closes"), (*sl, "closes"), lambda v: False)
        for h, mock in enumerate(session.get("http") or []):
            hl = (*sl, "http", h)
            if "expect_calls" in mock:
                yield Site("http.expect_calls", (*hl, "expect_calls"), hl, _bump)
            if "expect_params" in mock:
                yield Site("http.expect_params", (*hl, "expect_params"), hl, lambda v: {**v, "x": MARK})
            if "expect_json" in mock:
                yield Site("http.expect_json", (*hl, "expect_json"), hl, lambda v: {"x": MARK})
        record = session.get("record") or {}
        rl = (*sl, "record")
        for name, change in (
            ("status", lambda v: "failed" if v != "failed" else "completed"), ("end_reason", _text),
            ("agent_id", _mark), ("config_version", _bump), ("route_reason", _mark), ("user_id", _mark),
            ("degraded", lambda v: MARK if v is None else None), ("error", lambda v: MARK if v is None else None),
            ("turn_count", _bump), ("arm", _other_arm),
            ("collected", lambda v: {**v, MARK: 1}), ("collected_include", lambda v: {**v, MARK: 1}),
            ("collected_keys", _add), ("handoffs", lambda v: [*v, {"from": MARK, "to": MARK}]),
        ):
            if name in record:
                yield Site(f"record.{name}", (*rl, name), (*rl, name), change)
        if "call" in record:
            call = record["call"]
            if not isinstance(call, dict):
                yield Site("record.call", (*rl, "call"), (*rl, "call"), lambda v: {"direction": "inbound"})
            for name, value in (call or {}).items():
                if isinstance(value, dict):
                    for sub in value:
                        yield Site(f"record.call.{name}.{sub}", (*rl, "call", name, sub), (*rl, "call"), _mark)
                else:
                    yield Site(f"record.call.{name}", (*rl, "call", name), (*rl, "call"),
                               lambda v: {"x": MARK} if v is None else _mark(v))
        usage = record.get("usage") or {}
        for name, value in usage.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                yield Site(f"record.usage.{name}", (*rl, "usage", name), (*rl, "usage", name),
                           lambda v: v + 1 if isinstance(v, int) else v * 2 + 1e-6)
        yield from _analysis_sites(session.get("analysis") or {}, (*sl, "analysis"))
        for i, turn in enumerate(record.get("turns") or []):
            key = "text" if "text" in turn else "contains" if "contains" in turn else None
            if key:
                yield Site("record.turns", (*rl, "turns", i, key), (*rl, "turns"), _text if key == "text" else _add)
            break


def _analysis_sites(spec: dict[str, Any], al: Loc) -> Iterator[Site]:
    for name, change in (
        ("status", lambda v: "failed" if v == "done" else "done"), ("attempts", _bump), ("model", _mark),
        ("input_tokens", _bump), ("output_tokens", _bump), ("extracted", lambda v: {**v, MARK: 1}),
        ("extracted_include", lambda v: {**v, MARK: 1}),
    ):
        if name in spec:
            yield Site(f"analysis.{name}", (*al, name), (*al, name), change)
    for name in ("summary", "error"):
        if isinstance(spec.get(name), dict):
            yield Site(f"analysis.{name}", (*al, name, "contains"), (*al, name), _add)
    success = spec.get("success") or {}
    if "passed" in success:
        yield Site("analysis.success.passed", (*al, "success", "passed"), (*al, "success"), lambda v: not v)


def _config_sites(op: dict[str, Any], loc: Loc) -> Iterator[Site]:
    if "expect_version" in op:
        yield Site("config.expect_version", (*loc, "expect_version"), loc, _bump)
    if "expect_status" in op:
        yield Site("config.expect_status", (*loc, "expect_status"), loc, lambda v: 299 if v != 299 else 298)
    run = op.get("run_tests") or {}
    rl: Loc = (*loc, "run_tests")
    if "expect" in run:
        yield Site("config.run_tests.expect", (*rl, "expect"), (*rl, "expect"),
                   lambda v: "failed" if v == "passed" else "passed")
    if "failing" in run:
        yield Site("config.run_tests.failing", (*rl, "failing"), (*rl, "failing"), lambda v: [*v, MARK])
    if "expect_body_contains" in op:
        yield Site("config.expect_body_contains", (*loc, "expect_body_contains"), (*loc, "expect_body_contains"),
                   _add)
    if op.get("as") and op.get("expect_status") == 403:
        # an input mutant: the same request with the admin key must not be refused, or
        # the 403 was not about the named key's role
        yield Site("config.as", (*loc, "as"), loc, lambda v: None)
    guard = op.get("guard") or {}
    if "expect_aborted" in guard:
        yield Site("config.guard.expect_aborted", (*loc, "guard", "expect_aborted"), (*loc, "guard"),
                   lambda v: [] if v else [MARK])
    resolve = op.get("resolve") or {}
    if "expect_version" in resolve:
        yield Site("config.resolve.expect_version", (*loc, "resolve", "expect_version"), (*loc, "resolve"), _bump)
    if "expect_arm" in resolve:
        yield Site("config.resolve.expect_arm", (*loc, "resolve", "expect_arm"), (*loc, "resolve"),
                   lambda v: "canary" if v != "canary" else "stable")
    expected = (op.get("audit") or {}).get("expect") or []
    al: Loc = (*loc, "audit")
    for k in range(len(expected)):
        yield Site("config.audit.actor", (*al, "expect", k, "actor"), al, _mark)
    for k in range(len(expected) - 1):
        if expected[k] != expected[k + 1]:
            # order matters: the two changes the other way round must not be found
            yield Site("config.audit.order", (*al, "expect"), al,
                       lambda v, k=k: [*v[:k], v[k + 1], v[k], *v[k + 2:]])


def _step_sites(step: dict[str, Any], loc: Loc) -> Iterator[Site]:
    expect = step.get("expect") or []
    for k, e in enumerate(expect):
        el: Loc = (*loc, "expect", k)
        if "any_order" in e:
            for m, member in enumerate(e["any_order"]):
                yield from _event_sites(member, (*el, "any_order", m), loc)
        else:
            yield from _event_sites(e, el, loc)
    if expect and step.get("no_more_events") is not False:
        # the dropped event is now an extra one: `no_more_events` (explicit, since an
        # empty `expect` alone checks nothing) must catch it
        yield Site("expect.drop_last", loc, loc,
                   lambda st: {**st, "expect": st["expect"][:-1], "no_more_events": True})
    if not expect and step.get("no_more_events") is True:
        yield Site("expect.add", (*loc, "expect"), loc, lambda v: [{"message": {"contains": MARK}}])
    received = step.get("llm_received") or {}
    rl = (*loc, "llm_received")
    for name, change in (
        ("instructions_contain", _add), ("tools_include", _add), ("messages_contain", _add),
        ("count", _bump), ("tools", lambda v: v[1:] if v else [MARK]),
        ("tool_schemas", lambda v: {**v, next(iter(v)): {"x-mutant": MARK}} if v else v),
    ):
        if name in received:
            yield Site(f"llm_received.{name}", (*rl, name), rl, change)
    if "within_ms" in step:
        yield Site("within_ms", (*loc, "within_ms"), (*loc, "within_ms"), lambda v: 0.001)


def _event_sites(e: dict[str, Any], loc: Loc, step: Loc) -> Iterator[Site]:
    if "message" in e:
        m = e["message"]
        for key, change in (("text", _text), ("contains", _add), ("regex", _mark)):
            if key in m:
                yield Site(f"message.{key}", (*loc, "message", key), step, change)
        if not any(k in m for k in ("text", "contains", "regex")):
            yield Site("message.contains", (*loc, "message", "contains"), step, _add)
    elif "function_call" in e:
        fc = e["function_call"]
        yield Site("function_call.name", (*loc, "function_call", "name"), step, lambda v: f"{v}_{MARK}")
        if fc.get("arguments"):
            first = next(iter(fc["arguments"]))
            yield Site("function_call.arguments", (*loc, "function_call", "arguments", first), step, _mark)
        if "arguments_exact" in fc:
            yield Site("function_call.arguments_exact", (*loc, "function_call", "arguments_exact"), step,
                       lambda v: {**v, MARK: 1})
    elif "function_output" in e:
        fo = e["function_output"]
        for key, change in (("output", _text), ("contains", _add), ("regex", _mark),
                            ("is_error", lambda v: not v), ("name", _mark)):
            if key in fo:
                yield Site(f"function_output.{key}", (*loc, "function_output", key), step, change)
    elif "handoff" in e:
        yield Site("handoff.to", (*loc, "handoff", "to"), step, _mark)
