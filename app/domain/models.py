"""The domain model: the one definition the API, the stores and the factory all use.

Every rule about what a valid configuration is lives here, once, as pydantic
validation. The API validates request bodies with these classes, the stores
serialise them (the SQL rows and Mongo documents are envelopes around their JSON),
and the factory builds agents from them.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from enum import Enum
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from app.domain.analysis import AnalysisConfig, SessionAnalysis
from app.domain.schema_admission import SchemaRefused, check_schema
from app.domain.usage import SessionUsage
from app.domain.values import (
    INT as _INT,
    NUMBER as _NUMBER,
    JsonBool,
    JsonNumber,
    UtcDatetime,
    utcnow,
)

SLUG_RE = r"^[a-z0-9][a-z0-9-]{1,62}$"
PURPOSE_RE = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TOOL_NAME_RE = r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$"
VAR_NAME_RE = r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$"

MAX_INSTRUCTIONS_BYTES = 32 * 1024
MAX_TOOLS = 32
MAX_VARIABLE_VALUE_CHARS = 1024
MAX_VARIABLES_BYTES = 8 * 1024

AgentId = Annotated[str, StringConstraints(pattern=SLUG_RE)]
Purpose = Annotated[str, StringConstraints(pattern=PURPOSE_RE)]
ToolName = Annotated[str, StringConstraints(pattern=TOOL_NAME_RE)]

BuiltinToolName = Literal["end_session", "transfer", "record_score"]
"""Built-in tools a config may name; each is implemented in the agents layer's tool
registry (`app.agents.tool_registry`). `record_score`: the PTE examiner's scoring."""
BUILTIN_TOOL_NAMES: tuple[str, ...] = get_args(BuiltinToolName)


MAX_URL_CHARS = 2083


def _url_fits(url: HttpUrl) -> HttpUrl:
    """pydantic caps a URL's *input* length, then normalises it (percent-encoding, IDNA,
    a trailing slash), which can grow it past the cap: such a config was stored and then
    failed validation on every read — one bad write broke listing, routing and the
    worker's cache reload (found by fuzzing). Check the stored form instead."""
    if len(str(url)) > MAX_URL_CHARS:
        raise ValueError(f"URL should have at most {MAX_URL_CHARS} characters once normalised")
    return url


WebUrl = Annotated[HttpUrl, AfterValidator(_url_fits)]


class _Model(BaseModel):
    """Unknown fields are errors: a typo in a config must not be silently dropped."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)


def template_fields(template: str) -> set[str]:
    """Names of the `{placeholders}` in a template; raises ValueError on bad syntax.

    Only bare names are allowed: no attribute access, indexing, conversions or format
    specs, because variable values are untrusted and rendering must not execute them.
    """
    names: set[str] = set()
    for _, field, spec, conv in string.Formatter().parse(template):
        if field is None:
            continue
        if not re.fullmatch(VAR_NAME_RE, field) or spec or conv:
            raise ValueError(
                f"placeholder {{{field}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} "
                "is not a plain {name}; write literal braces as {{ and }}"
            )
        names.add(field)
    return names


# ---------------------------------------------------------------------------- prompts


class VariableSpec(_Model):
    description: str = Field("", max_length=500)
    default: str | None = Field(None, max_length=MAX_VARIABLE_VALUE_CHARS)
    required: JsonBool = False


class PromptConfig(_Model):
    instructions: str = Field(min_length=1, description="System prompt template; {name} placeholders.")
    greeting: str | None = Field(None, max_length=2000, description="First utterance, optional.")
    variables: dict[
        Annotated[str, StringConstraints(pattern=VAR_NAME_RE)], VariableSpec
    ] = Field(default_factory=dict, max_length=64)

    @model_validator(mode="after")
    def _check_templates(self) -> PromptConfig:
        if len(self.instructions.encode()) > MAX_INSTRUCTIONS_BYTES:
            raise ValueError(f"instructions exceed {MAX_INSTRUCTIONS_BYTES} bytes")
        for label, text in (("instructions", self.instructions), ("greeting", self.greeting)):
            if text is None:
                continue
            try:
                used = template_fields(text)
            except ValueError as e:
                raise ValueError(f"{label}: {e}") from None
            unknown = sorted(used - set(self.variables))
            if unknown:
                raise ValueError(
                    f"{label} uses undeclared variable(s) {', '.join(unknown)}; "
                    "declare them under prompt_config.variables"
                )
        return self


# ----------------------------------------------------------------------- json schema


def check_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) describing an object; checked at write time.

    `schema_admission.check_schema` bounds what evaluating it can cost; the rest is
    what the factory needs to turn it into tools."""
    try:
        check_schema(schema)
    except SchemaRefused as e:
        raise ValueError(str(e)) from None
    if schema.get("type") != "object":
        raise ValueError('schema must have "type": "object"')
    props = schema.get("properties", {})
    for name in props:
        if not re.fullmatch(TOOL_NAME_RE, name):
            raise ValueError(f"property name {name!r} must match {TOOL_NAME_RE}")
    for name in schema.get("required", []):
        if name not in props:
            raise ValueError(f"required field {name!r} is not in properties")
    return schema


