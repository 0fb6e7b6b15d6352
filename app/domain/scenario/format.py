"""The scenario file format: pydantic models and the loader.

Why pydantic with `extra="forbid"` everywhere: a scenario is a test, and a typo in a
test (`contians:`) that is silently ignored makes the test pass for the wrong reason.
Every unknown key, wrong type or missing field is reported with the file and line it
is on (see `app.domain.scenario.yamlsrc`). Expectations only check the fields a scenario actually
wrote (`model_fields_set`), so `degraded: null` ("must be None") and an absent
`degraded` ("not checked") mean different things.

The format is documented, with a complete example, in `sim/README.md`; the server
validates an agent's stored tests with it too (`app.domain.agent_tests`, stricter).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from app.domain.field_errors import field_errors, format_location
from app.domain.scenario.voice import VoiceExpect, VoiceOptions, VoiceSessionExpect, VoiceTurn
from app.domain.scenario.yamlsrc import LineMap, YamlSourceError, load_yaml, loads_yaml

__all__ = [
    "AuditEntry",
    "AuditOp",
    "ConfigOp",
    "CreateKeyOp",
    "ExpectEvent",
    "HttpMock",
    "LLMReceived",
    "LLMReply",
    "LoadedScenario",
    "RecordExpect",
    "RouteExpect",
    "Scenario",
    "ScenarioError",
    "ScenarioProblem",
    "SessionSpec",
    "TurnSpec",
    "load_scenario",
    "loads_scenario",
]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _exactly_one(model: BaseModel, names: tuple[str, ...], what: str) -> None:
    given = [n.rstrip("_") for n in names if getattr(model, n) is not None]
    names = tuple(n.rstrip("_") for n in names)
    if len(given) != 1:
        raise ValueError(f"{what} needs exactly one of {', '.join(names)}; got {', '.join(given) or 'none'}")


# ------------------------------------------------------------------------ metadata


class Generated(_M):
    """Metadata too big or too odd to write inline: `repeat` × `times`, or `json`
    padded with a `pad` field to exactly `pad_to_bytes` bytes."""

    repeat: str | None = None
    times: int = Field(1, ge=1, le=1_000_000)
    json_: dict[str, Any] | None = Field(None, alias="json")
    pad_to_bytes: int | None = Field(None, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _one(self) -> Generated:
        _exactly_one(self, ("repeat", "json_"), "generate")
        if self.pad_to_bytes is not None and self.json_ is None:
            raise ValueError("pad_to_bytes needs json")
        return self

    def render(self) -> str:
        if self.repeat is not None:
            return self.repeat * self.times
        doc = dict(self.json_ or {})
        if self.pad_to_bytes is None:
            return json.dumps(doc)
        doc["pad"] = ""
        short = self.pad_to_bytes - len(json.dumps(doc).encode())
        if short < 0:
            raise ValueError(f"json is already longer than pad_to_bytes={self.pad_to_bytes}")
        doc["pad"] = "x" * short
        return json.dumps(doc)


class GeneratedMetadata(_M):
    generate: Generated


def _metadata_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "<generate>" if "generate" in value else "<json>"
    if isinstance(value, GeneratedMetadata):
        return "<generate>"
    return "<raw>"


MetadataValue = Annotated[
    Annotated[GeneratedMetadata, Tag("<generate>")]
    | Annotated[dict[str, Any], Tag("<json>")]
    | Annotated[str, Tag("<raw>")],
    Discriminator(_metadata_kind),
]
"""A mapping is sent as JSON, a string exactly as written, `{generate: ...}` as generated
(a mapping with a `generate` key is always a generator, so its typos are errors too)."""


def render_metadata(value: MetadataValue | None) -> str:
    if value is None:
        return ""
    if isinstance(value, GeneratedMetadata):
        return value.generate.render()
    if isinstance(value, dict):
        return json.dumps(value)
    return value


class Participant(_M):
    identity: str = "sim-user"
    metadata: MetadataValue | None = None
    kind: Literal["standard", "sip"] = "standard"
    """`sip`: a phone caller as LiveKit's SIP service joins one (participant kind SIP)."""
    attributes: dict[str, str] = Field(default_factory=dict)
    """The participant's attributes, e.g. `sip.trunkPhoneNumber` (the dialled number) and
    `sip.phoneNumber` (the caller's) of a SIP participant."""


