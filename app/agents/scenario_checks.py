"""Checking a scenario turn's events against what the agent did, with LiveKit's own
`RunResult.expect` API (`next_event`, `is_function_call`, `is_function_call_output`,
`is_message`, `is_agent_handoff`, `no_more_events`, `judge`), plus text matching (exact /
contains / regex), exact arguments and handoff agent ids; failures show expected vs actual
with the scenario line.

One definition for the sim (`sim.expect`) and the server's stored tests
(`app.agents.test_runner`). Offline, events are checked in order; live (a real model),
only events marked `live: true` (as "the turn contains one") and messages with an
`intent` (judged by an LLM, or noted as not judged when there is no judge).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from livekit.agents import llm as lk_llm
from livekit.agents.voice.run_result import (
    AgentHandoffEvent,
    ChatMessageEvent,
    FunctionCallEvent,
    FunctionCallOutputEvent,
    RunEvent,
    RunResult,
)

from app.domain.scenario.format import ExpectEvent, FunctionOutputExpect, RecordExpect, Step, TextMatch
from app.domain.scenario.report import Checks, Loc

MAX_SHOWN = 160


def short(value: object, limit: int = MAX_SHOWN) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text.replace("\n", "\\n")
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


# ------------------------------------------------------------------------ describing


def describe_event(ev: RunEvent) -> str:
    if isinstance(ev, FunctionCallEvent):
        return f"function_call {ev.item.name}({ev.item.arguments})"
    if isinstance(ev, FunctionCallOutputEvent):
        flag = ", is_error" if ev.item.is_error else ""
        return f"function_output {ev.item.name}: {short(ev.item.output)}{flag}"
    if isinstance(ev, ChatMessageEvent):
        return f"message {ev.item.role}: {short(ev.item.text_content or '')}"
    if isinstance(ev, AgentHandoffEvent):
        old = getattr(ev.old_agent, "id", None)
        return f"handoff {old} -> {getattr(ev.new_agent, 'id', '?')}"
    return repr(ev)


def list_events(events: Sequence[RunEvent], marked: int | None = None) -> str:
    if not events:
        return "events: (none)"
    rows = [
        f"{'>>' if i == marked else '  '} [{i}] {describe_event(ev)}" for i, ev in enumerate(events)
    ]
    return "events:\n" + "\n".join(rows)


def describe_expected(e: ExpectEvent) -> str:
    if e.any_order is not None:
        return "any order of: " + "; ".join(describe_expected(x) for x in e.any_order)
    if e.function_call is not None:
        fc = e.function_call
        args = fc.arguments_exact if fc.arguments_exact is not None else fc.arguments
        return f"function_call {fc.name}({json.dumps(args) if args is not None else '…'})"
    if e.function_output is not None:
        who = f"{e.function_output.name}: " if e.function_output.name else ""
        return f"function_output {who}{_describe_match(e.function_output)}"
    if e.message is not None:
        return f"message {e.message.role}: {_describe_match(e.message)}"
    assert e.handoff is not None
    return f"handoff {e.handoff.from_ or '*'} -> {e.handoff.to}"


def _describe_match(m: TextMatch | FunctionOutputExpect) -> str:
    parts = []
    exact = m.text if isinstance(m, TextMatch) else m.output
    if exact is not None:
        parts.append(f"text == {short(exact)}")
    parts += [f"contains {short(c)}" for c in m.contains_list()]
    if m.regex is not None:
        parts.append(f"matches /{m.regex}/")
    if isinstance(m, TextMatch) and m.intent:
        parts.append(f"intent {short(m.intent)}")
    if isinstance(m, FunctionOutputExpect) and m.is_error is not None:
        parts.append(f"is_error={m.is_error}")
    return ", ".join(parts) or "(any)"


def text_problem(actual: str, exact: str | None, contains: Iterable[str], regex: str | None) -> str | None:
    """Why `actual` does not match, or None."""
    if exact is not None and actual.strip() != exact.strip():
        return "text differs"
    for c in contains:
        if c not in actual:
            return f"does not contain {short(c)}"
    if regex is not None and re.search(regex, actual) is None:
        return f"does not match /{regex}/"
    return None


def subset_problem(expected: Any, actual: Any, path: str = "") -> str | None:
    """None if `expected` is a subset of `actual` (mappings recursively, lists equal length)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path or '(root)'}: expected an object, got {short(actual)}"
        for k, v in expected.items():
            if k not in actual:
                return f"{path}{'.' if path else ''}{k}: missing"
            p = subset_problem(v, actual[k], f"{path}{'.' if path else ''}{k}")
            if p:
                return p
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{path or '(root)'}: expected {short(expected)}, got {short(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            p = subset_problem(e, a, f"{path}[{i}]")
            if p:
                return p
        return None
    if expected != actual or type(expected) is bool and type(actual) is not bool:
        return f"{path or '(root)'}: expected {short(expected)}, got {short(actual)}"
    return None


# ----------------------------------------------------------------------------- events


def skip_activation(result: RunResult[Any]) -> int:
    """Index of the first event after the agent's activation (a handoff from no agent)."""
    events = result.events
    if events and isinstance(events[0], AgentHandoffEvent) and events[0].old_agent is None:
        return 1
    return 0


async def check_events(
    checks: Checks,
    loc: Loc,
    step: Step,
    result: RunResult[Any],
    *,
    first: int = 0,
    live: bool = False,
    judge_llm: lk_llm.LLM[Any] | None = None,
) -> None:
    if live:
        await _check_events_live(checks, loc, step, result, first=first, judge_llm=judge_llm)
        return
    events = result.events
    run = result.expect
    if first:
        run.skip_next(first)
    index = first
    for k, e in enumerate(step.expect):
        eloc = (*loc, "expect", k)
        if e.any_order is not None:
            n = len(e.any_order)
            window = events[index : index + n]
            if len(window) < n:
                checks.fail(eloc, f"expected {n} more event(s) in any order, the turn produced {len(window)}",
                            expected=describe_expected(e), actual="(none)" if not window else
                            "; ".join(describe_event(ev) for ev in window), context=list_events(events))
                return
            unmatched = _match_any_order(e.any_order, window)
            if unmatched is not None:
                checks.fail((*eloc, "any_order", unmatched) if unmatched >= 0 else eloc,
                            "no event in the group matches this expectation" if unmatched >= 0
                            else "the group's events cannot be matched one-to-one",
                            expected=describe_expected(e.any_order[unmatched] if unmatched >= 0 else e),
                            actual=_closest(e.any_order[unmatched], window) if unmatched >= 0 else "(see events)",
                            context=list_events(events, index))
                return
            run.skip_next(n)
            index += n
            continue
        if index >= len(events):
            checks.fail(
                eloc, "expected another event, but the turn produced no more",
                expected=describe_expected(e), actual="(none)", context=list_events(events),
            )
            return
        ev_assert = run.next_event()
        problem = _event_problem(e, ev_assert)
        if problem is not None:
            checks.fail(
                eloc, problem, expected=describe_expected(e), actual=describe_event(events[index]),
                context=list_events(events, index),
            )
            return  # later events would only be misaligned noise
        index += 1
    if step.no_more_events if step.no_more_events is not None else bool(step.expect):
        try:
            run.no_more_events()
        except AssertionError:
            checks.fail(
                (*loc, "expect") if step.expect else loc,
                "unexpected extra event(s) after the expected ones (no_more_events)",
                expected="(no more events)", actual=describe_event(events[index]),
                context=list_events(events, index),
            )


def _closest(e: ExpectEvent, window: Sequence[RunEvent]) -> str:
    """The group's events of the expected kind (and tool name), to show as "actual"."""
    kind = {"function_call": FunctionCallEvent, "function_output": FunctionCallOutputEvent,
            "message": ChatMessageEvent, "handoff": AgentHandoffEvent}[e.kind]
    name = e.function_call.name if e.function_call else e.function_output.name if e.function_output else None
    same = [ev for ev in window if isinstance(ev, kind)]
    named = [ev for ev in same if name is not None and getattr(ev.item, "name", None) == name]
    shown = named or same
    return " | ".join(describe_event(ev) for ev in shown) if shown else f"no {e.kind} event in the group"


def _match_any_order(expected: Sequence[ExpectEvent], window: Sequence[RunEvent]) -> int | None:
    """One-to-one match of expectations to events (backtracking; groups are small).
    None when every expectation found its own event, else the index of one that cannot."""
    fits = [[j for j, ev in enumerate(window) if _event_problem(e, _Single(ev)) is None] for e in expected]
    for i, options in enumerate(fits):
        if not options:
            return i
    used: set[int] = set()

    def assign(i: int) -> bool:
        if i == len(fits):
            return True
        for j in fits[i]:
            if j not in used:
                used.add(j)
                if assign(i + 1):
                    return True
                used.discard(j)
        return False

    return None if assign(0) else -1


def _event_problem(e: ExpectEvent, ev_assert: Any) -> str | None:
    """Check one event with LiveKit's assertions plus ours; the problem, or None."""
    try:
        if e.function_call is not None:
            fc = e.function_call
            ev_assert.is_function_call(name=fc.name, **({"arguments": fc.arguments} if fc.arguments is not None else {}))
            if fc.arguments_exact is not None:
                actual = json.loads(ev_assert.event().item.arguments or "{}")
                if actual != fc.arguments_exact:
                    return "arguments differ"
        elif e.function_output is not None:
            fo = e.function_output
            ev_assert.is_function_call_output(**({"is_error": fo.is_error} if fo.is_error is not None else {}))
            if fo.name is not None and ev_assert.event().item.name != fo.name:
                return f"output of {ev_assert.event().item.name}, not {fo.name}"
            return text_problem(ev_assert.event().item.output, fo.output, fo.contains_list(), fo.regex)
        elif e.message is not None:
            m = e.message
            ev_assert.is_message(role=m.role)
            return text_problem(ev_assert.event().item.text_content or "", m.text, m.contains_list(), m.regex)
        elif e.handoff is not None:
            ev_assert.is_agent_handoff()
            ev = ev_assert.event()
            if getattr(ev.new_agent, "id", None) != e.handoff.to:
                return "handed off to another agent"
            if e.handoff.from_ is not None and getattr(ev.old_agent, "id", None) != e.handoff.from_:
                return "handed off from another agent"
    except AssertionError as err:
        return str(err).split("\n", 1)[0]
    return None


async def _check_events_live(
    checks: Checks, loc: Loc, step: Step, result: RunResult[Any], *, first: int, judge_llm: lk_llm.LLM[Any] | None
) -> None:
    events = result.events[first:]
    flat: list[tuple[Loc, ExpectEvent]] = []
    for k, e in enumerate(step.expect):
        if e.any_order is not None:
            flat += [((*loc, "expect", k, "any_order", m), x) for m, x in enumerate(e.any_order)]
        else:
            flat.append(((*loc, "expect", k), e))
    for eloc, e in flat:
        if e.message is not None and e.message.intent:
            role = e.message.role
            idx = _last_index(events, lambda ev, role=role: isinstance(ev, ChatMessageEvent) and ev.item.role == role)
            if idx is None:
                checks.fail(eloc, "no message to judge in this turn", expected=describe_expected(e), context=list_events(events))
                continue
            if judge_llm is None:  # a live model too small to judge (SIM_LIVE=local): say so
                checks.note(eloc, f"not judged: intent {short(e.message.intent)} (the live model does not judge)")
                continue
            try:
                await result.expect[first + idx].is_message(role=e.message.role).judge(judge_llm, intent=e.message.intent)
            except AssertionError as err:
                checks.fail(
                    eloc, "LLM judge: the message does not fulfil the intent",
                    expected=f"intent {short(e.message.intent)}",
                    actual=describe_event(events[idx]), context=str(err).split("\n", 1)[0],
                )
            continue
        if not e.live:
            continue
        if not any(_event_problem(e, _Single(ev)) is None for ev in events):
            checks.fail(
                eloc, "the turn contains no such event (live: order not enforced)",
                expected=describe_expected(e), context=list_events(events),
            )


class _Single:
    """Adapts one event to the `EventAssert` calls `_event_problem` makes."""

    def __init__(self, ev: RunEvent) -> None:
        from livekit.agents.voice.run_result import EventAssert, RunAssert

        class _R:
            events = [ev]

        self._assert = EventAssert(ev, RunAssert(_R()), 0)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._assert, name)


def _last_index(events: Sequence[RunEvent], pred: Any) -> int | None:
    for i in range(len(events) - 1, -1, -1):
        if pred(events[i]):
            return i
    return None


def check_collected(
    checks: Checks, loc: Loc, spec: RecordExpect, collected: dict[str, Any],
    handoffs: Sequence[tuple[str, str, str | None]], *, live: bool,
) -> None:
    """A session's collected data and handoffs (`record:`); live: keys and agents only."""
    if spec.collected is not None:
        if live:
            checks.check(sorted(collected) == sorted(spec.collected), (*loc, "collected"),
                         "collected fields differ (live: keys only)", expected=sorted(spec.collected), actual=sorted(collected))
        else:
            checks.check(collected == spec.collected, (*loc, "collected"), "collected data differs",
                         expected=short(spec.collected, 400), actual=short(collected, 400))
    if spec.collected_include is not None:
        if live:
            missing = sorted(set(spec.collected_include) - set(collected))
            checks.check(not missing, (*loc, "collected_include"), "collected lacks fields (live: keys only)",
                         expected=sorted(spec.collected_include), actual=sorted(collected))
        else:
            problem = subset_problem(spec.collected_include, collected)
            checks.check(problem is None, (*loc, "collected_include"), f"collected data differs: {problem}",
                         expected=short(spec.collected_include, 400), actual=short(collected, 400))
    if spec.collected_keys is not None:
        checks.check(sorted(collected) == sorted(spec.collected_keys), (*loc, "collected_keys"),
                     "collected fields differ", expected=sorted(spec.collected_keys), actual=sorted(collected))
    if spec.handoffs is not None:
        got = [(h[0], h[1]) for h in handoffs]
        want = [(h.from_, h.to) for h in spec.handoffs]
        if checks.check(got == want, (*loc, "handoffs"), "stored handoffs differ", expected=want, actual=got) and not live:
            for i, (h, r) in enumerate(zip(spec.handoffs, handoffs, strict=True)):
                if "reason" in h.model_fields_set:
                    checks.check(h.reason == r[2], (*loc, "handoffs", i, "reason"), "handoff reason differs",
                                 expected=repr(h.reason), actual=repr(r[2]))
