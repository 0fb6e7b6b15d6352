"""The JSON Schema validator for untrusted data: linear-time regexes, bounded cost.

Why: jsonschema evaluates `pattern` and `patternProperties` with Python's backtracking
`re`. A schema pattern such as `^(a+)+$` and a 34-character value spoken by a caller
stalled the event loop that carries every live call (issue 21). Every evaluation of a
schema against untrusted data (record tools, HTTP tool arguments) and the write-time
schema rules (`schema_admission`) use this module:

- `SafeValidator`: draft 2020-12 with every regex on RE2, a linear-time engine
  (`pattern`, `patternProperties`, the pattern matching inside `additionalProperties`,
  `format: regex`), and `uniqueItems` by hashing (jsonschema compares objects
  pairwise). RE2 has no backreferences or lookaround.
- `value_problems`: validates one value within bounds: its size and depth are capped,
  and the evaluation stops at `VALIDATION_BUDGET_S`. The write-time caps bound a
  schema's cost, but cost times value size can still reach seconds (an `items` schema
  of a few hundred subschemas against thousands of elements), so the budget is what
  guarantees an answer; callers on an event loop run it in a worker thread.
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import jsonschema
import re2
import referencing.exceptions
from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from referencing import Registry

MAX_VALUE_BYTES = 16 * 1024
"""A value validated against a schema (tool arguments), as compact UTF-8 JSON."""
MAX_VALUE_DEPTH = 32
VALIDATION_BUDGET_S = 0.25
"""Time one validation may run before it is abandoned (the value is then refused)."""
MAX_REGEX_MEMORY = 1 << 20
"""RE2's memory budget per pattern (program and DFA cache); a larger pattern is refused."""
MAX_PROBLEMS = 5
MAX_PROBLEM_CHARS = 300

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = MAX_REGEX_MEMORY
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported to whoever wrote it, not to stderr

NO_RETRIEVAL = Registry()
"""The registry validators resolve `$ref`s in: the schema itself and nothing else.
jsonschema's default registry fetches unknown `http(s)` references over the network."""


# --------------------------------------------------------------------------- regexes


class UnsupportedPattern(ValueError):
    """A pattern RE2 cannot compile (backreferences, lookaround, too large)."""


def _is_hex(s: str) -> bool:
    return bool(s) and all(ch in "0123456789abcdefABCDEF" for ch in s)


def to_re2(pattern: str) -> str:
    r"""JSON Schema patterns are ECMA-262; RE2 spells a few escapes differently:
    `\uXXXX` and `\u{X...}` become `\x{...}`, and `\Z` (Python's end of text, accepted
    before RE2 was) becomes `\z`. Everything else passes through unchanged."""
    if "\\" not in pattern:
        return pattern
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] != "\\" or i + 1 == n:
            out.append(pattern[i])
            i += 1
            continue
        nxt = pattern[i + 1]
        if nxt == "u" and i + 6 <= n and _is_hex(pattern[i + 2 : i + 6]):
            out.append("\\x{" + pattern[i + 2 : i + 6] + "}")
            i += 6
        elif nxt == "u" and pattern.startswith("{", i + 2) and (end := pattern.find("}", i + 3)) > 0 \
                and _is_hex(pattern[i + 3 : end]):
            out.append("\\x{" + pattern[i + 3 : end] + "}")
            i = end + 1
        elif nxt == "Z":
            out.append("\\z")
            i += 2
        else:
            out.append(pattern[i : i + 2])
            i += 2
    return "".join(out)


@functools.lru_cache(maxsize=128)
def compile_pattern(pattern: str) -> Any:
    """The RE2 program for a JSON Schema pattern, or `UnsupportedPattern` saying why not.

    Cached: a validator evaluates the same few patterns for every value, and building
    a program can take milliseconds."""
    try:
        return re2.compile(to_re2(pattern), _RE2_OPTIONS)
    except re2.error as e:
        reason = e.args[0] if e.args else "RE2 cannot compile it"
        raise UnsupportedPattern(reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)) from None
    except UnicodeEncodeError:
        raise UnsupportedPattern("the pattern is not valid Unicode") from None


def pattern_search(pattern: str, text: str) -> bool:
    """`re.search` semantics on RE2 (a lone surrogate in `text` matches no character)."""
    program = compile_pattern(pattern)
    try:
        return program.search(text) is not None
    except UnicodeEncodeError:
        return program.search(text.encode("utf-8", "surrogatepass")) is not None


def _matches(pattern: str, key: str) -> bool:
    try:
        return pattern_search(pattern, key)
    except UnsupportedPattern:
        return False


# ------------------------------------------------------------------------- keywords
# Same semantics and messages as jsonschema 4.26's own (jsonschema/_keywords.py), with
# RE2 in place of `re` and hashing in place of pairwise comparison.

Keyword = Callable[[Any, Any, Any, Mapping[str, Any]], Iterator[ValidationError] | None]


