"""Python warnings go through logging: one line, formatted like every other line (JSON in
`start`), redacted like every other line."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from app.logging_setup import configure_logging
from app.settings import Settings

SECRET = "sk-a-key-that-must-not-leak-0123456789"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, factory = list(root.handlers), root.level, logging.getLogRecordFactory()
    with warnings.catch_warnings():  # restores warnings.showwarning and the filters
        warnings.simplefilter("always")
        # an earlier test's configure_logging left logging's capture "on" while pytest has
        # since put its own showwarning back: start from "off", as a new process does
        logging.captureWarnings(False)
        yield
        logging.captureWarnings(False)
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    logging.setLogRecordFactory(factory)


def _configure(json_logs: bool) -> io.StringIO:
    settings = Settings(_env_file=None, openai_api_key=SecretStr(SECRET))  # type: ignore[call-arg]
    configure_logging(settings, json_logs=json_logs)
    buf = io.StringIO()
    logging.getLogger().handlers[0].stream = buf  # type: ignore[attr-defined]
    return buf


def test_a_warning_is_one_json_log_line_and_redacted(restore_logging: None) -> None:
    buf = _configure(json_logs=True)
    warnings.warn(f"the key {SECRET} is too short", UserWarning, stacklevel=1)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1, lines
    doc = json.loads(lines[0])
    assert doc["level"] == "WARNING" and doc["logger"] == "py.warnings"
    assert doc["msg"].endswith("UserWarning: the key *** is too short")
    assert "test_logging.py:" in doc["msg"]  # where it was raised
    assert "warnings.warn(" not in doc["msg"]  # not the quoted source line


def test_a_warning_is_one_text_log_line(restore_logging: None) -> None:
    buf = _configure(json_logs=False)
    warnings.warn("first line\nsecond line", DeprecationWarning, stacklevel=1)
    (line,) = buf.getvalue().splitlines()
    assert " WARNING py.warnings: " in line and line.endswith("DeprecationWarning: first line second line")