# ----------------------------------------------------------------------- config ops


class PatchOp(_M):
    agent_id: str
    body: dict[str, Any]
    if_match: int | None = Field(None, description="expected_version (store) / If-Match (api)")


class ReplaceOp(_M):
    agent_id: str
    body: dict[str, Any]
    if_match: int | None = None


class RollbackOp(_M):
    agent_id: str
    version: int
    if_match: int | None = None


class DeleteOp(_M):
    agent_id: str


class RouteOp(_M):
    purpose: str
    agent_id: str
    is_default: bool = False
    phone_numbers: list[str] = Field(default_factory=list)


class DeleteRouteOp(_M):
    purpose: str


class PutTestOp(_M):
    """Store a test with an agent (create, or replace one of that name)."""

    agent_id: str
    name: str
    content: str
    """The test document: a scenario in this format, as YAML text."""


class RunTestsOp(_M):
    """Run the agent's stored tests against a version and wait for the verdict."""

    agent_id: str
    version: int = Field(ge=1)
    expect: Literal["passed", "failed"] | None = None
    """The run's verdict."""
    failing: list[str] | None = None
    """Exactly these tests failed (name order)."""


class PublishOp(_M):
    agent_id: str
    version: int
    canary_percent: int | None = None
    if_match: int | None = Field(None, description="The release revision (expected_rev / If-Match)")


class RolloutOp(_M):
    """promote / abort the running canary."""

    agent_id: str
    reason: str | None = None
    if_match: int | None = None