def _pattern(validator: Any, patrn: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        matched = pattern_search(patrn, instance)
    except UnsupportedPattern as e:
        yield ValidationError(f"pattern {patrn!r} cannot be evaluated: {e}")
        return
    if not matched:
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(
    validator: Any, pattern_properties: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for k, v in instance.items():
            if _matches(pattern, k):
                yield from validator.descend(v, subschema, path=k, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [k for k in instance if k not in properties and not any(_matches(p, k) for p in patterns)]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        names = sorted(extras, key=str)
        if patterns:
            verb = "does" if len(names) == 1 else "do"
            regexes = ", ".join(repr(p) for p in sorted(patterns))
            yield ValidationError(f"{', '.join(repr(n) for n in names)} {verb} not match any of the regexes: {regexes}")
        else:
            verb = "was" if len(names) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({', '.join(repr(n) for n in names)} {verb} unexpected)"
            )


def _frozen(value: Any) -> Any:
    """A hashable form under JSON Schema equality: 1 == 1.0, but true != 1."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list | tuple):
        return ("array", tuple(_frozen(v) for v in value))
    if isinstance(value, Mapping):
        return ("object", frozenset((k, _frozen(v)) for k, v in value.items()))
    return ("other", repr(value))


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if unique and validator.is_type(instance, "array") and len({_frozen(v) for v in instance}) != len(instance):
        yield ValidationError(f"{instance!r} has non-unique elements")


class ValidationBudgetExceeded(Exception):
    """A validation ran past its deadline and was abandoned."""


_DEADLINE: ContextVar[float | None] = ContextVar("jsonschema_safe_deadline", default=None)


def _budgeted(keyword: Keyword) -> Keyword:
    """Every keyword first checks the running validation's deadline: the one place a
    validation can be stopped, since jsonschema descends by calling keywords."""

    def check(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Any:
        deadline = _DEADLINE.get()
        if deadline is not None and time.monotonic() > deadline:
            raise ValidationBudgetExceeded
        return keyword(validator, value, instance, schema)

    return check


FORMAT_CHECKER = FormatChecker(formats=())
FORMAT_CHECKER.checkers = dict(Draft202012Validator.FORMAT_CHECKER.checkers)


def _is_regex(instance: object) -> bool:
    """`format: regex` means "a pattern we can evaluate": one RE2 compiles."""
    if isinstance(instance, str):
        compile_pattern(instance)
    return True


FORMAT_CHECKER.checks("regex", raises=UnsupportedPattern)(_is_regex)


_OVERRIDES: dict[str, Keyword] = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}
SafeValidator = jsonschema.validators.extend(
    Draft202012Validator,
    {name: _budgeted(_OVERRIDES.get(name, fn)) for name, fn in Draft202012Validator.VALIDATORS.items()},
    format_checker=FORMAT_CHECKER,
)
"""Draft 2020-12 with linear-time regexes and a deadline; build with `validator_for`."""


def validator_for(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    """A validator for untrusted values: RE2 patterns, formats checked, no remote `$ref`s."""
    return SafeValidator(dict(schema), format_checker=FORMAT_CHECKER, registry=NO_RETRIEVAL)


# ------------------------------------------------------------------------- values


def depth_and_count(value: Any, max_depth: int, max_count: int) -> tuple[int, int]:
    """Nesting depth and number of JSON values, without recursion (a hostile value may
    be nested deeper than Python's stack); stops once either passes its cap."""
    deepest, count = 0, 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        deepest = max(deepest, depth)
        if depth > max_depth or count > max_count:
            break
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list | tuple):
            stack.extend((v, depth + 1) for v in node)
    return deepest, count


def value_problem(value: Any) -> str | None:
    """Why a value is too big to validate, or None."""
    depth, count = depth_and_count(value, MAX_VALUE_DEPTH, MAX_VALUE_BYTES)
    if depth > MAX_VALUE_DEPTH:
        return f"the value is nested more than {MAX_VALUE_DEPTH} levels deep"
    if count > MAX_VALUE_BYTES or len(
        json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode(errors="replace")
    ) > MAX_VALUE_BYTES:
        return f"the value is larger than {MAX_VALUE_BYTES} bytes"
    return None


def value_problems(
    validator: jsonschema.protocols.Validator, value: Any, budget_s: float = VALIDATION_BUDGET_S
) -> list[str]:
    """Readable reasons `value` is invalid (best first, at most `MAX_PROBLEMS`); [] if valid.

    Bounded: an oversized value is refused before validation, the first few errors are
    enough to tell the model what to fix, and a validation past `budget_s` is abandoned
    and reported as a problem. CPU-bound for up to `budget_s`: run it off the event loop."""
    if (too_big := value_problem(value)) is not None:
        return [too_big]
    token = _DEADLINE.set(time.monotonic() + budget_s)
    try:
        errors = list(itertools.islice(validator.iter_errors(value), 4 * MAX_PROBLEMS))
    except ValidationBudgetExceeded:
        return [f"the value could not be checked within {budget_s * 1000:.0f} ms; ask for a shorter or simpler value"]
    except (referencing.exceptions.Unresolvable, RecursionError) as e:
        # Stored schemas cannot have these (schema_admission refuses them); a schema
        # built another way is reported, not raised into the conversation.
        return [f"the schema cannot be evaluated ({type(e).__name__})"]
    finally:
        _DEADLINE.reset(token)
    out = []
    for error in sorted(errors, key=jsonschema.exceptions.relevance)[:MAX_PROBLEMS]:
        where = "/".join(str(p) for p in error.absolute_path)
        out.append((f"{where}: {error.message}" if where else error.message)[:MAX_PROBLEM_CHARS])
    return out
