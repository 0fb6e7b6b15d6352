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
from app.domain.field_errors import field_error, raise_field_errors
from app.domain.phone import E164, E164_DIGITS, MAX_ROUTE_NUMBERS, CallInfo, VoicemailConfig
from app.domain.schema_admission import SchemaRefused, check_schema
from app.domain.usage import SessionUsage
from app.domain.values import (  # re-exported: `from app.domain.models import utcnow` keeps working
    INT as _INT,
    NUMBER as _NUMBER,
    JsonBool as JsonBool,
    JsonInt as JsonInt,
    JsonNumber as JsonNumber,
    UtcDatetime as UtcDatetime,
    utcnow as utcnow,
)
from app.settings import DEFAULT_REPLY_MAX_TOKENS  # the reply cap without llm.max_tokens

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

BuiltinToolName = Literal["end_session", "transfer", "record_score", "send_dtmf"]
"""Built-in tools a config may name; each is implemented in the agents layer's tool
registry (`app.agents.tool_registry`). `record_score`: the PTE examiner's scoring;
`send_dtmf`: key presses to an IVR on a phone call."""
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
        # Located at the field (`prompt_config.greeting`), not the model: the API's 422
        # and the console put the message next to the template that is wrong.
        problems = []
        if len(self.instructions.encode()) > MAX_INSTRUCTIONS_BYTES:
            problems.append(field_error("instructions", f"exceeds {MAX_INSTRUCTIONS_BYTES} bytes"))
        for label, text in (("instructions", self.instructions), ("greeting", self.greeting)):
            if text is None:
                continue
            try:
                used = template_fields(text)
            except ValueError as e:
                problems.append(field_error(label, str(e)))
                continue
            unknown = sorted(used - set(self.variables))
            if unknown:
                problems.append(field_error(
                    label,
                    f"uses undeclared variable(s) {', '.join(unknown)}; "
                    "declare them under prompt_config.variables",
                ))
        raise_field_errors(type(self).__name__, problems)
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
#
# Each of llm / stt / tts is a primary provider plus an ordered list of `fallbacks`
# (another model, another OpenAI-compatible base URL); the agents layer wraps a chain in
# LiveKit's own FallbackAdapter. Timeouts are per provider: a member without its own
# `timeouts` uses the primary's.

ProviderName = Literal["openai"]
"""Providers a config may name; "openai" is any OpenAI-compatible server (`base_url`)."""

MAX_FALLBACKS = 4

DEFAULT_REPETITION_LIMIT = 3
"""A reply that says the same sentence this many times is ended there."""


def _timeouts_ordered(connect: float, first: float, total: float, first_name: str) -> None:
    if first > total:
        raise ValueError(f"{first_name} ({first:g}) cannot exceed total_s ({total:g})")
    if connect > total:
        raise ValueError(f"connect_s ({connect:g}) cannot exceed total_s ({total:g})")


def _not_one(value: int) -> int:
    if value == 1:
        raise ValueError("1 would end every reply after its first sentence; use 0 to turn the guard off")
    return value


class LLMTimeouts(_Model):
    """Seconds one LLM provider gets before the request goes to the next in the chain."""

    connect_s: Annotated[float, Field(gt=0, le=60), _NUMBER] = Field(
        3.0, description="Opening the connection (TCP + TLS)."
    )
    first_token_s: Annotated[float, Field(gt=0, le=300), _NUMBER] = Field(
        6.0, description="Waiting for the response to start, and for each chunk after it "
        "(a long prompt's prefill on a local model may need more)."
    )
    total_s: Annotated[float, Field(gt=0, le=600), _NUMBER] = Field(
        45.0, description="The whole streamed reply."
    )

    @model_validator(mode="after")
    def _ordered(self) -> LLMTimeouts:
        _timeouts_ordered(self.connect_s, self.first_token_s, self.total_s, "first_token_s")
        return self


class AudioTimeouts(_Model):
    """Seconds one STT or TTS provider gets before the request goes to the next."""

    connect_s: Annotated[float, Field(gt=0, le=60), _NUMBER] = Field(
        3.0, description="Opening the connection (TCP + TLS)."
    )
    first_byte_s: Annotated[float, Field(gt=0, le=120), _NUMBER] = Field(
        5.0, description="Waiting for the response to start, and for each chunk after it "
        "(STT: the transcript; TTS: the first audio)."
    )
    total_s: Annotated[float, Field(gt=0, le=600), _NUMBER] = Field(
        30.0, description="The whole response."
    )

    @model_validator(mode="after")
    def _ordered(self) -> AudioTimeouts:
        _timeouts_ordered(self.connect_s, self.first_byte_s, self.total_s, "first_byte_s")
        return self


