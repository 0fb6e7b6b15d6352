"""Failures with scenario lines, defined in `app.domain.scenario.report`; re-exported for the sim."""

from app.domain.scenario.report import (
    Checks as Checks,
    Failure as Failure,
    Loc as Loc,
)