class GuardOp(_M):
    """Run one round of the rollout guard (`app.store.rollout_guard`) with these thresholds."""

    min_sessions: int = Field(30, ge=1)
    margin: float = Field(0.05, ge=0, lt=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    expect_aborted: list[str] = Field(default_factory=list, description="Agent ids it must abort (exactly these)")


class ResolveOp(_M):
    """Resolve callers as a session start would now (the worker's config source) and check each."""

    purpose: str | None = None
    agent_id: str | None = None
    user_ids: list[str] = Field(min_length=1)
    expect_arm: Literal["stable", "canary"] | None = None
    expect_version: int | None = None


class CreateKeyOp(_M):
    """Create a named API key (`POST /api/v1/keys`, as the admin key unless `as` says
    otherwise). The harness keeps its secret in memory for later ops' `as: <name>`."""

    name: str = Field(min_length=1, max_length=64)
    role: Literal["read", "edit", "publish", "admin"]


class AuditEntry(_M):
    type: str = Field(min_length=1)
    """The change event's type (`agent.version_created`, `rollout.aborted`, ...)."""
    actor: str = Field(min_length=1)
    """Who made it: a key's name, `admin` (ADMIN_API_KEY), `rollout-guard`, ..."""


class AuditOp(_M):
    """Read the audit trail (`GET /api/v1/audit`, or the store's journal) oldest first and
    check that `expect` occurs in it in this order: a subsequence, so changes not listed
    may come between and around the listed ones, but each listed one must come after the
    one before it."""

    agent_id: str | None = None
    """Only changes to this agent (route and key changes name no agent: omit it to see them)."""
    expect: list[AuditEntry] = Field(min_length=1)


CONFIG_OPS = ("create", "patch", "replace", "rollback", "delete", "put_route", "delete_route", "replace_routes",
              "put_test", "run_tests", "store", "publish", "promote", "abort", "guard", "resolve",
              "create_key", "audit")
LOCAL_OPS = ("store", "guard", "resolve")
"""Ops that are neither store writes nor API calls (no via/expect_status/expect_error)."""


class ConfigOp(_M):
    """One change to the configuration (or the store's availability), applied in order."""

    via: Literal["store", "api"] | None = None
    """Defaults to the scenario's `config_via`. `store` ops ignore `expect_status`."""
    create: dict[str, Any] | None = None
    patch: PatchOp | None = None
    replace: ReplaceOp | None = None
    rollback: RollbackOp | None = None
    delete: DeleteOp | None = None
    put_route: RouteOp | None = None
    delete_route: DeleteRouteOp | None = None
    replace_routes: list[RouteOp] | None = None
    put_test: PutTestOp | None = None
    run_tests: RunTestsOp | None = None
    store: Literal["down", "up"] | None = None
    """`down`: every store call raises `StoreUnavailable` until `up` (see sim/README.md)."""
    publish: PublishOp | None = None
    promote: RolloutOp | None = None
    abort: RolloutOp | None = None
    guard: GuardOp | None = None
    resolve: ResolveOp | None = None
    create_key: CreateKeyOp | None = None
    audit: AuditOp | None = None
    as_: str | None = Field(None, alias="as")
    """api: make the request with this named key (made by an earlier `create_key`);
    default: the admin key (ADMIN_API_KEY, actor `admin`)."""
    expect_version: int | None = None
    expect_status: int | None = None
    """api: the HTTP status expected (default: any 2xx)."""
    expect_body_contains: str | list[str] | None = None
    """api: texts the response body must contain (e.g. the failing test a 409 names)."""
    expect_error: str | None = None
    """store: the exception class name expected (e.g. VersionConflict, InUse)."""

    @model_validator(mode="after")
    def _one(self) -> ConfigOp:
        _exactly_one(self, CONFIG_OPS, "a config op")
        if self.kind in LOCAL_OPS and (self.via or self.expect_status or self.expect_error or self.as_
                                       or self.expect_body_contains):
            raise ValueError(f"{self.kind} takes no via/as/expect_status/expect_body_contains/expect_error")
        if self.via == "store" and (self.as_ or self.expect_body_contains):
            raise ValueError("`as` and `expect_body_contains` are about an API request: not with via: store")
        return self

    def body_texts(self) -> list[str]:
        if self.expect_body_contains is None:
            return []
        return [self.expect_body_contains] if isinstance(self.expect_body_contains, str) else list(
            self.expect_body_contains)

    @property
    def kind(self) -> str:
        return next(n for n in CONFIG_OPS if getattr(self, n) is not None)


# ----------------------------------------------------------------------- endpoints

DEFAULT_ENDPOINT = "default"
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def _endpoint_name(value: str) -> str:
    if value != DEFAULT_ENDPOINT and not _HOST.match(value):
        raise ValueError("an endpoint is `default` or a host name (lowercase letters, digits, dots, hyphens)")
    return value


EndpointName = Annotated[str, AfterValidator(_endpoint_name)]
"""A scripted server: `default` (whatever the agent's base URL is when no other endpoint
is named: OpenAI's, or OPENAI_BASE_URL) or a host name agents reach it by in their
`base_url` (`http://backup.sim/v1` → `backup.sim`)."""


class EndpointDelays(_M):
    """Scripted provider delays (milliseconds) before each answer, per route."""

    chat: float = Field(0, ge=0, le=60_000)
    transcriptions: float = Field(0, ge=0, le=60_000)
    speech: float = Field(0, ge=0, le=60_000)


class EndpointSpec(_M):
    """How one scripted OpenAI-compatible server behaves (`sim.endpoints`)."""

    down: bool = False
    """Refuses connections (as a closed port): every request to it fails at once."""
    fail_status: int | None = Field(None, ge=400, le=599)
    """Answers every chat request with this HTTP error (reachable, but failing); the
    requests are captured. Its scripted replies are not used."""
    delay_ms: EndpointDelays = Field(default_factory=EndpointDelays)
    honour_cap: bool = True
    """False: ignores a request's reply cap (`max_tokens` / `max_completion_tokens`)."""


# ----------------------------------------------------------------------------- llm


class ReplyUsage(_M):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cached_tokens: int = Field(0, ge=0)
    """Of the prompt tokens, served from the cache (`prompt_tokens_details.cached_tokens`)."""

    @model_validator(mode="after")
    def _cached_within_prompt(self) -> ReplyUsage:
        if self.cached_tokens > self.prompt_tokens:
            raise ValueError("cached_tokens cannot exceed prompt_tokens")
        return self


class ToolCallSpec(_M):
    name: str
    args: dict[str, Any] | str = Field(default_factory=dict)
    """A mapping (sent as JSON) or a raw string (to script malformed arguments)."""


class LLMReply(_M):
    """One scripted chat completion: text, a tool call, parallel tool calls, or an HTTP error."""

    text: str | None = None
    tool: str | None = None
    args: dict[str, Any] | str | None = None
    tools: list[ToolCallSpec] | None = None
    error: int | None = Field(None, ge=400, le=599)
    endpoint: EndpointName | None = None
    """The scripted server that gives this reply (`endpoints:`); default: `default`.
    Each endpoint answers its own requests from its own replies, in order."""
    usage: ReplyUsage | None = None
    """The usage the server reports; default: counted from the request and the reply."""

    @model_validator(mode="after")
    def _one(self) -> LLMReply:
        kinds = [k for k in ("tool", "tools", "error") if getattr(self, k) is not None]
        if len(kinds) > 1 or (not kinds and self.text is None):
            raise ValueError("an llm reply is one of: text, tool (+args), tools (+optional text), error")
        if self.args is not None and self.tool is None:
            raise ValueError("args belongs to tool")
        if self.text is not None and (self.tool is not None or self.error is not None):
            raise ValueError("text goes with tools (a preamble), not with tool/error")
        return self


# --------------------------------------------------------------------- expectations


class TextMatch(_M):
    """Exact `text`, `contains` (all listed substrings), `regex` (re.search) and, in
    live mode only, `intent` (judged by an LLM with LiveKit's `judge`)."""

    text: str | None = None
    contains: str | list[str] | None = None
    regex: str | None = None
    intent: str | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"invalid regex: {e}") from None
        return v

    def contains_list(self) -> list[str]:
        if self.contains is None:
            return []
        return [self.contains] if isinstance(self.contains, str) else list(self.contains)