MaxTokensParam = Literal["auto", "max_completion_tokens", "max_tokens"]
"""How the reply cap is sent: OpenAI's API takes `max_completion_tokens` (its newer models
refuse `max_tokens`); llama.cpp, vLLM, Ollama and most OpenAI-compatible servers take
`max_tokens`. `auto`: `max_completion_tokens` for api.openai.com / Azure OpenAI (or no
base URL), `max_tokens` for any other base URL."""


class LLMFallback(_Model):
    """One alternative LLM, tried in order when the ones before it fail or time out."""

    provider: ProviderName = "openai"
    model: str | None = Field(None, max_length=200, description="None: the server default.")
    base_url: WebUrl | None = None
    timeouts: LLMTimeouts | None = Field(None, description="None: the primary's.")
    max_tokens_param: MaxTokensParam | None = Field(None, description="None: the primary's.")


class LLMConfig(_Model):
    provider: ProviderName = "openai"
    model: str | None = Field(None, max_length=200, description="None: the server default.")
    base_url: WebUrl | None = None
    temperature: Annotated[float, Field(ge=0, le=2), _NUMBER] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=32768), _INT] | None = Field(
        None, description=f"Reply cap in tokens. None: the platform default ({DEFAULT_REPLY_MAX_TOKENS}, "
        "DEFAULT_LLM_MAX_TOKENS)."
    )
    max_tokens_param: MaxTokensParam = "auto"
    repetition_limit: Annotated[int, Field(ge=0, le=20), AfterValidator(_not_one), _INT] = Field(
        DEFAULT_REPETITION_LIMIT, description="End a reply before it says the same sentence this "
        "many times; 0 turns the guard off (not null: in a merge patch null restores the default)."
    )
    timeouts: LLMTimeouts = Field(default_factory=LLMTimeouts)
    fallbacks: list[LLMFallback] = Field(default_factory=list, max_length=MAX_FALLBACKS)


class STTFallback(_Model):
    provider: ProviderName = "openai"
    model: str | None = Field(None, max_length=200)
    base_url: WebUrl | None = None
    timeouts: AudioTimeouts | None = Field(None, description="None: the primary's.")


class STTConfig(_Model):
    provider: ProviderName = "openai"
    model: str | None = Field(None, max_length=200)
    language: str = Field("en", max_length=16)
    base_url: WebUrl | None = None
    timeouts: AudioTimeouts = Field(default_factory=AudioTimeouts)
    fallbacks: list[STTFallback] = Field(default_factory=list, max_length=MAX_FALLBACKS)


class TTSFallback(_Model):
    provider: ProviderName = "openai"
    model: str | None = Field(None, max_length=200)
    voice: str | None = Field(None, max_length=100, description="None: the primary's.")
    base_url: WebUrl | None = None
    timeouts: AudioTimeouts | None = Field(None, description="None: the primary's.")


class TTSConfig(_Model):
    provider: ProviderName = "openai"
    model: str | None = Field(None, max_length=200)
    voice: str | None = Field(None, max_length=100)
    speed: JsonNumber = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(None, max_length=2000)
    base_url: WebUrl | None = None
    timeouts: AudioTimeouts = Field(default_factory=AudioTimeouts)
    fallbacks: list[TTSFallback] = Field(default_factory=list, max_length=MAX_FALLBACKS)


class VADConfig(_Model):
    provider: Literal["silero"] = "silero"
    min_speech_duration: JsonNumber = Field(0.05, ge=0, le=5)
    min_silence_duration: JsonNumber = Field(0.55, ge=0, le=10)
    activation_threshold: JsonNumber = Field(0.5, gt=0, lt=1)


# --------------------------------------------------------------------------- budgets


