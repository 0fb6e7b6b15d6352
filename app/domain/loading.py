"""Reading configuration documents from YAML files, with errors that name the file and field.

Used by the seed (`app.seed`) and by the fixed PTE config source (`app.store.sources`); both
keep their documents under `prompts/`. A document is validated by the same pydantic
models the admin API uses, so a file that loads here is accepted by the API too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from app.domain.field_errors import field_errors, format_location
from app.domain.models import AgentConfigInput

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(ValueError):
    """A configuration file is unreadable or invalid; the message names file and field."""

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)
        self.detail = message


def validation_message(err: ValidationError) -> str:
    """One line per problem: `field.path: message`."""
    return "; ".join(f"{format_location(loc)}: {msg}" for loc, msg in field_errors(err))


def read_yaml(path: Path) -> Any:
    """Parse one YAML document; syntax errors carry the line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigFileError(path, f"cannot read file ({e.strerror or e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigFileError(path, f"invalid YAML at {where}{e.problem}") from None
    except yaml.YAMLError as e:
        raise ConfigFileError(path, f"invalid YAML: {e}") from None


def validate_document(path: Path, doc: Any, model: type[M], what: str) -> M:
    if not isinstance(doc, dict):
        raise ConfigFileError(
            path, f"expected a mapping ({what}) at the top level, got {type(doc).__name__}"
        )
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise ConfigFileError(path, f"invalid {what}: {validation_message(e)}") from None


def load_agent_file(path: Path) -> AgentConfigInput:
    """One `AgentConfigInput` document from a YAML file."""
    return validate_document(path, read_yaml(path), AgentConfigInput, "agent config")