class MessageExpect(TextMatch):
    role: Literal["assistant", "user"] = "assistant"


class FunctionCallExpect(_M):
    name: str
    arguments: dict[str, Any] | None = None
    """Each given key must equal the call's (LiveKit's `is_function_call` semantics)."""
    arguments_exact: dict[str, Any] | None = None
    """The parsed arguments must equal this mapping exactly."""


class FunctionOutputExpect(_M):
    name: str | None = None
    """The tool whose output this is."""
    output: str | None = None
    contains: str | list[str] | None = None
    regex: str | None = None
    is_error: bool | None = None

    def contains_list(self) -> list[str]:
        if self.contains is None:
            return []
        return [self.contains] if isinstance(self.contains, str) else list(self.contains)


class HandoffExpect(_M):
    to: str
    from_: str | None = Field(None, alias="from")


EVENT_KINDS = ("function_call", "function_output", "message", "handoff", "any_order")


class ExpectEvent(_M):
    """One event the turn must produce, in order (LiveKit `RunResult.expect.next_event`),
    or an `any_order` group: the next N events, matched one-to-one in any order (parallel
    tool calls run concurrently, so their calls and outputs interleave by timing)."""

    function_call: FunctionCallExpect | None = None
    function_output: FunctionOutputExpect | None = None
    message: MessageExpect | None = None
    handoff: HandoffExpect | None = None
    any_order: list[ExpectEvent] | None = Field(None, min_length=1)
    live: bool = False
    """Also check in live mode, as "the turn contains such an event" (order not enforced).
    Messages with an `intent` are always judged in live mode."""

    @model_validator(mode="after")
    def _one(self) -> ExpectEvent:
        _exactly_one(self, EVENT_KINDS, "an expected event")
        if self.any_order is not None and any(e.any_order is not None for e in self.any_order):
            raise ValueError("any_order groups cannot be nested")
        return self

    @property
    def kind(self) -> str:
        return next(n for n in EVENT_KINDS if getattr(self, n) is not None)


class LLMReceived(_M):
    """What the model was sent during a turn (checked on every request of the turn, or
    the one picked by `request`): instructions, tools, tool schemas, messages."""

    request: Literal["all", "first", "last"] | int = "all"
    count: int | None = Field(None, ge=0)
    """Number of LLM requests in the turn (offline only: a real model's count varies)."""
    instructions_contain: list[str] = Field(default_factory=list)
    instructions_omit: list[str] = Field(default_factory=list)
    tools: list[str] | None = None
    """Exactly these tool names (order-insensitive)."""
    tools_include: list[str] = Field(default_factory=list)
    tools_exclude: list[str] = Field(default_factory=list)
    tool_schemas: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """tool name -> a subset of its `parameters` JSON Schema that must match."""
    messages_contain: list[str] = Field(default_factory=list)
    """Each string must occur in some non-system message of the request."""
    messages_omit: list[str] = Field(default_factory=list)
    endpoint: EndpointName | None = None
    """Only the requests this scripted server received (`request` and `count` count those)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Request body fields and their values (e.g. `max_completion_tokens: 250`); null: absent."""


