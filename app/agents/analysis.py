"""Post-call analysis of one session: the request (which model, which settings), the
prompt, the structured-output schema, and the model call with validation and retries.

The model is LiveKit's OpenAI plugin LLM (the agent's own provider), asked for JSON
through Chat Completions' `response_format: json_schema` (passed as `extra_kwargs`:
LiveKit's own `response_format` argument takes pydantic types only, and the extraction
schema is only known at run time). Not `strict`: OpenAI's strict mode accepts only a
subset of JSON Schema, and any admitted schema must work. So the answer is checked here:
JSON, the expected keys, and `extracted` against the extraction schema with the safe
validator (`app.domain.jsonschema_safe`, off the event loop). An invalid answer is
retried with what was wrong; after `max_attempts` the analysis is failed with the reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
from livekit.agents import APIConnectOptions, APIError, llm as lk_llm
from livekit.plugins import openai as lk_openai

from app.agents.factory import PLACEHOLDER_API_KEY, shared_tls_context
from app.domain import AgentConfig, SessionRecord
from app.domain.analysis import AnalysisConfig, AnalysisRequest, SuccessVerdict
from app.domain.jsonschema_safe import validator_for, value_problems
from app.settings import Settings

log = logging.getLogger(__name__)

MAX_TRANSCRIPT_CHARS = 60_000
"""Longer transcripts keep their start and end (what a call is about, how it ended)."""
MAX_COLLECTED_CHARS = 8_000
MAX_ANSWER_TOKENS = 4096
"""Bounds what a model can send back (a model answering garbage does not run on)."""
MAX_REASON_CHARS = 500
RETRY_DELAY_S = 0.5

SYSTEM_PROMPT = (
    "You analyse a finished conversation between a caller and a voice agent for the agent's "
    "operators. Answer with one JSON object that matches the response schema, and nothing else. "
    "Base every answer on the transcript and the collected data only; where the transcript does "
    "not say, leave an optional field out rather than guess."
)


def analysis_request(settings: Settings, config: AgentConfig) -> AnalysisRequest | None:
    """What to ask when a session of `config` ends, or None when it has no analysis.
    The model: the agent's analysis setting, else `ANALYSIS_MODEL`, else the agent's own
    model (and its endpoint)."""
    if config.analysis is None:
        return None
    cfg = config.llm
    model = config.analysis.model or settings.analysis_model or cfg.model or settings.default_llm_model
    base_url = str(cfg.base_url) if cfg.base_url else settings.openai_base_url
    return AnalysisRequest(
        agent_id=config.agent_id, config_version=config.version, settings=config.analysis,
        model=model, base_url=base_url,
    )


def analysis_client(settings: Settings, base_url: str | None) -> openai.AsyncClient:
    """A long-lived client for one endpoint, configured as the factory configures session
    clients (shared TLS context, no SDK retries: `run_analysis` retries)."""
    key = settings.openai_api_key
    return openai.AsyncClient(
        api_key=key.get_secret_value() if key is not None else PLACEHOLDER_API_KEY,
        base_url=base_url,
        max_retries=0,
        http_client=httpx2.AsyncClient(
            verify=shared_tls_context(),
            timeout=httpx2.Timeout(connect=15.0, read=60.0, write=15.0, pool=15.0),
            follow_redirects=True,
        ),
    )


def analysis_llm(request: AnalysisRequest, client: openai.AsyncClient) -> lk_openai.LLM:
    return lk_openai.LLM(model=request.model, client=client, max_completion_tokens=MAX_ANSWER_TOKENS)


# ---------------------------------------------------------------------- the prompt


def _embedded(schema: Any, pointer: str) -> Any:
    """`schema` placed at `pointer` of another document: its local `$ref`s re-rooted
    (`#/$defs/x` -> `<pointer>/$defs/x`), its root `$schema`/`$id` dropped."""
    if isinstance(schema, Mapping):
        out = {}
        for k, v in schema.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#"):
                out[k] = pointer + v[1:]
            else:
                out[k] = _embedded(v, pointer)
        return out
    if isinstance(schema, list):
        return [_embedded(v, pointer) for v in schema]
    return schema


def response_schema(settings: AnalysisConfig) -> dict[str, Any]:
    """The JSON Schema of the whole answer: `summary`, `success`, `extracted`, as asked."""
    props: dict[str, Any] = {}
    if settings.summary_prompt is not None:
        props["summary"] = {"type": "string", "description": "The summary, as the instructions ask."}
    if settings.success_criteria is not None:
        props["success"] = {
            "type": "object",
            "properties": {
                "passed": {"type": "boolean", "description": "Whether the call met the success criteria."},
                "reason": {"type": "string", "description": "One sentence: why it passed or failed."},
            },
            "required": ["passed", "reason"],
            "additionalProperties": False,
        }
    if settings.extraction_schema is not None:
        extraction = {k: v for k, v in settings.extraction_schema.items() if k not in ("$schema", "$id")}
        props["extracted"] = _embedded(extraction, "#/properties/extracted")
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def response_format(settings: AnalysisConfig) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "session_analysis", "schema": response_schema(settings), "strict": False},
    }


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[-half:]}"


ROLE_NAMES = {"user": "Caller", "assistant": "Agent", "system": "System", "tool": "Tool"}


def transcript_text(record: SessionRecord) -> str:
    lines = []
    for turn in record.turns:
        who = ROLE_NAMES.get(turn.role, turn.role)
        if turn.role == "assistant" and turn.agent_id and turn.agent_id != record.agent_id:
            who = f"Agent ({turn.agent_id})"
        lines.append(f"{who}: {turn.text}")
    return _clip("\n".join(lines), MAX_TRANSCRIPT_CHARS)


def user_prompt(record: SessionRecord, settings: AnalysisConfig) -> str:
    tasks = []
    if settings.summary_prompt is not None:
        tasks.append(f"- `summary`: {settings.summary_prompt}")
    if settings.success_criteria is not None:
        tasks.append(
            "- `success`: did the call meet these success criteria? `passed` true or false, and a "
            f"one-sentence `reason`. Criteria: {settings.success_criteria}"
        )
    if settings.extraction_schema is not None:
        tasks.append("- `extracted`: the fields its schema describes, as the caller stated them.")
    collected = _clip(json.dumps(record.collected, ensure_ascii=False, default=str), MAX_COLLECTED_CHARS)
    ended = record.end_reason or (record.status.value if record.status else "unknown")
    return (
        "Tasks:\n" + "\n".join(tasks)
        + f"\n\nHow the call ended: {ended}"
        + f"\n\nData the agent collected during the call (JSON):\n{collected}"
        + f"\n\nTranscript:\n{transcript_text(record)}"
    )


# ---------------------------------------------------------------------- the answer


class InvalidAnswer(ValueError):
    """The model's answer is not what the schema asks for; the message says why."""


