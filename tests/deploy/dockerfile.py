"""Just enough Dockerfile and .dockerignore parsing for the deploy tests to check the
image's contract against the code (no Docker engine needed)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Instruction:
    cmd: str  # upper-case keyword
    args: str  # the rest, continuation lines joined
    line: int

    def exec_form(self) -> list[str] | None:
        """`["a", "b"]` arguments as a list (None for the shell form)."""
        text = self.args
        for opt in re.findall(r"--\S+=\S+\s+", text):  # HEALTHCHECK options precede CMD
            text = text.replace(opt, "", 1)
        text = text.strip()
        if text.startswith("CMD "):
            text = text[4:].strip()
        if text.startswith("["):
            return json.loads(text)
        return None


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]

    def one(self, cmd: str) -> Instruction:
        found = self.all(cmd)
        assert len(found) == 1, f"expected one {cmd} in stage {self.name}, found {len(found)}"
        return found[0]

    def env(self) -> dict[str, str]:
        """ENV key=value pairs (later ones win), values unquoted, `${X}` left as is."""
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for tok in shlex.split(ins.args):
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    out[k] = v
        return out


@dataclass
class Dockerfile:
    args: dict[str, str]  # global ARGs (before the first FROM) and their defaults
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Instructions with `\\` continuations joined and comment lines dropped."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comments inside a continued instruction
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        out.append((start, " ".join(p for p in buf if p)))
        buf = []
    return out


def parse(path: Path = REPO / "Dockerfile") -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, text in logical_lines(path.read_text()):
        cmd, _, rest = text.partition(" ")
        cmd = cmd.upper()
        if cmd == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=parts[0]))
        elif cmd == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k.strip()] = v.strip()
        elif stages:
            stages[-1].instructions.append(Instruction(cmd, rest.strip(), line))
    return Dockerfile(args=args, stages=stages)


def resolve(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], m[0]), value)


# ------------------------------------------------------------------------ .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.find("]", i)
            out += pattern[i : j + 1]
            i = j
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


@dataclass
class DockerIgnore:
    """Docker's rules: patterns in order, the last that matches a path (or one of its
    parent directories) decides; `!` re-includes."""

    rules: list[tuple[bool, str, re.Pattern[str]]]

    @classmethod
    def load(cls, path: Path = REPO / ".dockerignore") -> DockerIgnore:
        rules = []
        for raw in path.read_text().splitlines():
            p = raw.strip()
            if not p or p.startswith("#"):
                continue
            negate = p.startswith("!")
            p = (p[1:].strip() if negate else p).strip("/")
            rules.append((negate, p, _pattern_regex(p)))
        return cls(rules)

    def excluded(self, rel: str) -> bool:
        parts = rel.strip("/").split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for negate, _, rx in self.rules:
            if any(rx.match(c) for c in candidates):
                result = not negate
        return result

    def context_files(self, root: Path = REPO) -> list[str]:
        """The files `docker build` would send. Like Docker, an excluded directory is
        entered only if a `!` pattern could re-include something below it."""
        out: list[str] = []

        def walk(d: Path, rel: str) -> None:
            for child in sorted(d.iterdir()):
                r = f"{rel}/{child.name}" if rel else child.name
                if child.is_dir() and not child.is_symlink():
                    if self.excluded(r) and not any(
                        neg and text.startswith(r + "/") for neg, text, _ in self.rules
                    ):
                        continue
                    walk(child, r)
                elif not self.excluded(r):
                    out.append(r)

        walk(root, "")
        return out
