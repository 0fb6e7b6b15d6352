"""Post-call analysis: what an agent asks of it (`AnalysisConfig`, part of the versioned
config) and what is stored on the session record (`SessionAnalysis`).

Why a separate record section with a status: the analysis runs after the call, off the
call's path, and may take seconds or fail; the call's record is complete without it. A
`pending` analysis is written in the same batch as the session's end, so it survives a
crash and is picked up by whichever process claims it first (`ConfigStore.claim_analyses`).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from app.domain.schema_admission import SchemaRefused, check_schema
from app.domain.values import INT, NUMBER, UtcDatetime

MAX_ANALYSIS_PROMPT_CHARS = 4000
EXTRACTED_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


def check_extraction_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of the fields to extract: an object schema the safe validator can
    evaluate (`schema_admission`), checked at write so a bad one is a 422 naming it."""
    try:
        check_schema(schema)
    except SchemaRefused as e:
        raise ValueError(str(e)) from None
    if schema.get("type") != "object":
        raise ValueError('the extraction schema must have "type": "object"')
    props = schema.get("properties", {})
    if not props:
        raise ValueError("the extraction schema must name at least one property to extract")
    for name in props:
        if not re.fullmatch(EXTRACTED_NAME_RE, name):
            raise ValueError(f"property name {name!r} must match {EXTRACTED_NAME_RE}")
    for name in schema.get("required", []):
        if name not in props:
            raise ValueError(f"required field {name!r} is not in properties")
    return schema


_EXTRACTION_DOC: dict[str, Any] = {
    "type": "object",
    "description": 'A JSON Schema (draft 2020-12) with "type": "object" and at least one property: '
    "the fields the analysis extracts from the transcript.",
    "required": ["type", "properties"],
    "properties": {
        "type": {"const": "object"},
        "properties": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": EXTRACTED_NAME_RE}},
        "required": {"type": "array", "items": {"type": "string"}},
    },
}

ExtractionSchema = Annotated[
    dict[str, Any], AfterValidator(check_extraction_schema), WithJsonSchema(_EXTRACTION_DOC)
]


class AnalysisConfig(BaseModel):
    """Per-agent post-call analysis. At least one of the three tasks must be set."""

    model_config = ConfigDict(extra="forbid")

    summary_prompt: str | None = Field(
        None, min_length=1, max_length=MAX_ANALYSIS_PROMPT_CHARS,
        description="How to summarise the call, e.g. 'Two sentences: why they called, how it ended.'",
    )
    success_criteria: str | None = Field(
        None, min_length=1, max_length=MAX_ANALYSIS_PROMPT_CHARS,
        description="What counts as a successful call; the analysis answers pass or fail with a reason.",
    )
    extraction_schema: ExtractionSchema | None = Field(
        None, description="Fields the live call did not collect, extracted from the transcript (JSON Schema)."
    )
    model: str | None = Field(
        None, min_length=1, max_length=200,
        description="The model to analyse with; default ANALYSIS_MODEL, else the agent's own model.",
    )
    timeout_s: Annotated[float, Field(gt=0, le=300), NUMBER] = Field(30.0, description="Seconds per attempt.")
    max_attempts: Annotated[int, Field(ge=1, le=5), INT] = Field(3, description="Model calls before the analysis is failed.")

    @model_validator(mode="after")
    def _something_to_do(self) -> AnalysisConfig:
        if self.summary_prompt is None and self.success_criteria is None and self.extraction_schema is None:
            raise ValueError("analysis needs at least one of summary_prompt, success_criteria, extraction_schema")
        return self


class AnalysisStatus(str, Enum):
    pending = "pending"
    done = "done"
    failed = "failed"


class SuccessVerdict(BaseModel):
    passed: bool
    reason: str


class AnalysisRequest(BaseModel):
    """What was asked, fixed when the session ended: the settings of the agent version
    that ran (so a later edit or delete of the agent does not change or lose it), the
    model and the endpoint to ask."""

    agent_id: str
    config_version: int | None = None
    settings: AnalysisConfig
    model: str
    base_url: str | None = None


class SessionAnalysis(BaseModel):
    """The analysis section of a session record."""

    status: AnalysisStatus
    request: AnalysisRequest
    requested_at: UtcDatetime
    finished_at: UtcDatetime | None = None
    attempts: int = Field(0, ge=0, description="Model calls made by the run that finished it.")
    summary: str | None = None
    success: SuccessVerdict | None = None
    extracted: dict[str, Any] | None = None
    error: str | None = Field(None, description="Why the analysis failed (status failed).")
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = Field(None, description="Of the analysis calls, at the price table's rates.")

    def finished(self, status: Literal["done", "failed"], at: datetime, **fields: Any) -> SessionAnalysis:
        return self.model_copy(update={"status": AnalysisStatus(status), "finished_at": at, **fields})