_JSON_SCHEMA_DOC: dict[str, Any] = {
    "type": "object",
    "description": 'A JSON Schema (draft 2020-12) with "type": "object"; property names are '
    "tool-name-safe and every `required` name is a property.",
    "required": ["type"],
    "properties": {
        "type": {"const": "object"},
        "properties": {
            "type": "object",
            "propertyNames": {"pattern": TOOL_NAME_RE},
            "additionalProperties": {"type": ["object", "boolean"]},
        },
        "required": {"type": "array", "items": {"type": "string"}},
    },
}

JsonSchemaObject = Annotated[
    dict[str, Any], AfterValidator(check_json_schema), WithJsonSchema(_JSON_SCHEMA_DOC)
]
"""`schema_config`: the JSON Schema of the data an agent collects. The OpenAPI document
shows the shape `check_json_schema` enforces (what JSON Schema can say of it)."""


def empty_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {}}


# ------------------------------------------------------------------------- providers


class LLMConfig(_Model):
    provider: Literal["openai"] = "openai"
    model: str | None = Field(None, max_length=200, description="None: the server default.")
    base_url: WebUrl | None = None
    temperature: Annotated[float, Field(ge=0, le=2), _NUMBER] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=32768), _INT] | None = None


class STTConfig(_Model):
    provider: Literal["openai"] = "openai"
    model: str | None = Field(None, max_length=200)
    language: str = Field("en", max_length=16)
    base_url: WebUrl | None = None


class TTSConfig(_Model):
    provider: Literal["openai"] = "openai"
    model: str | None = Field(None, max_length=200)
    voice: str | None = Field(None, max_length=100)
    speed: JsonNumber = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(None, max_length=2000)
    base_url: WebUrl | None = None


class VADConfig(_Model):
    provider: Literal["silero"] = "silero"
    min_speech_duration: JsonNumber = Field(0.05, ge=0, le=5)
    min_silence_duration: JsonNumber = Field(0.55, ge=0, le=10)
    activation_threshold: JsonNumber = Field(0.5, gt=0, lt=1)


# ----------------------------------------------------------------------------- tools


class HttpTool(_Model):
    type: Literal["http"] = "http"
    name: ToolName
    description: str = Field(min_length=1, max_length=2000)
    parameters: JsonSchemaObject = Field(default_factory=empty_schema)
    url: WebUrl
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict, max_length=32)
    timeout_s: JsonNumber = Field(5.0, gt=0, le=30)


class BuiltinTool(_Model):
    type: Literal["builtin"] = "builtin"
    name: BuiltinToolName


ToolSpec = Annotated[HttpTool | BuiltinTool, Field(discriminator="type")]


# ---------------------------------------------------------------------- agent config


