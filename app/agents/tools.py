"""Function tools built from an agent's config at session start.

All tools are LiveKit raw function tools (`function_tool(handler, raw_schema=...)`):
their JSON Schemas are only known at run time, go to the model unchanged, and are
*not* validated by LiveKit — so every handler validates its own arguments (with
`app.domain.jsonschema_safe`: linear-time patterns, bounded cost, off the loop) and
answers the model with a plain-text error it can act on. No handler raises into the
session: a tool failure is a tool output, the conversation goes on.

Schema tools — design choice: one `record_<field>` tool per top-level property of
`schema_config` (taking `{"value": <the property's schema>}`) while there are at most
`MAX_PER_FIELD_TOOLS` properties, else one grouped `record_data` tool taking any
subset of the fields. Per-field tools give small models a name that says what to do
and a one-value schema that is hard to get wrong, and let each value be accepted or
rejected on its own; past a dozen fields the tool list itself becomes the noise, so
large schemas get a single tool whose arguments are all-or-nothing (any invalid field
→ nothing recorded, every problem reported). Either way the output tells the model
what was recorded and which required fields are still missing.

Built-ins: `end_session` (finish the record, say goodbye, then close the session once
the reply has played — the way LiveKit's own `EndCallTool` does it) and `transfer`
(hand off to an agent listed in `handoffs` by returning the new agent). Configs name
them; `app.agents.tool_registry` maps the names to these builders.

HTTP tools: declarative calls to an admin-configured URL; arguments are validated
against the tool's `parameters` first, and every failure mode (status, timeout,
connection, non-JSON, oversized body) comes back as an `error: ...` string.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
from livekit.agents import RunContext, function_tool, llm
from livekit.agents.llm import RawFunctionTool

from app.agents.base import BaseAgent
from app.agents.context import ConfigSource, SessionRecorder
from app.domain import AgentConfig, DomainError, HttpTool, NotFound, SessionStatus
from app.domain.jsonschema_safe import validator_for, value_problems

logger = logging.getLogger(__name__)

MAX_PER_FIELD_TOOLS = 12
MAX_TOOL_OUTPUT_CHARS = 4096
MAX_HTTP_RESPONSE_BYTES = 256 * 1024
MAX_REASON_CHARS = 500

Handler = Callable[[dict[str, object], RunContext[Any]], Any]
BuildAgent = Callable[[AgentConfig, llm.ChatContext], BaseAgent]
"""Builds a handoff target (the factory, bound to the session's context)."""


# ----------------------------------------------------------------------- validation

_VALIDATION_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tool-validation")
"""Where tool arguments are validated. Not on the session's loop: the write-time caps
bound a schema's cost, but a bounded schema against a large value can still take up to
`VALIDATION_BUDGET_S` of CPU, which on the loop would delay every call's audio. Two
workers: a burst of such values queues here instead of taking every core."""


async def argument_problems(validator: jsonschema.protocols.Validator, instance: object) -> list[str]:
    """Readable validation errors, best first ([] when valid), computed off the loop."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_VALIDATION_POOL, value_problems, validator, instance)


def _tool(name: str, description: str, parameters: dict[str, Any], handler: Handler) -> RawFunctionTool[..., Any]:
    return function_tool(
        handler,
        raw_schema={"name": name, "description": description, "parameters": parameters},
    )


def _defs(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Root-level definitions a property may `$ref`, carried into tool parameters."""
    return {k: schema[k] for k in ("$defs", "definitions") if k in schema}


# --------------------------------------------------------------------- schema tools


def build_schema_tools(schema: Mapping[str, Any], recorder: SessionRecorder) -> list[RawFunctionTool[..., Any]]:
    """Tools through which the model records the data described by `schema_config`."""
    props: Mapping[str, Any] = schema.get("properties") or {}
    if not props:
        return []
    required = [r for r in schema.get("required", []) if r in props]
    # Validation awaits a worker thread; the lock (FIFO) keeps recording in the order
    # the model called the tools when it calls several at once (a correction wins).
    in_order = asyncio.Lock()
    if len(props) <= MAX_PER_FIELD_TOOLS:
        return [
            _field_tool(name, prop, name in required, required, _defs(schema), recorder, in_order)
            for name, prop in props.items()
        ]
    return [_grouped_tool(props, required, _defs(schema), recorder, in_order)]


def _prop_schema(prop: object) -> dict[str, Any]:
    """A property's schema as a dict: JSON Schema also allows `true`/`false`."""
    if isinstance(prop, Mapping):
        return dict(prop)
    return {} if prop else {"not": {}}


def _describe(prop: Mapping[str, Any]) -> str:
    text = prop.get("description") or prop.get("title") or ""
    return text if isinstance(text, str) else ""


def _recorded_message(recorder: SessionRecorder, recorded: Mapping[str, Any], required: Sequence[str]) -> str:
    fields = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in recorded.items())
    missing = [r for r in required if r not in recorder.collected]
    tail = (
        "All required fields collected."
        if not missing
        else f"Still missing required fields: {', '.join(missing)}."
    )
    return f"Recorded {fields}. {tail}"


