"""The PTE Academic speaking practice examiner's scoring: the `record_score` built-in tool.

The conversation itself (task scripts, timing instructions, rubrics) lives in
`prompts/pte_interview.yaml`, an ordinary agent config that `AGENT_MODE=pte` serves as
the process's only agent (`app.store.sources`) and that names `record_score` among its
built-in tools; the examiner calls it after each task.

Scores accumulate in the session's collected data as
`{"scores": {task_id: {"content", "oral_fluency", "pronunciation", "note"}}}`; once all
five tasks are scored, `{"estimated_band": N}` is stored too and the tool's reply gives
the band so the examiner can read it out.

Trait scales (whole numbers):
    content: 0-3 for repeat_sentence (the PTE word-sequence scale) and for
             answer_short_question (number of the three questions answered correctly);
             0-5 for the other three tasks.
    oral_fluency, pronunciation: 0-5 for every task (the PTE 0-5 trait scales).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

from livekit.agents import RunContext, function_tool
from livekit.agents.llm import RawFunctionTool

from app.agents.context import SessionRecorder
from app.domain.jsonschema_safe import validator_for

RECORD_SCORE_TOOL = "record_score"
BAND_MIN, BAND_MAX = 10, 90
TRAIT_MAX = 5
TRAITS = ("content", "oral_fluency", "pronunciation")


@dataclass(frozen=True)
class PTETask:
    id: str
    title: str
    content_max: int
    weight: int
    """Relative weight in the practice band (see `estimate_band`)."""


PTE_TASK_SPECS: dict[str, PTETask] = {
    t.id: t
    for t in (
        PTETask("personal_introduction", "personal introduction", 5, 1),
        PTETask("repeat_sentence", "repeat sentence", 3, 3),
        PTETask("answer_short_question", "answer short question", 3, 1),
        PTETask("retell_lecture", "re-tell lecture", 5, 3),
        PTETask("respond_to_situation", "respond to a situation", 5, 2),
    )
}
PTE_TASKS: list[str] = list(PTE_TASK_SPECS)
"""Task ids in the order the examiner runs them."""


# ------------------------------------------------------------------------------ band


def estimate_band(scores: Mapping[str, Mapping[str, Any]]) -> int:
    """A deterministic practice estimate of the PTE speaking band, 10-90.

    For each scored task t, its trait scores are normalised to 0..1 and averaged with
    equal weight::

        s_t = (content / content_max_t + oral_fluency / 5 + pronunciation / 5) / 3

    The tasks are combined as a weighted mean over the tasks that have scores, with
    weights personal_introduction 1, repeat_sentence 3, answer_short_question 1,
    retell_lecture 3, respond_to_situation 2 (the longer, integrated tasks count most,
    as they do in PTE speaking)::

        F = sum(w_t * s_t) / sum(w_t)        band = round_half_up(10 + 80 * F)

    Computed with exact fractions, so it is deterministic, bounded (all zeros give 10,
    all maxima give 90) and never decreases when any single score increases. With only
    some tasks scored, the estimate uses those alone. This is a practice heuristic, not
    Pearson's scoring model.

    Raises `ValueError` for no scores, an unknown task, or a score out of range.
    """
    if not scores:
        raise ValueError("no task scores to estimate a band from")
    total = Fraction(0)
    weights = 0
    for task_id, traits in scores.items():
        spec = PTE_TASK_SPECS.get(task_id)
        if spec is None:
            raise ValueError(f"unknown task {task_id!r}")
        maxima = {"content": spec.content_max, "oral_fluency": TRAIT_MAX, "pronunciation": TRAIT_MAX}
        parts = []
        for trait, top in maxima.items():
            value = traits.get(trait) if isinstance(traits, Mapping) else None
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= top:
                raise ValueError(f"{task_id}.{trait} must be a number from 0 to {top}, got {value!r}")
            parts.append(Fraction(value) / top)
        total += spec.weight * sum(parts, Fraction(0)) / len(parts)
        weights += spec.weight
    fraction = total / weights
    raw = BAND_MIN + (BAND_MAX - BAND_MIN) * fraction
    return math.floor(raw + Fraction(1, 2))  # round half up, exactly


# ------------------------------------------------------------------------------ tool


RECORD_SCORE_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "task": {
            "type": "string",
            "enum": PTE_TASKS,
            "description": "The task just completed.",
        },
        "content": {
            "type": "integer",
            "minimum": 0,
            "maximum": 5,
            "description": (
                "Content score, a whole number. repeat_sentence: 0-3 (average over the three "
                "sentences). answer_short_question: 0-3, the number answered correctly. "
                "personal_introduction, retell_lecture, respond_to_situation: 0-5."
            ),
        },
        "oral_fluency": {
            "type": "integer",
            "minimum": 0,
            "maximum": 5,
            "description": "Oral fluency, 0-5 (5 = smooth and natural, 0 = no meaningful speech).",
        },
        "pronunciation": {
            "type": "integer",
            "minimum": 0,
            "maximum": 5,
            "description": "Pronunciation, 0-5 (5 = every word clear and correct).",
        },
        "note": {
            "type": "string",
            "minLength": 1,
            "maxLength": 500,
            "description": "One or two sentences of specific feedback for the candidate on this task.",
        },
    },
    "required": ["task", "content", "oral_fluency", "pronunciation", "note"],
    "additionalProperties": False,
}

RECORD_SCORE_SCHEMA: dict[str, Any] = {
    "name": RECORD_SCORE_TOOL,
    "description": (
        "Save your practice scores for one PTE speaking task. Call it once, right after the "
        "candidate finishes each task and before introducing the next. Do not read scores "
        "aloud until the closing summary. The reply names the next task, and gives the "
        "estimated band once all five tasks are scored."
    ),
    "parameters": RECORD_SCORE_PARAMETERS,
}

_validator = validator_for(RECORD_SCORE_PARAMETERS)  # the one validator for untrusted data


def validate_score(arguments: Mapping[str, object]) -> tuple[dict[str, Any] | None, str | None]:
    """`(clean, None)` for valid `record_score` arguments, else `(None, problem)`."""
    if not isinstance(arguments, Mapping):
        return None, "arguments must be an object"
    errors = sorted(_validator.iter_errors(dict(arguments)), key=lambda e: list(e.path))
    if errors:
        problems = []
        for e in errors[:5]:
            where = ".".join(str(p) for p in e.path)
            problems.append(f"{where}: {e.message}" if where else e.message)
        return None, "; ".join(problems)
    task = PTE_TASK_SPECS[str(arguments["task"])]
    clean: dict[str, Any] = {t: int(cast(float, arguments[t])) for t in TRAITS}
    if clean["content"] > task.content_max:
        return None, (
            f"content for {task.id} is scored 0 to {task.content_max}, got {clean['content']}"
        )
    clean["note"] = str(arguments["note"]).strip()
    if not clean["note"]:
        return None, "note: must not be blank"
    return clean, None


def record_score_tool(recorder: SessionRecorder) -> RawFunctionTool[..., Any]:
    """The `record_score` LiveKit tool, writing to `recorder`."""

    async def handler(raw_arguments: dict[str, object], context: RunContext[Any]) -> str:
        clean, problem = validate_score(raw_arguments)
        if clean is None:
            return (
                f"Not saved: {problem}. Call {RECORD_SCORE_TOOL} again with corrected values. "
                "Do not mention this to the candidate."
            )
        task_id = str(raw_arguments["task"])
        previous = recorder.collected.get("scores")
        scores: dict[str, Any] = {
            t: copy.deepcopy(v)
            for t, v in (previous.items() if isinstance(previous, Mapping) else ())
            if t in PTE_TASK_SPECS  # stale or foreign entries must not break the band
        }
        rescored = task_id in scores
        scores[task_id] = clean
        remaining = [t for t in PTE_TASKS if t not in scores]
        update: dict[str, Any] = {"scores": scores}
        saved = f"{'Updated' if rescored else 'Saved'} the scores for {task_id}."
        if remaining:
            recorder.record_data(update)
            return (
                f"{saved} Still to score, in order: {', '.join(remaining)}. "
                f"Next task: {remaining[0]} ({PTE_TASK_SPECS[remaining[0]].title}). "
                "Do not read scores aloud yet."
            )
        band = estimate_band(scores)
        update["estimated_band"] = band
        recorder.record_data(update)
        return (
            f"{saved} All five tasks are scored. Estimated practice band: {band} out of 90. "
            "This is a practice estimate, not an official PTE score: say so when you read it "
            "out. Now give the closing summary."
        )

    return function_tool(handler, raw_schema=copy.deepcopy(RECORD_SCORE_SCHEMA))
