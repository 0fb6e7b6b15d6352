"""ruff (lint and import order) and mypy (strict, on app/) run with the test suite, so a
violation fails `uv run pytest` and CI, not only an editor. Both read their settings
from pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )


def test_ruff_finds_nothing() -> None:
    res = _run("ruff", "check", "--no-cache", "--output-format", "concise", "app", "sim", "tests")
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_is_clean_on_app() -> None:
    res = _run("mypy")  # files, strictness and plugins: [tool.mypy] in pyproject.toml
    assert res.returncode == 0, res.stdout + res.stderr