def _field_tool(
    name: str,
    prop: object,
    is_required: bool,
    required: Sequence[str],
    defs: Mapping[str, Any],
    recorder: SessionRecorder,
    in_order: asyncio.Lock,
) -> RawFunctionTool[..., Any]:
    prop_schema = _prop_schema(prop)
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"value": prop_schema},
        "required": ["value"],
        **defs,
    }
    validator = validator_for(parameters)
    desc = _describe(prop_schema)
    description = f"Record '{name}' as soon as the user has provided it" + (
        " (required)." if is_required else "."
    )
    if desc:
        description += f" {desc}"

    async def handler(raw_arguments: dict[str, object], context: RunContext[Any]) -> str:
        async with in_order:
            problems = await argument_problems(validator, raw_arguments)
            if problems:
                return (
                    f"Error: '{name}' was not recorded: {'; '.join(problems)}. "
                    "Ask the user for a valid value."
                )
            value = raw_arguments["value"]
            recorder.record_data({name: value})
            return _recorded_message(recorder, {name: value}, required)

    return _tool(f"record_{name}", description, parameters, handler)


def _grouped_tool(
    props: Mapping[str, Any],
    required: Sequence[str],
    defs: Mapping[str, Any],
    recorder: SessionRecorder,
    in_order: asyncio.Lock,
) -> RawFunctionTool[..., Any]:
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {k: _prop_schema(v) for k, v in props.items()},
        "additionalProperties": False,
        "minProperties": 1,
        **defs,
    }
    validator = validator_for(parameters)
    description = (
        "Record one or more fields of the data you are collecting, as soon as the user has "
        "provided them; pass only the fields you know."
    )
    if required:
        description += f" Required fields: {', '.join(required)}."

    async def handler(raw_arguments: dict[str, object], context: RunContext[Any]) -> str:
        async with in_order:
            problems = await argument_problems(validator, raw_arguments)
            if problems:
                return (
                    f"Error: nothing was recorded: {'; '.join(problems)}. "
                    "Fix or ask the user about these fields and call record_data again."
                )
            data = dict(raw_arguments)
            recorder.record_data(data)
            return _recorded_message(recorder, data, required)

    return _tool("record_data", description, parameters, handler)


# ------------------------------------------------------------------------- built-ins


def _opt_str(value: object, limit: int = MAX_REASON_CHARS) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()[:limit]
    return None


END_SESSION_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {
            "type": "string",
            "description": "Why the session ends, e.g. 'all information collected' or 'user said goodbye'.",
        }
    },
}


def build_end_session_tool(recorder: SessionRecorder) -> RawFunctionTool[..., Any]:
    """Finish the record as completed, let the model say goodbye, then close the session.

    The goodbye is the tool reply the model generates from this tool's output (so it is
    in the agent's language and works with or without TTS); `session.shutdown()` runs
    once the speech handle that called the tool — which the reply reuses — is done.
    Closing from inside the tool would wait on the tool's own speech: a deadlock.
    """
    ending = False

    async def handler(raw_arguments: dict[str, object], context: RunContext[Any]) -> str:
        nonlocal ending
        if ending:
            return "The session is already ending; say nothing more."
        ending = True
        reason = _opt_str(raw_arguments.get("reason")) or "end_session"
        recorder.finish(SessionStatus.completed, reason)
        session = context.session
        context.speech_handle.add_done_callback(lambda _: session.shutdown())
        return (
            "The session ends after this reply. Say a brief goodbye to the user "
            "and do not call any tool."
        )

    return _tool(
        "end_session",
        "End the session when the conversation is complete or the user wants to stop. "
        "Afterwards you only say a brief goodbye.",
        END_SESSION_PARAMETERS,
        handler,
    )