class AgentConfigInput(_Model):
    """What a client writes: everything but the server-assigned version and times."""

    agent_id: AgentId
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    enabled: JsonBool = True
    prompt_config: PromptConfig
    schema_config: JsonSchemaObject = Field(default_factory=empty_schema)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    stt: STTConfig = Field(default_factory=STTConfig)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    vad: VADConfig = Field(default_factory=VADConfig)
    tools: list[ToolSpec] = Field(default_factory=list, max_length=MAX_TOOLS)
    handoffs: list[AgentId] = Field(default_factory=list, max_length=MAX_TOOLS)
    analysis: AnalysisConfig | None = Field(
        None, description="Post-call analysis (summary, success criteria, extracted fields); none when unset."
    )

    @model_validator(mode="after")
    def _check_tools(self) -> AgentConfigInput:
        names = [t.name for t in self.tools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate tool name(s): {', '.join(dupes)}")
        reserved = {f"record_{p}" for p in self.schema_config.get("properties", {})}
        reserved |= {"record_data"}
        clash = sorted(
            n for n in names if n in reserved or (n in BUILTIN_TOOL_NAMES and not _is_builtin(self, n))
        )
        if clash:
            raise ValueError(f"tool name(s) {', '.join(clash)} are reserved")
        if self.agent_id in self.handoffs:
            raise ValueError("an agent cannot hand off to itself")
        if len(set(self.handoffs)) != len(self.handoffs):
            raise ValueError("handoffs lists an agent twice")
        if "transfer" in names and not self.handoffs:
            raise ValueError("the transfer tool needs at least one agent id in handoffs")
        return self


def _is_builtin(cfg: AgentConfigInput, name: str) -> bool:
    return any(isinstance(t, BuiltinTool) and t.name == name for t in cfg.tools)


class AgentConfig(AgentConfigInput):
    """One immutable version of an agent's configuration."""

    version: int = Field(ge=1)
    created_at: UtcDatetime
    updated_at: UtcDatetime

    def input(self) -> AgentConfigInput:
        return AgentConfigInput.model_validate(
            self.model_dump(exclude={"version", "created_at", "updated_at"})
        )


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; returns a new value, never mutates its inputs."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def deep_merge(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """How collected data accumulates (`record_data`): nested objects merge, anything
    else replaces. Unlike `apply_merge_patch`, a null is a value, not a removal."""
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def patched_input(current: AgentConfig, patch: dict[str, Any]) -> AgentConfigInput:
    """The new input after a merge patch; the id is immutable."""
    if "agent_id" in patch and patch["agent_id"] != current.agent_id:
        raise ValueError("agent_id cannot be changed")
    doc = apply_merge_patch(current.input().model_dump(mode="json"), patch)
    return AgentConfigInput.model_validate(doc)


# ---------------------------------------------------------------------------- routes


class RouteInput(_Model):
    agent_id: AgentId
    is_default: JsonBool = False


class Route(RouteInput):
    purpose: Purpose
    updated_at: UtcDatetime | None = None


# -------------------------------------------------------------------------- sessions


class SessionStatus(str, Enum):
    active = "active"
    completed = "completed"
    failed = "failed"
    abandoned = "abandoned"


class Turn(BaseModel):
    seq: int = Field(ge=0)
    role: Literal["user", "assistant", "system", "tool"]
    text: str
    at: UtcDatetime = Field(default_factory=utcnow)
    agent_id: str | None = None


class Handoff(BaseModel):
    from_agent: str
    to_agent: str
    at: UtcDatetime = Field(default_factory=utcnow)
    reason: str | None = None


class SessionRecord(BaseModel):
    session_id: str
    room: str
    agent_id: str
    config_version: int | None = None
    user_id: str | None = None
    status: SessionStatus = SessionStatus.active
    started_at: UtcDatetime = Field(default_factory=utcnow)
    ended_at: UtcDatetime | None = None
    end_reason: str | None = None
    route_reason: str | None = None
    degraded: str | None = Field(
        None, description="Set when the session started without a fresh config (store outage)."
    )
    turns: list[Turn] = Field(default_factory=list)
    collected: dict[str, Any] = Field(default_factory=dict)
    handoffs: list[Handoff] = Field(default_factory=list)
    error: str | None = None
    metrics: list[dict[str, Any]] = Field(default_factory=list)
    owner: str | None = Field(
        None, description="The process instance (host, pid, random) running the session; read-only."
    )
    heartbeat_at: UtcDatetime | None = Field(
        None, description="When the owner last proved alive; an active session whose owner stops "
        "heartbeating is marked abandoned. Read-only.",
    )
    usage: SessionUsage | None = Field(
        None, description="Tokens, audio and characters the call used, and their cost; written as the call "
        "goes and when it ends. Read-only.",
    )
    analysis: SessionAnalysis | None = Field(
        None, description="The post-call analysis, when the agent has analysis settings: pending until it has "
        "run, then done or failed (with the reason). Read-only.",
    )
