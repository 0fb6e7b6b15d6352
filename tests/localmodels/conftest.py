"""Tests of the real local models (`real/`) need the `local` extra: installed into the
environment when missing (sim/local_models.py), so they always run."""

from __future__ import annotations

from sim.local_models import ensure_local_extra

ensure_local_extra()
