"""Failures: what was expected, what happened, and the scenario line that said so.

Why a collector instead of plain `assert`: a scenario has many independent
expectations (routing, every turn, the stored record); reporting all of them at once
shows whether one bug or several broke a conversation. Each failure carries the
scenario location so pytest's output links straight to the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from app.domain.field_errors import format_location
from app.domain.scenario.yamlsrc import LineMap

Loc = tuple[int | str, ...]


@dataclass(frozen=True)
class Failure:
    loc: Loc
    where: str
    """`file:line` of the expectation in the scenario."""
    message: str
    expected: str | None = None
    actual: str | None = None
    context: str | None = None
    """Extra detail, e.g. every event of the turn with the failing one marked."""

    def render(self) -> str:
        out = [f"{self.where}: {format_location(self.loc)}: {self.message}"]
        if self.expected is not None:
            out.append(f"    expected: {self.expected}")
        if self.actual is not None:
            out.append(f"    actual:   {self.actual}")
        if self.context:
            out.extend("    " + line for line in self.context.splitlines())
        return "\n".join(out)


@dataclass
class Checks:
    """Collects failures for one scenario run."""

    lines: LineMap = field(default_factory=lambda: LineMap(Path("<scenario>")))
    failures: list[Failure] = field(default_factory=list)
    notes: list[Failure] = field(default_factory=list)
    """What was not checked, and why (live mode's `intent:` with no judge): reported, not failed."""

    def note(self, loc: Loc, message: str) -> None:
        self.notes.append(Failure(loc=tuple(loc), where=self.lines.where(loc), message=message))

    def fail(
        self,
        loc: Loc,
        message: str,
        *,
        expected: object = None,
        actual: object = None,
        context: str | None = None,
    ) -> None:
        self.failures.append(
            Failure(
                loc=tuple(loc),
                where=self.lines.where(loc),
                message=message,
                expected=None if expected is None else str(expected),
                actual=None if actual is None else str(actual),
                context=context,
            )
        )

    def check(
        self, ok: bool, loc: Loc, message: str, *, expected: object = None, actual: object = None,
        context: str | None = None,
    ) -> bool:
        if not ok:
            self.fail(loc, message, expected=expected, actual=actual, context=context)
        return ok

    @property
    def count(self) -> int:
        return len(self.failures)
