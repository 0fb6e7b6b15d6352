"""Checking a scenario's expectations against what actually happened.

Per-turn events are checked by `app.agents.scenario_checks` (LiveKit's own
`RunResult.expect` API plus text matching; shared with the server's stored tests);
this module adds routing, what the model was sent, the stored record and the analysis.

Offline vs live (SIM_LIVE=1): structural checks (routing, what the model was sent,
the stored record's status/agents/handoffs and collected keys) apply in both; checks
that depend on what a scripted model said (exact event order, texts, argument values,
`no_more_events`, request counts, transcripts, `within_ms`) are offline only, except
events marked `live: true` (checked as "the turn contains one") and messages with an
`intent` (judged by an LLM in live mode).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from app.agents.scenario_checks import (
    MAX_SHOWN,
    _describe_match,
    check_collected,
    check_events as check_events,
    describe_event as describe_event,
    describe_expected as describe_expected,
    list_events as list_events,
    short,
    skip_activation as skip_activation,
    subset_problem,
    text_problem,
)
from app.domain import SessionRecord
from app.domain.analysis import SessionAnalysis
from sim.fake_openai import CapturedRequest, _content_text
from sim.report import Checks, Loc
from sim.scenario import (
    AnalysisExpect,
    LLMReceived,
    RecordExpect,
    RouteExpect,
)

# ----------------------------------------------------------------------------- route


def check_route(checks: Checks, loc: Loc, spec: RouteExpect, record: SessionRecord, *, fallback: bool, source: str | None) -> None:
    actual: dict[str, Any] = {
        "agent_id": record.agent_id,
        "version": record.config_version,
        "reason": record.route_reason,
        "fallback": fallback,
        "source": source,
        "user_id": record.user_id,
        "arm": record.arm,
    }
    for name in ("agent_id", "version", "reason", "fallback", "source", "user_id", "arm"):
        if name in spec.model_fields_set:
            want = getattr(spec, name)
            checks.check(
                want == actual[name], (*loc, name), f"route {name} differs",
                expected=repr(want), actual=repr(actual[name]),
            )
    if "degraded" in spec.model_fields_set:
        _check_contains_or_null(checks, (*loc, "degraded"), "degraded", spec.degraded, record.degraded)


def _check_contains_or_null(checks: Checks, loc: Loc, name: str, want: str | None, got: str | None) -> None:
    if want is None:
        checks.check(got is None, loc, f"{name} should be null", expected="None", actual=repr(got))
    else:
        checks.check(
            got is not None and want in got, loc, f"{name} does not contain the expected text",
            expected=f"contains {want!r}", actual=repr(got),
        )


# ----------------------------------------------------------------- what the LLM got


def request_text(req: CapturedRequest) -> list[str]:
    """Every non-system message as text (content plus tool-call arguments)."""
    out = []
    for m in req.messages:
        if m.get("role") in ("system", "developer"):
            continue
        text = _content_text(m.get("content")) or ""
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function", {})
            text += f" {fn.get('name', '')}({fn.get('arguments', '')})"
        out.append(text)
    return out


def check_llm_received(
    checks: Checks, loc: Loc, spec: LLMReceived, requests: Sequence[CapturedRequest], *, live: bool
) -> None:
    if spec.endpoint is not None:
        if live:  # a real model is one endpoint
            return
        requests = [r for r in requests if r.endpoint == spec.endpoint]
    if spec.count is not None and not live:
        checks.check(
            len(requests) == spec.count, (*loc, "count"), "number of LLM requests in this step",
            expected=spec.count, actual=len(requests),
        )
    checked = [n for n in spec.model_fields_set if n not in ("request", "count", "endpoint")]
    if not checked:
        return
    if not requests:
        checks.fail(loc, "no LLM request was made during this step", expected="at least one request", actual="none")
        return
    if spec.request == "all":
        picked = list(enumerate(requests))
    elif spec.request == "first":
        picked = [(0, requests[0])]
    elif spec.request == "last":
        picked = [(len(requests) - 1, requests[-1])]
    else:
        if not -len(requests) <= spec.request < len(requests):
            checks.fail((*loc, "request"), f"no request #{spec.request}", actual=f"{len(requests)} request(s)")
            return
        i = spec.request % len(requests)
        picked = [(i, requests[i])]
    for i, req in picked:
        _check_request(checks, loc, spec, req, i)


def _check_request(checks: Checks, loc: Loc, spec: LLMReceived, req: CapturedRequest, i: int) -> None:
    tag = f"request #{i}"
    system = req.instructions
    for s in spec.instructions_contain:
        checks.check(s in system, (*loc, "instructions_contain"), f"{tag}: instructions lack a text",
                     expected=f"contains {short(s)}", actual=short(system))
    for s in spec.instructions_omit:
        checks.check(s not in system, (*loc, "instructions_omit"), f"{tag}: instructions contain a forbidden text",
                     expected=f"omits {short(s)}", actual=short(system[max(0, system.find(s) - 40):][:MAX_SHOWN]))
    names = req.tool_names
    if spec.tools is not None:
        checks.check(sorted(names) == sorted(spec.tools), (*loc, "tools"), f"{tag}: tools offered differ",
                     expected=sorted(spec.tools), actual=sorted(names))
    for n in spec.tools_include:
        checks.check(n in names, (*loc, "tools_include"), f"{tag}: tool not offered", expected=n, actual=sorted(names))
    for n in spec.tools_exclude:
        checks.check(n not in names, (*loc, "tools_exclude"), f"{tag}: tool offered but should not be", expected=f"not {n}", actual=sorted(names))
    for name, schema in spec.tool_schemas.items():
        if name not in names:
            checks.fail((*loc, "tool_schemas", name), f"{tag}: tool not offered", expected=name, actual=sorted(names))
            continue
        problem = subset_problem(schema, req.tool(name).get("parameters"))
        checks.check(problem is None, (*loc, "tool_schemas", name), f"{tag}: parameters schema of {name} differs: {problem}",
                     expected=short(schema), actual=short(req.tool(name).get("parameters")))
    for key, want in spec.params.items():
        got = req.body.get(key)
        checks.check(got == want, (*loc, "params", key), f"{tag}: request field {key} differs",
                     expected=short(want), actual=short(got) if key in req.body else "absent")
    texts = request_text(req)
    for s in spec.messages_contain:
        checks.check(any(s in t for t in texts), (*loc, "messages_contain"), f"{tag}: no message contains the text",
                     expected=f"contains {short(s)}", actual=short(texts[-4:]))
    for s in spec.messages_omit:
        checks.check(not any(s in t for t in texts), (*loc, "messages_omit"), f"{tag}: a message contains a forbidden text",
                     expected=f"omits {short(s)}", actual=short([t for t in texts if s in t][:2]))


# ---------------------------------------------------------------------------- record


def check_record(checks: Checks, loc: Loc, spec: RecordExpect, record: SessionRecord | None, *, live: bool) -> None:
    if record is None:
        checks.fail(loc, "no session record was stored", expected="a SessionRecord", actual="None")
        return
    fields = spec.model_fields_set
    simple = {
        "status": record.status.value,
        "end_reason": record.end_reason,
        "agent_id": record.agent_id,
        "config_version": record.config_version,
        "route_reason": record.route_reason,
        "user_id": record.user_id,
        "arm": record.arm,
    }
    for name, got in simple.items():
        if name in fields:
            want = getattr(spec, name)
            checks.check(want == got, (*loc, name), f"record {name} differs", expected=repr(want), actual=repr(got))
    if "degraded" in fields:
        _check_contains_or_null(checks, (*loc, "degraded"), "record degraded", spec.degraded, record.degraded)
    if "error" in fields:
        _check_contains_or_null(checks, (*loc, "error"), "record error", spec.error, record.error)
    if "call" in fields:
        got_call = record.call.model_dump(mode="json") if record.call is not None else None
        if spec.call is None or got_call is None:
            checks.check(spec.call == got_call, (*loc, "call"), "record call differs",
                         expected=short(spec.call, 400), actual=short(got_call, 400))
        else:
            problem = subset_problem(spec.call, got_call)
            checks.check(problem is None, (*loc, "call"), f"record call differs: {problem}",
                         expected=short(spec.call, 400), actual=short(got_call, 400))
    check_collected(checks, loc, spec, record.collected,
                    [(h.from_agent, h.to_agent, h.reason) for h in record.handoffs], live=live)
    if spec.turn_count is not None and not live:
        checks.check(len(record.turns) == spec.turn_count, (*loc, "turn_count"), "number of stored turns differs",
                     expected=spec.turn_count, actual=len(record.turns))
    if spec.turns is not None and not live:
        _check_turns(checks, (*loc, "turns"), spec, record)
    if spec.events is not None:
        _check_events_stored(checks, (*loc, "events"), spec, record)
    if spec.served_by is not None and not live:
        _check_served_by(checks, (*loc, "served_by"), spec, record)
    if spec.usage is not None and not live:
        _check_usage(checks, (*loc, "usage"), spec, record)



def _check_events_stored(checks: Checks, loc: Loc, spec: RecordExpect, record: SessionRecord) -> None:
    assert spec.events is not None
    got = record.events
    listing = "stored events:\n" + "\n".join(f"  [{i}] {e.kind} ({e.agent_id}): {short(e.detail)}" for i, e in enumerate(got))
    kinds = [e.kind for e in got]
    want = [e.kind for e in spec.events]
    if kinds != want:
        checks.fail(loc, "stored events differ", expected=want, actual=kinds, context=listing)
        return
    for i, (w, e) in enumerate(zip(spec.events, got, strict=True)):
        if w.contains is not None:
            checks.check(w.contains in e.detail, (*loc, i, "contains"), f"event {i} ({e.kind}): detail lacks a text",
                         expected=f"contains {short(w.contains)}", actual=short(e.detail))


def _check_served_by(checks: Checks, loc: Loc, spec: RecordExpect, record: SessionRecord) -> None:
    assert spec.served_by is not None
    stored = list(record.usage.served_by)
    listing = "served by:\n" + "\n".join(f"  {s.kind} {s.provider} {s.model}: {s.turns} turn(s)" for s in stored)
    left = list(stored)
    for i, w in enumerate(spec.served_by):
        match = next((s for s in left if s.kind == w.kind and s.provider == w.provider
                      and (w.model is None or s.model == w.model) and (w.turns is None or s.turns == w.turns)), None)
        if match is None:
            checks.fail((*loc, i), "no stored provider count matches",
                        expected=short(w.model_dump(exclude_none=True)), actual=f"{len(stored)} stored", context=listing)
        else:
            left.remove(match)
    if left:
        checks.fail(loc, "providers served turns the scenario does not list",
                    expected="nothing else", actual=short([f"{s.kind} {s.provider} {s.model}" for s in left]))


def _check_usage(checks: Checks, loc: Loc, spec: RecordExpect, record: SessionRecord) -> None:
    assert spec.usage is not None
    u = record.usage
    got: dict[str, Any] = {"llm_tokens": u.llm_tokens, **u.model_dump(exclude={"models", "served_by"})}
    for name in spec.usage.model_fields_set:
        want = getattr(spec.usage, name)
        same = abs(got[name] - want) < 1e-8 if name == "cost_usd" else got[name] == want
        checks.check(same, (*loc, name), f"usage {name} differs", expected=want, actual=got[name],
                     context=_usage_lines(u) if name in ("cost_usd", "unpriced_models") else None)


def _usage_lines(u: Any) -> str:
    return "usage by model:\n" + "\n".join(
        f"  {m.kind} {m.provider} {m.model}: in {m.input_tokens} (cached {m.cached_tokens}) out {m.output_tokens}"
        f" audio {m.audio_s}s chars {m.characters} cost {m.cost_usd}" for m in u.models)


# -------------------------------------------------------------------------- analysis


def check_analysis(
    checks: Checks, loc: Loc, spec: AnalysisExpect, analysis: SessionAnalysis | None, *, live: bool
) -> None:
    """The stored post-call analysis against `spec` (None: it did not finish in time)."""
    if analysis is None:
        checks.fail(loc, "no finished analysis was stored", expected="done or failed", actual="none or pending")
        return
    a = analysis
    fields = spec.model_fields_set
    if spec.status is not None:
        checks.check(a.status.value == spec.status, (*loc, "status"), "analysis status differs",
                     expected=spec.status, actual=a.status.value, context=f"error: {a.error}" if a.error else None)
    if spec.attempts is not None:
        checks.check(a.attempts == spec.attempts, (*loc, "attempts"), "analysis attempts differ",
                     expected=spec.attempts, actual=a.attempts, context=f"error: {a.error}" if a.error else None)
    if live:
        for name, value in (("summary", a.summary), ("success", a.success), ("extracted", a.extracted)):
            if name in fields:
                checks.check(value is not None, (*loc, name), f"analysis has no {name}", expected="a value",
                             actual="None")
        return
    for name, match, got in (("summary", spec.summary, a.summary), ("error", spec.error, a.error)):
        if match is not None:
            problem = "is missing" if got is None else text_problem(
                got, match.text, match.contains_list(), match.regex)
            checks.check(problem is None, (*loc, name), f"analysis {name} {problem}", expected=_describe_match(match),
                         actual=short(got))
    if spec.success is not None:
        if a.success is None:
            checks.fail((*loc, "success"), "analysis has no success verdict", expected="a verdict", actual="None")
        else:
            if spec.success.passed is not None:
                checks.check(a.success.passed == spec.success.passed, (*loc, "success", "passed"),
                             "success verdict differs", expected=spec.success.passed, actual=a.success.passed,
                             context=f"reason: {a.success.reason}")
            if (m := spec.success.reason) is not None:
                problem = text_problem(a.success.reason, m.text, m.contains_list(), m.regex)
                checks.check(problem is None, (*loc, "success", "reason"), f"success reason {problem}",
                             expected=_describe_match(m), actual=short(a.success.reason))
    if spec.extracted is not None:
        checks.check(a.extracted == spec.extracted, (*loc, "extracted"), "extracted fields differ",
                     expected=short(spec.extracted), actual=short(a.extracted))
    if spec.extracted_include is not None:
        problem = subset_problem(spec.extracted_include, a.extracted)
        checks.check(problem is None, (*loc, "extracted_include"), f"extracted fields: {problem}",
                     expected=short(spec.extracted_include), actual=short(a.extracted))
    simple = {"model": a.request.model, "input_tokens": a.input_tokens, "output_tokens": a.output_tokens}
    for name, got in simple.items():
        if name in fields:
            want = getattr(spec, name)
            checks.check(got == want, (*loc, name), f"analysis {name} differs", expected=want, actual=got)
    if "cost_usd" in fields:
        want, cost = spec.cost_usd, a.cost_usd
        same = cost is None if want is None else cost is not None and abs(cost - want) < 1e-8
        checks.check(same, (*loc, "cost_usd"), "analysis cost differs", expected=want, actual=cost)


def _check_turns(checks: Checks, loc: Loc, spec: RecordExpect, record: SessionRecord) -> None:
    assert spec.turns is not None
    got = record.turns
    listing = "stored turns:\n" + "\n".join(f"  [{t.seq}] {t.role} ({t.agent_id}): {short(t.text)}" for t in got)
    if len(got) != len(spec.turns):
        checks.fail(loc, "number of stored turns differs", expected=len(spec.turns), actual=len(got), context=listing)
        return
    for i, (want, turn) in enumerate(zip(spec.turns, got, strict=True)):
        problem = None if want.role == turn.role else f"role is {turn.role}"
        problem = problem or text_problem(turn.text, want.text, want.contains_list(), want.regex)
        if problem is None and want.agent_id is not None and want.agent_id != turn.agent_id:
            problem = f"attributed to {turn.agent_id}"
        if problem:
            checks.fail((*loc, i), f"stored turn {i}: {problem}",
                        expected=f"{want.role}: {_describe_match(want)}", actual=f"{turn.role}: {short(turn.text)}",
                        context=listing)


CLOSE_WAIT_S = 3.0
"""How long a session with `closes: true` may take to close after its last step."""


async def check_closes(checks: Checks, closes: bool | None, closed: asyncio.Event, loc: Loc) -> bool:
    """`closes:` of a session (text or voice): end_session closes the session from a
    speech-done callback just after the goodbye, so wait for it (or, for `closes: false`,
    give it the chance to happen). Returns whether the agent closed the session."""
    if closes is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closed.wait(), CLOSE_WAIT_S if closes else 0.05)
    closed_by_agent = closed.is_set()
    if closes is not None:
        checks.check(
            closed_by_agent == closes, (*loc, "closes"),
            "the agent closed the session" if not closes else "the agent did not close the session",
            expected="closed by the agent" if closes else "still open",
            actual="closed" if closed_by_agent else "open",
        )
    return closed_by_agent
