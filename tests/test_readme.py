"""README.md stays true: every setting documented, the two set-up commands present."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    table = "\n".join(line for line in README.splitlines() if line.startswith("|"))
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    missing = sorted(name.upper() for name in Settings.model_fields if name.upper() not in documented)
    assert not missing, f"README configuration table lacks: {', '.join(missing)}"


def test_the_two_setup_commands() -> None:
    assert "uv run python -m app dev" in README
    assert "uv run pytest" in README


def test_every_event_type_is_documented() -> None:
    from app.domain.events import EVENT_TYPES

    missing = sorted(name for name in EVENT_TYPES if f"`{name}`" not in README)
    assert not missing, f"README lacks the event type(s): {', '.join(missing)}"