class Step(_M):
    """What a turn (or the session start) scripts and expects."""

    llm: list[LLMReply] = Field(default_factory=list)
    """Replies the scripted model gives, in order, to the requests made during this step;
    every one must be consumed (offline). Ignored in live mode."""
    expect: list[ExpectEvent] = Field(default_factory=list)
    no_more_events: bool | None = None
    """After the listed events, the step produced nothing else (offline only).
    Default: checked when `expect` lists events; set `true` with an empty `expect` to
    require that the step produces no event at all."""
    llm_received: LLMReceived | None = None
    within_ms: float | None = Field(None, gt=0)
    """Budget for the step's wall time: offline the model answers in-process in
    microseconds, so this measures our code + LiveKit + plugin overhead."""


class StartSpec(Step):
    """The session start (the greeting). The agent's activation event is checked by
    `route`, so `expect` starts after it."""

    voice: VoiceExpect | None = None
    """`io: voice` only: voice checks of the greeting (see `sim.voice.spec`)."""


class TurnSpec(Step):
    user: str | None = Field(None, min_length=1)
    """What the user says (exactly one of `user` and `dtmf`)."""
    dtmf: str | None = Field(None, pattern=r"^[0-9*A-D]{1,32}#?$")
    """Keys a phone caller presses, one `sip_dtmf_received` event each, through the
    worker's keypad buffer (`app.worker.dtmf`): `#` submits, and without it the input is
    submitted after the buffer's pause. Text scenarios with a `sip` participant only."""
    config: list[ConfigOp] = Field(default_factory=list)
    """Applied after the previous turn, before the user speaks (mid-session changes)."""
    voice: VoiceTurn | None = None
    """`io: voice` only: the user's audio and the turn's voice checks (`sim.voice.spec`)."""
    @model_validator(mode="after")
    def _user_or_keys(self) -> TurnSpec:
        _exactly_one(self, ("user", "dtmf"), "a turn")
        return self

    tool_choice: str | None = Field(None, pattern=r"^(auto|required|none|[A-Za-z0-9_-]{1,64})$")
    """The first model request of the turn carries this `tool_choice` (a tool's name,
    `required`, `none` or `auto`), as `session.generate_reply(tool_choice=...)` sends it:
    a model too small to pick a tool by itself (the local one) is told which to use, so
    the turn checks the call's path and its constrained arguments, not the model's choice.
    After a named tool or `required`, the turn's later requests carry `none` (that tool,
    then a reply: the script's shape)."""


class RouteExpect(_M):
    agent_id: str | None = None
    version: int | None = None
    reason: str | None = None
    """The stored `route_reason` (RouteDecision.reason, or `<reason>:missing_variables`)."""
    fallback: bool | None = None
    source: Literal["job", "room", "participant"] | None = None
    user_id: str | None = None
    degraded: str | None = None
    """null: the session started on a fresh config. A string: must be contained."""
    arm: Literal["stable", "canary"] | None = None
    """The rollout arm (null: no canary was running for the agent)."""


class TurnExpect(TextMatch):
    role: Literal["user", "assistant"]
    agent_id: str | None = None


class HandoffRecordExpect(_M):
    to: str
    from_: str = Field(alias="from")
    reason: str | None = None


class EventRecordExpect(_M):
    kind: str
    contains: str | None = None
    """A text the event's detail must contain."""


class ServedByExpect(_M):
    kind: Literal["llm", "stt", "tts"]
    provider: str
    """The provider as LiveKit names it: the base URL's host[:port]."""
    model: str | None = None
    turns: int | None = Field(None, ge=0)


class UsageExpect(_M):
    """Exact totals (offline only: a real model's token counts vary); `cost_usd` to within
    a millionth of a cent."""

    llm_tokens: int | None = None
    llm_input_tokens: int | None = None
    llm_cached_tokens: int | None = None
    llm_output_tokens: int | None = None
    stt_audio_s: float | None = None
    tts_characters: int | None = None
    tts_audio_s: float | None = None
    cost_usd: float | None = Field(None, ge=0)
    unpriced_models: list[str] | None = None
    """Exactly these models had usage but no price (sorted)."""


