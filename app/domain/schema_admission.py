"""What a JSON Schema must be before it is stored (`schema_config`, HTTP tool parameters).

Why these rules (issue 21): schemas are evaluated against what callers say, so their
evaluation cost must be bounded and their evaluation must not crash. Deep schemas hit
RecursionError inside jsonschema (an unhandled 500 at write, a crashed tool call
later), `$ref` loops recursed forever, and a chain of `$ref`s each used twice doubles
the work per link. `check_schema` refuses, naming the place in the schema:

- more than `MAX_SCHEMA_BYTES`, `MAX_SCHEMA_DEPTH` levels of JSON nesting, `MAX_SCHEMA_NODES` JSON values
  or `MAX_SCHEMA_PATTERNS` regexes;
- anything draft 2020-12's meta-schema refuses, and patterns RE2 cannot compile
  (backreferences, lookaround, too large; see `jsonschema_safe`);
- `$ref`s that do not resolve inside the schema, any recursion through `$ref`,
  `$dynamicRef`, and `$id` below the root (it would change what `$ref`s resolve to);
- `unevaluatedProperties` together with `patternProperties` (jsonschema matches that
  combination with Python's `re`, outside the keywords `SafeValidator` replaces);
- more than `MAX_SCHEMA_COST` subschemas to evaluate once `$ref`s are expanded, and
  more than `MAX_SCHEMA_DEPTH` levels of them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import referencing.exceptions
from referencing.jsonschema import DRAFT202012

from app.domain.jsonschema_safe import FORMAT_CHECKER, NO_RETRIEVAL, SafeValidator, depth_and_count

MAX_SCHEMA_BYTES = 64 * 1024
"""A schema as compact UTF-8 JSON."""
MAX_SCHEMA_DEPTH = 32
"""Levels of JSON nesting of a stored schema, and of subschemas once `$ref`s are
followed. jsonschema recurses a few frames per level: past ~100 it raised RecursionError."""
MAX_SCHEMA_NODES = 4096
"""JSON values (objects, arrays, scalars) in one schema."""
MAX_SCHEMA_PATTERNS = 128
"""`pattern`s and `patternProperties` keys in one schema (each is compiled at write)."""
MAX_SCHEMA_COST = 2048
"""Subschemas one validation may visit: each `$ref` target counts once per reference,
and subschemas beside `unevaluated*` twice (it evaluates them again)."""


class SchemaRefused(ValueError):
    """A schema that cannot be stored; `where` is the place in it (a JSON path)."""

    def __init__(self, path: Any, message: str) -> None:
        where = "/".join(str(p) for p in path) or "(root)"
        self.where = where if len(where) <= 200 else "…" + where[-199:]
        super().__init__(message.replace("{where}", self.where, 1))


_SINGLE = ("additionalProperties", "unevaluatedProperties", "propertyNames", "items", "contains",
           "unevaluatedItems", "not", "if", "then", "else", "contentSchema")
_MAPS = ("properties", "patternProperties", "dependentSchemas")
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_DEFS = ("$defs", "definitions")
_UNEVALUATED = ("unevaluatedProperties", "unevaluatedItems")


def _children(node: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """The subschemas a validation may evaluate under `node` (draft 2020-12
    applicators), with their paths; `$defs` are evaluated only through a `$ref`."""
    for kw in _SINGLE:
        if kw in node:
            yield (kw,), node[kw]
    for kw in _MAPS:
        if isinstance(node.get(kw), Mapping):
            for name, sub in node[kw].items():
                yield (kw, name), sub
    for kw in _LISTS:
        if isinstance(node.get(kw), list):
            for i, sub in enumerate(node[kw]):
                yield (kw, str(i)), sub


def _subschemas(schema: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    """Every object subschema (definitions included) with its path, without recursion."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, Mapping):
            continue
        yield path, node
        stack.extend(((*path, *keys), child) for keys, child in _children(node))
        for kw in _DEFS:
            if isinstance(node.get(kw), Mapping):
                stack.extend(((*path, kw, name), d) for name, d in node[kw].items())


