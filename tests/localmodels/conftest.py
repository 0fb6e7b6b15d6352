"""Tests of the real local models (`real/`) need the `local` extra: where it is not
installed they are not collected (never skipped); the report header says so."""

from __future__ import annotations

import pytest

from sim.local_models import NOT_INSTALLED, local_extra_installed

LOCAL_EXTRA = local_extra_installed()
collect_ignore = [] if LOCAL_EXTRA else ["real"]


def pytest_report_header(config: pytest.Config) -> str | None:
    return None if LOCAL_EXTRA else f"tests/localmodels/real: {NOT_INSTALLED}"
