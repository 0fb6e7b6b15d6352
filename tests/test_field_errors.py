"""Validation messages read as their validators wrote them, at the field they are about
(`app.domain.field_errors`), wherever they surface: API (tests/api), config files
(tests/test_seed.py), scenarios (sim/tests) and the CLI's settings errors (here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.__main__ import _load_settings
from app.domain import AgentConfigInput
from app.domain.field_errors import field_errors, format_location


def _problems(doc: dict) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as err:
        AgentConfigInput.model_validate(doc)
    return [(format_location(loc), msg) for loc, msg in field_errors(err.value)]


def test_template_problems_are_located_at_their_field() -> None:
    doc = {
        "agent_id": "a-1", "name": "A",
        "prompt_config": {"instructions": "Help {company} {x.y}", "greeting": "Hi {caller}",
                          "variables": {"company": {}}},
    }
    assert _problems(doc) == [
        ("prompt_config.instructions",
         "placeholder {x.y} is not a plain {name}; write literal braces as {{ and }}"),
        ("prompt_config.greeting",
         "uses undeclared variable(s) caller; declare them under prompt_config.variables"),
    ]


def test_value_errors_lose_pydantics_prefix() -> None:
    doc = {"agent_id": "a-1", "name": "A", "enabled": 1, "prompt_config": {"instructions": "x"}}
    assert _problems(doc) == [("enabled", "Input should be a JSON boolean")]
    doc = {"agent_id": "a-1", "name": "A", "prompt_config": {"instructions": "x"},
           "handoffs": ["a-1", "b-2", "b-2"]}
    assert _problems(doc) == [
        ("handoffs", "an agent cannot hand off to itself"),
        ("handoffs", "handoffs lists an agent twice"),
    ]


def test_settings_errors_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("SESSION_HEARTBEAT_INTERVAL", "40")
    monkeypatch.setenv("SESSION_STALE_AFTER", "60")
    monkeypatch.setenv("PORT", "99999")
    with pytest.raises(SystemExit) as exit_:
        _load_settings()
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert "error: setting PORT: Input should be less than or equal to 65535" in lines
    monkeypatch.setenv("PORT", "8000")
    with pytest.raises(SystemExit):
        _load_settings()
    assert capsys.readouterr().err.splitlines() == [
        "error: settings: SESSION_STALE_AFTER must be at least twice SESSION_HEARTBEAT_INTERVAL"
    ]