@dataclass
class Answer:
    summary: str | None = None
    success: SuccessVerdict | None = None
    extracted: dict[str, Any] | None = None


async def parse_answer(text: str, settings: AnalysisConfig) -> Answer:
    """The model's text as an `Answer`, or `InvalidAnswer` naming what is wrong."""
    body = text.strip()
    if body.startswith("```"):  # a fenced block despite the instructions
        body = body.strip("`").removeprefix("json").strip()
    try:
        doc = json.loads(body)
    except ValueError:
        raise InvalidAnswer(f"not JSON: {text[:120]!r}") from None
    if not isinstance(doc, dict):
        raise InvalidAnswer(f"not a JSON object but {type(doc).__name__}")
    expected = set(response_schema(settings)["properties"])
    missing, extra = sorted(expected - doc.keys()), sorted(doc.keys() - expected)
    if missing or extra:
        raise InvalidAnswer(", ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(extra)}"] if extra else [])
        ))
    answer = Answer()
    if "summary" in expected:
        if not isinstance(doc["summary"], str) or not doc["summary"].strip():
            raise InvalidAnswer("summary must be a non-empty string")
        answer.summary = doc["summary"].strip()
    if "success" in expected:
        s = doc["success"]
        if not isinstance(s, dict) or not isinstance(s.get("passed"), bool) or not isinstance(s.get("reason"), str):
            raise InvalidAnswer('success must be {"passed": true|false, "reason": "..."}')
        answer.success = SuccessVerdict(passed=s["passed"], reason=s["reason"].strip()[:MAX_REASON_CHARS])
    if settings.extraction_schema is not None:
        value = doc["extracted"]
        validator = validator_for(settings.extraction_schema)
        problems = await asyncio.to_thread(value_problems, validator, value)
        if problems:
            raise InvalidAnswer("extracted does not match its schema: " + "; ".join(problems))
        answer.extracted = value
    return answer


# ------------------------------------------------------------------------- the run


@dataclass
class AnalysisOutcome:
    answer: Answer | None
    """None: every attempt failed (`error` says why)."""
    error: str | None = None
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    problems: list[str] = field(default_factory=list)
    """One line per failed attempt."""


async def run_analysis(llm: lk_llm.LLM[Any], record: SessionRecord, request: AnalysisRequest) -> AnalysisOutcome:
    """Ask `llm` up to `max_attempts` times, each bounded by `timeout_s`; never raises for
    what the model or its endpoint does (cancellation passes through)."""
    settings = request.settings
    chat = lk_llm.ChatContext.empty()
    chat.add_message(role="system", content=SYSTEM_PROMPT)
    chat.add_message(role="user", content=user_prompt(record, settings))
    out = AnalysisOutcome(answer=None)
    extra = {"response_format": response_format(settings)}
    conn = APIConnectOptions(max_retry=0, timeout=settings.timeout_s)
    for attempt in range(1, settings.max_attempts + 1):
        out.attempts = attempt
        try:
            async with asyncio.timeout(settings.timeout_s):
                response = await llm.chat(chat_ctx=chat, conn_options=conn, extra_kwargs=extra).collect()
        except TimeoutError:
            out.problems.append(f"no answer within {settings.timeout_s:g} s")
        except APIError as e:
            out.problems.append(f"the model endpoint failed: {str(e)[:200]}")
        else:
            if response.usage is not None:
                out.input_tokens += response.usage.prompt_tokens
                out.output_tokens += response.usage.completion_tokens
            try:
                out.answer = await parse_answer(response.text, settings)
                return out
            except InvalidAnswer as e:
                out.problems.append(f"invalid answer: {e}"[:MAX_REASON_CHARS])
                # show the model its answer and what was wrong with it
                chat.add_message(role="assistant", content=response.text[:4000] or "(empty)")
                chat.add_message(role="user", content=(
                    f"That answer is invalid ({e}). Answer again with only a JSON object matching the schema."
                ))
        log.info("session %s: analysis attempt %d failed: %s", record.session_id, attempt, out.problems[-1])
        if attempt < settings.max_attempts:
            await asyncio.sleep(RETRY_DELAY_S * attempt)
    out.error = f"{out.attempts} attempt(s) failed; last: {out.problems[-1]}"[:MAX_REASON_CHARS]
    return out