class SessionBudget(_Model):
    """Per-session limits of the agent running the call (each unset: no limit). Near a
    limit (`wrap_up_at` of it) the agent is told once to wrap up; at the limit the session
    ends politely with end_reason `budget_exhausted`. After a handoff the new agent's
    budget applies to the session's totals so far."""

    llm_tokens: Annotated[int, Field(gt=0, le=1_000_000_000), _INT] | None = Field(
        None, description="LLM tokens, input and output, summed over every request."
    )
    tts_characters: Annotated[int, Field(gt=0, le=100_000_000), _INT] | None = Field(
        None, description="Characters sent to TTS."
    )
    duration_s: Annotated[float, Field(gt=0, le=86_400), _NUMBER] | None = Field(
        None, description="Call duration from the session start."
    )
    wrap_up_at: Annotated[float, Field(gt=0, lt=1), _NUMBER] = Field(
        0.8, description="The fraction of a limit at which the agent is told to wrap up."
    )


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


TRANSFER_TARGET_RE = rf"^({E164_DIGITS}|tel:{E164_DIGITS}|sips?:[^\s]{{3,250}})$"


class TransferCallTool(_Model):
    """Hand a phone caller to a person: LiveKit transfers the SIP participant (SIP REFER)
    to `to`, after the optional spoken `handoff_message`. The reason the model gives and
    the data collected so far are kept on the session record (and in session.ended)."""

    type: Literal["transfer_call"] = "transfer_call"
    name: ToolName = "transfer_call"
    description: str = Field(
        "Transfer the caller to a human colleague when they ask for a person or you cannot help further.",
        min_length=1, max_length=2000)
    to: Annotated[str, StringConstraints(pattern=TRANSFER_TARGET_RE)] = Field(
        description="E.164 number (+15551234567), tel: URI or sip:/sips: URI to transfer to")
    handoff_message: str | None = Field(
        None, max_length=1000, description="Said to the caller before the transfer; none: transfer at once")
    play_dialtone: JsonBool = False

    def transfer_to(self) -> str:
        """What LiveKit's TransferSIPParticipant takes: a tel: or sip: URI."""
        return f"tel:{self.to}" if self.to.startswith("+") else self.to


ToolSpec = Annotated[HttpTool | BuiltinTool | TransferCallTool, Field(discriminator="type")]


# ---------------------------------------------------------------------- agent config