class AnalysisReply(_M):
    """One scripted answer of the post-call analysis model: `json` (the answer as a mapping,
    sent as JSON text), `text` (raw text, e.g. garbage), or `error` (an HTTP status)."""

    json_: dict[str, Any] | None = Field(None, alias="json")
    text: str | None = None
    error: int | None = Field(None, ge=400, le=599)
    usage: ReplyUsage | None = None

    @model_validator(mode="after")
    def _one(self) -> AnalysisReply:
        if sum(x is not None for x in (self.json_, self.text, self.error)) != 1:
            raise ValueError("an analysis reply is one of: json, text, error")
        return self


class SuccessExpect(_M):
    passed: bool | None = None
    reason: TextMatch | None = None


class AnalysisExpect(_M):
    """The post-call analysis (`SessionRecord.analysis`), awaited after the session ends.
    `replies`: what the analysis model answers, in order (offline; every one must be
    requested). The rest are checks on the stored result; in live mode only `status`,
    `attempts` and the presence of what was asked are checked."""

    replies: list[AnalysisReply] = Field(default_factory=list)
    status: Literal["done", "failed"] | None = None
    summary: TextMatch | None = None
    success: SuccessExpect | None = None
    extracted: dict[str, Any] | None = None
    """Exact equality."""
    extracted_include: dict[str, Any] | None = None
    error: TextMatch | None = None
    """The failure reason (status failed)."""
    attempts: int | None = Field(None, ge=0)
    model: str | None = None
    """The model that was asked (`analysis.request.model`)."""
    input_tokens: int | None = Field(None, ge=0)
    output_tokens: int | None = Field(None, ge=0)
    cost_usd: float | None = Field(None, ge=0)
    """`null`: the model has no price."""


class RecordExpect(_M):
    """The stored `SessionRecord`, read back from the store after the session closed."""

    status: Literal["active", "completed", "failed", "abandoned"] | None = None
    end_reason: str | None = None
    agent_id: str | None = None
    config_version: int | None = None
    route_reason: str | None = None
    user_id: str | None = None
    arm: Literal["stable", "canary"] | None = None
    degraded: str | None = None
    """null: must be None; a string: must be contained."""
    call: dict[str, Any] | None = None
    """The stored `call` (a phone session): the keys given must match (`voicemail` as a
    mapping of its own keys); null: must be None."""
    error: str | None = None
    """The stored failure description (`SessionRecord.error`). null: must be None; a
    string: must be contained."""
    collected: dict[str, Any] | None = None
    """Exact equality (live mode: the same keys)."""
    collected_include: dict[str, Any] | None = None
    collected_keys: list[str] | None = None
    turns: list[TurnExpect] | None = None
    """The whole transcript, in order (offline only)."""
    turn_count: int | None = None
    handoffs: list[HandoffRecordExpect] | None = None
    events: list[EventRecordExpect] | None = None
    """Every stored event, in order (`SessionRecord.events`: fail-overs, cut replies, budgets)."""
    served_by: list[ServedByExpect] | None = None
    """Which providers served the session's turns (`usage.served_by`), in any order; each
    entry written must match one stored, and nothing else may be stored."""
    usage: UsageExpect | None = None


