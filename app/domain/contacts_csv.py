"""Campaign contacts from CSV text, all or nothing.

The first line is the header. `phone` (E.164) is required; `timezone` (an IANA zone)
is optional; every other column is a prompt variable of that name, its cell the value
(an empty cell leaves the variable out). A file with any bad row is refused whole, every
bad row reported with its line number and the reasons, so the operator fixes the file
and uploads it again: half a campaign, with the rest silently dropped, is the worse
surprise.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

from pydantic import ValidationError

from app.domain.calls import ContactInput

MAX_REPORTED_ROWS = 50
_VAR = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int
    """1-based line of the file (the header is line 1)."""
    message: str


class BadCsv(Exception):
    def __init__(self, problems: list[RowProblem], total_bad: int) -> None:
        super().__init__(f"{total_bad} bad row(s)")
        self.problems = problems
        self.total_bad = total_bad


def parse_contacts(text: str) -> list[ContactInput]:
    """Every row as a contact, or `BadCsv` listing (up to 50 of) the bad rows."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise BadCsv([RowProblem(1, "the file is empty (a header line with a phone column is required)")], 1) from None
    except csv.Error as e:
        raise BadCsv([RowProblem(1, f"not CSV: {e}")], 1) from None
    head_problems = []
    if "phone" not in header:
        head_problems.append("no phone column")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        head_problems.append(f"duplicate column(s): {', '.join(dupes)}")
    bad_names = [h for h in header if h not in ("phone", "timezone") and not _VAR.match(h)]
    if bad_names:
        head_problems.append(f"column(s) {', '.join(repr(b) for b in bad_names[:5])} are not variable names")
    if head_problems:
        raise BadCsv([RowProblem(1, "; ".join(head_problems))], 1)

    contacts: list[ContactInput] = []
    problems: list[RowProblem] = []
    bad = 0
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank lines (a trailing newline) are not contacts
            if len(row) != len(header):
                bad += 1
                if len(problems) < MAX_REPORTED_ROWS:
                    problems.append(RowProblem(line, f"{len(row)} cells, the header has {len(header)}"))
                continue
            cells = {h: c.strip() for h, c in zip(header, row, strict=True)}
            doc: dict[str, object] = {
                "phone": cells.pop("phone"),
                "variables": {k: v for k, v in cells.items() if k != "timezone" and v},
            }
            if cells.get("timezone"):
                doc["timezone"] = cells["timezone"]
            try:
                contacts.append(ContactInput.model_validate(doc))
            except ValidationError as e:
                bad += 1
                if len(problems) < MAX_REPORTED_ROWS:
                    reasons = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
                    problems.append(RowProblem(line, reasons))
    except csv.Error as e:
        raise BadCsv([RowProblem(reader.line_num, f"not CSV: {e}")], bad + 1) from None
    if bad:
        raise BadCsv(problems, bad)
    if not contacts:
        raise BadCsv([RowProblem(2, "no contacts below the header")], 1)
    return contacts