class AgentConfigInput(_Model):
    """What a client writes: everything but the server-assigned version and times."""

    agent_id: AgentId
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    enabled: JsonBool = True
    auto_publish: JsonBool = Field(
        True, description="Publish each new version as it is written (what routing hands out). False: "
        "new versions are drafts until POST .../publish."
    )
    prompt_config: PromptConfig
    schema_config: JsonSchemaObject = Field(default_factory=empty_schema)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    stt: STTConfig = Field(default_factory=STTConfig)
    tts: TTSConfig = Field(default_factory=TTSConfig)
    vad: VADConfig = Field(default_factory=VADConfig)
    budget: SessionBudget = Field(default_factory=SessionBudget)
    tools: list[ToolSpec] = Field(default_factory=list, max_length=MAX_TOOLS)
    handoffs: list[AgentId] = Field(default_factory=list, max_length=MAX_TOOLS)
    analysis: AnalysisConfig | None = Field(
        None, description="Post-call analysis (summary, success criteria, extracted fields); none when unset."
    )
    voicemail: VoicemailConfig | None = Field(
        None, description="Outbound phone calls: detect an answering machine (LiveKit AMD) and leave a "
        "message or hang up; none: no detection.",
    )
    require_passing_tests: JsonBool = Field(
        False,
        description="Publishing this version needs a passing run of the agent's current stored tests "
        "(`/agents/config/{id}/tests`); an agent without tests may always publish.",
    )

    @model_validator(mode="after")
    def _check_tools(self) -> AgentConfigInput:
        problems = []
        names = [t.name for t in self.tools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(field_error("tools", f"duplicate tool name(s): {', '.join(dupes)}"))
        reserved = {f"record_{p}" for p in self.schema_config.get("properties", {})}
        reserved |= {"record_data"}
        clash = sorted(
            n for n in names if n in reserved or (n in BUILTIN_TOOL_NAMES and not _is_builtin(self, n))
        )
        if clash:
            problems.append(field_error("tools", f"tool name(s) {', '.join(clash)} are reserved"))
        if self.agent_id in self.handoffs:
            problems.append(field_error("handoffs", "an agent cannot hand off to itself"))
        if len(set(self.handoffs)) != len(self.handoffs):
            problems.append(field_error("handoffs", "handoffs lists an agent twice"))
        if "transfer" in names and not self.handoffs:
            problems.append(field_error("handoffs", "the transfer tool needs at least one agent id in handoffs"))
        problems.extend(self._voicemail_problems())
        raise_field_errors(type(self).__name__, problems)
        return self


    def _voicemail_problems(self) -> list[Any]:
        vm = self.voicemail
        if vm is None:
            return []
        if vm.action == "leave_message" and vm.message is None:
            return [field_error("voicemail.message", "leave_message needs a message")]
        if vm.message is None:
            return []
        try:
            names = template_fields(vm.message)
        except ValueError as e:
            return [field_error("voicemail.message", str(e))]
        unknown = sorted(names - set(self.prompt_config.variables))
        if unknown:
            return [field_error("voicemail.message", f"undeclared variable(s): {', '.join(unknown)}")]
        return []


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


def _distinct_numbers(numbers: list[str]) -> list[str]:
    dupes = sorted({n for n in numbers if numbers.count(n) > 1})
    if dupes:
        raise ValueError(f"number(s) listed twice: {', '.join(dupes)}")
    return numbers


class RouteInput(_Model):
    agent_id: AgentId
    is_default: JsonBool = False
    phone_numbers: Annotated[list[E164], AfterValidator(_distinct_numbers)] = Field(
        default_factory=list, max_length=MAX_ROUTE_NUMBERS,
        description="Dialled numbers (E.164) this route answers on inbound phone calls; each number "
        "belongs to at most one route.",
    )


class Route(RouteInput):
    purpose: Purpose
    updated_at: UtcDatetime | None = None


# -------------------------------------------------------------------------- sessions


class SessionStatus(str, Enum):
    active = "active"
    completed = "completed"
    failed = "failed"
    abandoned = "abandoned"


class SessionOrder(str, Enum):
    """How session lists are ordered: newest first, or slowest worst turn first (sessions
    without a spoken turn last, then newest first)."""

    newest = "newest"
    worst_turn = "worst_turn"


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


SessionEventKind = Literal[
    "provider_unavailable", "provider_recovered", "reply_capped", "repetition_stopped",
    "budget_warning", "budget_exhausted", "tool_error", "call_transferred", "transfer_failed",
]

MAX_SESSION_EVENTS = 200
"""Events kept on one record; later ones are dropped (and counted in the logs)."""


class SessionEvent(BaseModel):
    """Something the platform did to or noticed about a call, beyond its turns: a provider
    failing over, a reply cut at its cap or for repeating itself, a budget warning."""

    kind: SessionEventKind
    at: UtcDatetime = Field(default_factory=utcnow)
    agent_id: str | None = None
    detail: str = Field("", max_length=500)


class SessionRecord(BaseModel):
    session_id: str
    room: str
    agent_id: str
    config_version: int | None = None
    user_id: str | None = None
    arm: Literal["stable", "canary"] | None = Field(
        None, description="The rollout arm the session was routed to while a canary ran; null otherwise."
    )
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
    usage: SessionUsage = Field(
        default_factory=SessionUsage, description="Tokens, audio and characters the call used, the providers "
        "that served it, and the cost; kept current as the call goes. Read-only.",
    )
    events: list[SessionEvent] = Field(default_factory=list)
    owner: str | None = Field(
        None, description="The process instance (host, pid, random) running the session; read-only."
    )
    heartbeat_at: UtcDatetime | None = Field(
        None, description="When the owner last proved alive; an active session whose owner stops "
        "heartbeating is marked abandoned. Read-only.",
    )
    worst_turn_ms: float | None = Field(
        None, description="The slowest spoken turn's end-to-end latency in ms (the largest `total_ms` in "
        "`metrics`), kept by the store so sessions can be listed slowest first. Read-only.",
    )
    analysis: SessionAnalysis | None = Field(
        None, description="The post-call analysis, when the agent has analysis settings: pending until it has "
        "run, then done or failed (with the reason). Read-only.",
    )
    call: CallInfo | None = Field(
        None, description="Phone sessions: direction, dialled and caller numbers, the SIP call id and the "
        "voicemail outcome of an outbound call. None for web and app sessions.",
    )


def worst_turn_ms(metrics: list[dict[str, Any]]) -> float | None:
    """The largest end-to-end figure among per-turn metrics entries (None: no spoken turn)."""
    figures = [m["total_ms"] for m in metrics if isinstance(m.get("total_ms"), (int, float))
               and not isinstance(m.get("total_ms"), bool)]
    return float(max(figures)) if figures else None