class _RefWalk:
    """Follows every `$ref`: each must resolve inside the schema and none may lead back
    to a schema containing it; measures the tree they expand to.

    Recursive schemas are refused outright, not only unguarded loops: a guarded one (a
    tree type) validates in time and stack proportional to the value's depth, which
    the caller controls."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.root = NO_RETRIEVAL.resolver_with_root(DRAFT202012.create_resource(schema))
        self.done: dict[int, tuple[int, int]] = {}
        """id(subschema) -> (cost, height) of its expansion. By identity: the schema is
        one JSON document and `$id` is only allowed at its root, so a subschema's
        `$ref`s resolve the same way however it is reached."""
        self.open: set[int] = set()

    def walk(self, node: Any, resolver: Any, path: tuple[str, ...], depth: int) -> tuple[int, int]:
        if not isinstance(node, Mapping):
            return 1, 1
        key = id(node)
        if key in self.open:
            raise SchemaRefused(path, "$ref at {where} leads back to a schema that contains it; recursive "
                                      "schemas are not supported")
        if key not in self.done:
            self.open.add(key)
            self.done[key] = self._expand(node, resolver, path, depth)
            self.open.discard(key)
        cost, height = self.done[key]
        if depth + height > MAX_SCHEMA_DEPTH:
            raise SchemaRefused(path, f"subschemas nest more than {MAX_SCHEMA_DEPTH} levels deep once the $refs "
                                      "under {where} are followed")
        return cost, height

    def _expand(self, node: Mapping[str, Any], resolver: Any, path: tuple[str, ...], depth: int) -> tuple[int, int]:
        if depth > MAX_SCHEMA_DEPTH:
            raise SchemaRefused(path, f"subschemas nest more than {MAX_SCHEMA_DEPTH} levels deep at {{where}}")
        if "$dynamicRef" in node:
            raise SchemaRefused((*path, "$dynamicRef"), "$dynamicRef at {where} is not supported; use $ref")
        refs: list[tuple[int, int]] = []
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                resolved = resolver.lookup(ref)
            except referencing.exceptions.Unresolvable:
                raise SchemaRefused((*path, "$ref"), f"$ref {ref[:200]!r} at {{where}} does not resolve inside "
                                                     "this schema (only references within it are allowed)") from None
            refs.append(self.walk(resolved.contents, resolved.resolver, (*path, "$ref"), depth + 1))
        children = [self.walk(child, resolver, (*path, *keys), depth + 1) for keys, child in _children(node)]
        repeat = 2 if any(kw in node for kw in _UNEVALUATED) else 1
        cost = 1 + sum(c for c, _ in refs) + repeat * sum(c for c, _ in children)
        height = 1 + max((h for _, h in refs + children), default=0)
        for kw in _DEFS:  # unused definitions must be sound too, but cost nothing
            if isinstance(node.get(kw), Mapping):
                for name, definition in node[kw].items():
                    self.walk(definition, resolver, (*path, kw, name), depth + 1)
        if cost > MAX_SCHEMA_COST:
            raise SchemaRefused(path, f"the schema at {{where}} expands to more than {MAX_SCHEMA_COST} subschemas "
                                      "to evaluate once its $refs are followed")
        return cost, height


_META = SafeValidator(SafeValidator.META_SCHEMA, format_checker=FORMAT_CHECKER)
"""Draft 2020-12's meta-schema, with `format: regex` meaning "RE2 compiles it"."""
_ADMITTED: dict[str, None] = {}
"""Canonical JSON of schemas that passed (bounded, insertion order): one update
validates the same schema several times, and the meta-schema check is the slow part."""


def _meta_check(schema: Any) -> None:
    # The first few errors, best first: enough to name one, without compiling every
    # bad pattern of a schema only to report the first.
    errors = list(itertools.islice(_META.iter_errors(schema), 8))
    for error in sorted(errors, key=jsonschema.exceptions.relevance)[:1]:
        path = list(error.absolute_path)
        if error.validator == "format" and error.validator_value == "regex":
            if path[-1:] != ["pattern"]:
                path.append(str(error.instance))  # a patternProperties key
            raise SchemaRefused(path, f"pattern {str(error.instance)[:200]!r} at {{where}} is not supported: "
                                      f"{error.cause or 'RE2 cannot compile it'}. Patterns are evaluated with RE2 "
                                      "(linear time), which has no backreferences or lookaround")
        raise SchemaRefused(path, f"invalid JSON Schema at {{where}}: {error.message[:300]}")


def check_schema(schema: Any) -> None:
    """Refuse (`SchemaRefused`, naming the place) a schema we cannot evaluate safely."""
    depth, count = depth_and_count(schema, MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES)
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaRefused((), f"the schema is nested more than {MAX_SCHEMA_DEPTH} levels deep")
    if count > MAX_SCHEMA_NODES:
        raise SchemaRefused((), f"the schema has more than {MAX_SCHEMA_NODES} JSON values")
    # Bytes after depth: serialising a deeply nested document recursed past the stack.
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(canonical.encode(errors="replace")) > MAX_SCHEMA_BYTES:
        raise SchemaRefused((), f"the schema exceeds {MAX_SCHEMA_BYTES} bytes")
    if canonical in _ADMITTED:
        return
    nodes = list(_subschemas(schema)) if isinstance(schema, Mapping) else []
    patterns = sum(isinstance(n.get("pattern"), str) for _, n in nodes) + sum(
        len(n["patternProperties"]) for _, n in nodes if isinstance(n.get("patternProperties"), Mapping))
    if patterns > MAX_SCHEMA_PATTERNS:
        raise SchemaRefused((), f"the schema has more than {MAX_SCHEMA_PATTERNS} patterns")
    _meta_check(schema)
    if not nodes:
        return
    for path, node in nodes:
        if path and "$id" in node:
            raise SchemaRefused((*path, "$id"), "$id at {where}: only the schema's root may have an $id")
    if any("unevaluatedProperties" in n for _, n in nodes) and any("patternProperties" in n for _, n in nodes):
        raise SchemaRefused((), "unevaluatedProperties cannot be combined with patternProperties: jsonschema "
                                "matches that combination with a backtracking regex engine")
    walk = _RefWalk(schema)
    walk.walk(schema, walk.root, (), 0)
    if len(_ADMITTED) >= 1024:
        _ADMITTED.pop(next(iter(_ADMITTED)))
    _ADMITTED[canonical] = None
