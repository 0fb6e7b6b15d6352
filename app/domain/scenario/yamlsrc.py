"""YAML loading that remembers where every value came from.

Why: a scenario that fails must point at the line that said what was expected, and a
typo in a scenario must be reported at its line, not as a bare pydantic location. PyYAML
keeps line marks on the composed node tree (`yaml.compose`), so we construct the data
from that tree ourselves and record `path -> line` for every mapping key and sequence
item on the way. Duplicate keys (which PyYAML silently collapses) are errors here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Loc = tuple[int | str, ...]
"""A path into the document: mapping keys and sequence indices."""


class YamlSourceError(ValueError):
    """The file is not valid YAML (or has duplicate keys); the message has file:line."""

    def __init__(self, path: Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.detail = message


@dataclass(frozen=True)
class LineMap:
    """1-based line of each location; `line(loc)` falls back to the nearest ancestor."""

    path: Path
    lines: dict[Loc, int] = field(default_factory=dict)

    def line(self, loc: Sequence[int | str]) -> int:
        key = tuple(loc)
        while key:
            hit = self.lines.get(key)
            if hit is not None:
                return hit
            key = key[:-1]
        return self.lines.get((), 1)

    def where(self, loc: Sequence[int | str]) -> str:
        """`path:line` for a location, as editors and pytest link it."""
        return f"{self.path}:{self.line(loc)}"


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML has it (~10x faster; same nodes and line marks)."""


def load_yaml(path: Path) -> tuple[Any, LineMap]:
    """Parse one YAML document; returns the plain data and its line map."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise YamlSourceError(path, None, f"cannot read file ({e.strerror or e})") from None
    return loads_yaml(text, path)


def loads_yaml(text: str, path: Path = Path("<string>")) -> tuple[Any, LineMap]:
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        raise YamlSourceError(path, mark.line + 1 if mark else None, f"invalid YAML: {e.problem}") from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (control characters)
        line = text.count("\n", 0, max(e.position, 0)) + 1
        raise YamlSourceError(path, line, f"invalid YAML: character #x{e.character:04x} is not allowed") from None
    lines: dict[Loc, int] = {}
    if node is None:
        return None, LineMap(path, lines)
    lines[()] = node.start_mark.line + 1
    builder = _Builder(path, lines)
    try:
        data = builder.build(node, ())
    finally:
        builder.loader.dispose()
    return data, LineMap(path, lines)


class _Builder:
    def __init__(self, path: Path, lines: dict[Loc, int]) -> None:
        self.path = path
        self.lines = lines
        # Scalars get the SafeLoader's implicit typing (ints, bools, null, floats...).
        self.loader = yaml.SafeLoader("")

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        return _build(node, loc, self)


def _build(node: yaml.Node, loc: Loc, b: _Builder) -> Any:
    lines, path = b.lines, b.path
    if isinstance(node, yaml.ScalarNode):
        return b.loader.construct_object(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        out_list = []
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = item.start_mark.line + 1
            out_list.append(_build(item, (*loc, i), b))
        return out_list
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlSourceError(path, key_node.start_mark.line + 1, "merge keys (<<) are not supported")
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlSourceError(path, key_node.start_mark.line + 1, "mapping keys must be scalars")
            key: int | str = b.loader.construct_object(key_node, deep=True)
            if key in out:
                raise YamlSourceError(path, key_node.start_mark.line + 1, f"duplicate key {key!r}")
            lines[(*loc, key)] = key_node.start_mark.line + 1
            out[key] = _build(value_node, (*loc, key), b)
        return out
    raise YamlSourceError(path, node.start_mark.line + 1, f"unsupported YAML node {type(node).__name__}")