def build_transfer_tool(
    config: AgentConfig,
    recorder: SessionRecorder,
    configs: ConfigSource,
    build_agent: BuildAgent,
) -> RawFunctionTool[..., Any]:
    """Hand the conversation to one of `config.handoffs` (LiveKit handoff by return value).

    Returning `(agent, ToolResult(..., reply_required=False))` makes LiveKit swap the
    active agent after the tool step; the current agent does not answer, the new one
    does from its `on_enter` (see `BaseAgent`). The chat history is carried over
    without the old agent's instructions. The handoff is recorded when the new agent
    is actually entered (LiveKit drops a handoff whose turn was interrupted).
    """
    allowed = list(config.handoffs)
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "agent_id": {
                "type": "string",
                "enum": allowed,
                "description": "The agent to hand the conversation to.",
            },
            "reason": {"type": "string", "description": "Why the user is transferred."},
        },
        "required": ["agent_id"],
    }

    async def handler(raw_arguments: dict[str, object], context: RunContext[Any]) -> Any:
        target = raw_arguments.get("agent_id")
        if not isinstance(target, str) or target not in allowed:
            shown = json.dumps(target)[:80] if not isinstance(target, str) else repr(target[:80])
            return f"error: cannot transfer to {shown}; allowed agent ids: {', '.join(allowed)}"
        reason = _opt_str(raw_arguments.get("reason"))
        try:
            target_cfg = await configs.get_agent_config(target)
        except NotFound:
            return f"error: agent {target!r} is not available; continue the conversation yourself"
        except DomainError as e:
            logger.warning("transfer to %r: config unavailable: %s", target, e.message)
            return f"error: agent {target!r} cannot be reached right now; continue yourself"
        if not target_cfg.enabled:
            return f"error: agent {target!r} is not available; continue the conversation yourself"
        chat_ctx = context.session.current_agent.chat_ctx.copy(exclude_instructions=True)
        try:
            agent = build_agent(target_cfg, chat_ctx)
        except ValueError as e:  # MissingVariables and bad templates
            logger.warning("transfer to %r refused: %s", target, e)
            return f"error: agent {target!r} cannot take over this session; continue yourself"

        def entered() -> None:
            recorder.record_handoff(config.agent_id, target, reason)
            recorder.set_agent(target, target_cfg.version)

        agent.add_enter_hook(entered)
        return agent, llm.ToolResult(f"transferred to {target}", reply_required=False)

    return _tool(
        "transfer",
        "Transfer the user to another agent when they need something that agent handles. "
        f"Allowed agent ids: {', '.join(allowed)}.",
        parameters,
        handler,
    )


# ------------------------------------------------------------------------ HTTP tools

_default_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def default_http_client() -> httpx.AsyncClient:
    """A lazily created client for the running loop.

    Keyed by event loop because the THREAD executor runs each job on its own loop and
    an httpx client's connection pool belongs to the loop that opened it.
    """
    loop = asyncio.get_running_loop()
    client = _default_clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            follow_redirects=False,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        _default_clients[loop] = client
    return client


async def aclose_default_http_client() -> None:
    """Close the running loop's default client (call at job/worker shutdown)."""
    client = _default_clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def _query_params(args: Mapping[str, object]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in args.items():
        if v is None:
            continue
        if isinstance(v, bool):
            out[k] = "true" if v else "false"
        elif isinstance(v, (str, int, float)):
            out[k] = str(v)
        else:
            out[k] = json.dumps(v, separators=(",", ":"))
    return out


def _cap(text: str, limit: int = MAX_TOOL_OUTPUT_CHARS) -> str:
    if len(text) <= limit:
        return text
    marker = " …[truncated]"
    return text[: limit - len(marker)] + marker


async def call_http_tool(
    spec: HttpTool, arguments: Mapping[str, object], client: httpx.AsyncClient
) -> str:
    """Perform the call; the JSON response (compact, capped) or an `error: ...` string."""
    kwargs: dict[str, Any] = {"headers": spec.headers, "timeout": httpx.Timeout(spec.timeout_s)}
    if spec.method == "GET":
        kwargs["params"] = _query_params(arguments)
    else:
        kwargs["json"] = dict(arguments)
    try:
        async with asyncio.timeout(spec.timeout_s):  # whole-call budget, body included
            async with client.stream(spec.method, str(spec.url), **kwargs) as resp:
                if not 200 <= resp.status_code < 300:
                    return f"error: upstream returned {resp.status_code}"
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_HTTP_RESPONSE_BYTES:
                        return "error: upstream response too large"
    except (httpx.TimeoutException, TimeoutError):
        return f"error: upstream timed out after {spec.timeout_s:g}s"
    except httpx.HTTPError as e:
        logger.info("http tool %s failed: %s", spec.name, type(e).__name__)
        return f"error: could not reach upstream ({type(e).__name__})"
    try:
        data = json.loads(bytes(body)) if body.strip() else None
    except (ValueError, RecursionError):
        return "error: upstream returned a non-JSON response"
    return _cap(json.dumps(data, ensure_ascii=False, separators=(",", ":")))


def build_http_tool(spec: HttpTool, *, http_client: httpx.AsyncClient | None = None) -> RawFunctionTool[..., Any]:
    validator = validator_for(spec.parameters)

    async def handler(raw_arguments: dict[str, object], context: RunContext[Any]) -> str:
        problems = await argument_problems(validator, raw_arguments)
        if problems:
            return f"error: invalid arguments: {'; '.join(problems)}"
        return await call_http_tool(spec, raw_arguments, http_client or default_http_client())

    return _tool(spec.name, spec.description, dict(spec.parameters), handler)