class HttpMock(_M):
    """A respx route answering one of our HTTP tools' calls."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str
    status: int = Field(200, ge=100, le=599)
    json_: Any = Field(None, alias="json")
    text: str | None = None
    delay_ms: int = Field(0, ge=0, le=60_000)
    raise_: Literal["timeout", "connect_error"] | None = Field(None, alias="raise")
    expect_calls: int | None = Field(None, ge=0)
    expect_json: Any = None
    """The JSON body of the last call must equal this."""
    expect_params: dict[str, str] | None = None
    """The query parameters of the last call must equal these."""


class SessionSpec(_M):
    name: str | None = None
    config: list[ConfigOp] = Field(default_factory=list)
    """Applied before this session starts."""
    endpoints: dict[EndpointName, EndpointSpec] = Field(default_factory=dict)
    """This session's scripted servers, over the scenario's (same names replace them)."""
    job_metadata: MetadataValue | None = None
    room_metadata: MetadataValue | None = None
    participant: Participant | None = None
    http: list[HttpMock] = Field(default_factory=list)
    route: RouteExpect | None = None
    start: StartSpec | None = None
    turns: list[TurnSpec] = Field(default_factory=list)
    closes: bool | None = None
    """True: the agent must have closed the session (end_session) by the last turn.
    False: it must still be open. Unset: not checked."""
    record: RecordExpect | None = None
    voice: VoiceSessionExpect | None = None
    """`io: voice` only: the latency metrics stored on the record (`sim.voice.spec`)."""
    analysis: AnalysisExpect | None = None
    """The post-call analysis of this session (the agent needs `analysis` settings)."""
    amd: Literal["human", "machine-vm", "machine-unavailable", "machine-ivr", "uncertain"] | None = None
    """An outbound call's answering-machine verdict, as LiveKit's AMD would give it, applied
    after the start (the worker's `app.worker.voicemail.apply_verdict`): the sim has no
    callee audio for AMD itself to classify."""
    dtmf_sent: str | None = None
    """The keys the agent pressed (`send_dtmf`) in this session, in order ("" for none)."""

    @model_validator(mode="after")
    def _phone_blocks(self) -> SessionSpec:
        sip = self.participant is not None and self.participant.kind == "sip"
        if not sip and any(t.dtmf is not None for t in self.turns):
            raise ValueError("`dtmf` turns need a participant of kind sip")
        if not sip and self.amd is not None:
            raise ValueError("`amd` needs a participant of kind sip")
        return self


class LatencyBudget(_M):
    """What the voice path may take, end of the user's speech to the agent's first audio
    (wall time, with the scripted `endpoints` delays as the providers' share), over every
    user turn of the scenario."""

    turn_p95_ms: float = Field(gt=0, le=60_000)
    """The 95th percentile (nearest rank) of the turns' end-to-end latency."""
    min_turns: int = Field(1, ge=1)
    """Fewer measured turns than this is a failure (a budget over nothing proves nothing)."""


class StoreSpec(_M):
    seed: bool = True
    """Load the example agents and routes from prompts/ (app.seed)."""
    available: bool = True
    """False: the store is down before the worker starts (nothing cached)."""


class Scenario(_M):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    mode: Literal["dynamic", "pte"] = "dynamic"
    """`pte`: Settings(agent_mode="pte"): the PTE examiner is the only agent (a fixed config source)."""
    store: StoreSpec = Field(default_factory=StoreSpec)
    config_via: Literal["store", "api"] = "store"
    config: list[ConfigOp] = Field(default_factory=list)
    """Applied once the worker services are up, before the first session."""
    sessions: list[SessionSpec] = Field(min_length=1)
    offline_only: str | None = None
    """Reason this scenario cannot run against a real model (skipped in live mode)."""
    io: Literal["text", "voice"] = "text"
    """`voice`: user turns are speech audio through VAD and the real STT/TTS plugins
    (sim/voice/, README "Voice simulation"); `text`: `session.run(user_input=...)`."""
    voice: VoiceOptions | None = None
    """`io: voice` options (speed, frame size, away timeout)."""
    endpoints: dict[EndpointName, EndpointSpec] = Field(default_factory=dict)
    """Scripted OpenAI-compatible servers by name (`default`, or a host in an agent's
    `base_url`): down, slow, ignoring the reply cap (`sim.endpoints`)."""
    latency_budget: LatencyBudget | None = None
    """`io: voice` only: the end-to-end latency the scenario's user turns must keep."""

    def endpoint_problems(self) -> list[tuple[tuple[int | str, ...], str]]:
        """Scripted replies naming an endpoint no `endpoints:` block declares, by location
        (checked by `load_scenario`, which knows each location's line)."""
        problems = []
        for i, sess in enumerate(self.sessions):
            known = {DEFAULT_ENDPOINT, *self.endpoints, *sess.endpoints}
            steps: list[tuple[tuple[int | str, ...], Step | None]] = [(("start",), sess.start)]
            steps += [(("turns", j), t) for j, t in enumerate(sess.turns)]
            for where, step in steps:
                for k, r in enumerate(step.llm if step is not None else []):
                    if r.endpoint is not None and r.endpoint not in known:
                        problems.append((("sessions", i, *where, "llm", k, "endpoint"),
                                         f"{r.endpoint!r} is not declared under endpoints "
                                         f"(known: {', '.join(sorted(known))})"))
        return problems

    def problems(self) -> list[tuple[tuple[int | str, ...], str]]:
        """Problems only the whole document shows, by location (`load_scenario` adds
        their lines); a stricter format (a stored test) adds its own."""
        return self.endpoint_problems()

    @model_validator(mode="after")
    def _voice_blocks(self) -> Scenario:
        if self.io == "voice":
            return self
        if self.latency_budget is not None:
            raise ValueError("`latency_budget` needs `io: voice`")
        if self.voice is not None:
            raise ValueError("`voice:` options need `io: voice`")
        for i, s in enumerate(self.sessions):
            steps = [s.start, *s.turns]
            if s.voice is not None or any(st is not None and st.voice is not None for st in steps):
                raise ValueError(f"sessions[{i}] has `voice:` blocks, which need `io: voice`")
        return self

    @model_validator(mode="after")
    def _keys_are_text_only(self) -> Scenario:
        if self.io == "voice" and any(t.dtmf is not None for s in self.sessions for t in s.turns):
            raise ValueError("`dtmf` turns are supported in text scenarios only")
        return self


# --------------------------------------------------------------------------- loader


class ScenarioProblem(BaseModel):
    """One problem of an invalid scenario: the line it is on, the field, what is wrong."""

    model_config = ConfigDict(frozen=True)

    line: int | None
    field: str
    message: str


class ScenarioError(ValueError):
    """An invalid scenario file; the message lists every problem with file:line, and
    `problems` has them one by one (the admin API answers them as a 422's fields)."""

    def __init__(self, message: str, problems: list[ScenarioProblem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class LoadedScenario(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    scenario: Scenario
    path: Path
    lines: LineMap

    def where(self, loc: tuple[int | str, ...] | list[int | str]) -> str:
        return self.lines.where(loc)


def load_scenario(path: Path | str) -> LoadedScenario:
    path = Path(path)
    try:
        data, lines = load_yaml(path)
    except YamlSourceError as e:
        raise _source_error(e) from None
    return _validated(data, lines, path)


def loads_scenario(text: str, path: Path | str = "<scenario>", model: type[Scenario] | None = None) -> LoadedScenario:
    """A scenario from text (an agent's stored test); `path` names it in messages,
    `model` is a stricter subclass of `Scenario` to validate with."""
    path = Path(path)
    try:
        data, lines = loads_yaml(text, path)
    except YamlSourceError as e:
        raise _source_error(e) from None
    return _validated(data, lines, path, model or Scenario)


def _source_error(e: YamlSourceError) -> ScenarioError:
    return ScenarioError(str(e), [ScenarioProblem(line=e.line, field="", message=e.detail)])


def _validated(data: Any, lines: LineMap, path: Path, model: type[Scenario] | None = None) -> LoadedScenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}:1: a scenario is a mapping with name, sessions, ...",
                            [ScenarioProblem(line=1, field="", message="a scenario is a mapping with name, sessions, ...")])
    try:
        scenario = (model or Scenario).model_validate(data)
    except ValidationError as e:
        found = [(_data_loc(raw_loc), msg) for raw_loc, msg in field_errors(e)]
        raise _invalid(found, lines) from None
    problems = scenario.problems()
    if problems:
        raise _invalid(problems, lines)
    return LoadedScenario(scenario=scenario, path=path, lines=lines)


def _invalid(found: list[tuple[tuple[int | str, ...], str]], lines: LineMap) -> ScenarioError:
    problems = list(dict.fromkeys(
        ScenarioProblem(line=lines.line(loc), field=format_location(loc), message=msg) for loc, msg in found
    ))
    text = [f"{lines.path}:{p.line}: {p.field}: {p.message}" for p in problems]
    return ScenarioError("invalid scenario:\n  " + "\n  ".join(text), problems)


_ALIASES = {"json_": "json", "from_": "from", "raise_": "raise", "as_": "as"}
"""Field names that differ from the key a scenario writes (Python keywords and builtins)."""


def _data_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop pydantic's union-branch labels (`GeneratedMetadata`, `str`, `dict[str,any]`)."""
    out: list[int | str] = []
    for part in loc:
        if isinstance(part, str) and (
            part[:1].isupper() or part[:1] == "<" or "[" in part or part in ("str", "int", "bool")
        ):
            continue
        out.append(_ALIASES.get(part, part) if isinstance(part, str) else part)
    return tuple(out)
