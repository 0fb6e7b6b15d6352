"""Tests stored with an agent, their runs, and the rule a publish gate applies.

A test is a conversation scenario in the sim's own format (`app.domain.scenario`),
stored under a name per agent and run by the server against one version of the agent
(`app.agents.test_runner`). The stored format is the scenario format minus what only
the offline harness can do (store outages, config changes mid-test, HTTP mocks, voice,
routing): those fields are refused at their line, so a stored test never means
something the server silently ignores. A run records, per test and per step, what was
expected and what happened, and the hash of the test set it ran, so "a passing run of
the *current* tests" is a comparison of two hashes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import Literal, Protocol

from pydantic import BaseModel, Field, field_validator

from app.domain.errors import DomainError, InvalidInput, PublishRefused
from app.domain.scenario.format import (
    LoadedScenario,
    Scenario,
    ScenarioError,
    ScenarioProblem,
    Step,
    loads_scenario,
)
from app.domain.values import UtcDatetime

TEST_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MAX_TESTS_PER_AGENT = 50
MAX_TEST_CHARS = 64_000
"""A test document's size limit: a long conversation is a few KiB of YAML."""


# ------------------------------------------------------------------- the format

_Problem = tuple[tuple[int | str, ...], str]
# What the server's runner does with a test: everything else the scenario format has (and
# whatever it gains later) is refused at its line until the runner learns it.
_SCENARIO_FIELDS = {"name", "description", "sessions", "model"}
_SESSION_FIELDS = {"name", "job_metadata", "start", "turns", "closes", "record"}
_STEP_FIELDS = {"llm", "expect", "no_more_events", "user"}
_REPLY_FIELDS = {"text", "tool", "args", "tools", "error", "usage"}
_RECORD_FIELDS = {"collected", "collected_include", "collected_keys", "handoffs"}


def _not_here(what: str) -> str:
    return f"`{what}` is a sim-only feature; a stored test runs one agent version in the server"


def _extra(model: BaseModel, allowed: set[str], loc: tuple[int | str, ...]) -> list[_Problem]:
    return [((*loc, name), _not_here(name)) for name in sorted(model.model_fields_set - allowed)]


class StoredTestScenario(Scenario):
    """The scenario format as stored with an agent. `model`: `scripted` (default) runs
    against the scenario's scripted replies (`llm:` of each step); `live` runs against
    the agent's own configured model, where only events marked `live: true` and the
    record's collected keys are checked (a real model's words vary)."""

    model: Literal["scripted", "live"] = "scripted"

    def problems(self) -> list[_Problem]:
        found = super().problems()
        found += _extra(self, _SCENARIO_FIELDS, ())
        for i, s in enumerate(self.sessions):
            sl: tuple[int | str, ...] = ("sessions", i)
            found += _extra(s, _SESSION_FIELDS, sl)
            if s.job_metadata is not None and not isinstance(s.job_metadata, dict):
                found.append(((*sl, "job_metadata"), "a mapping (e.g. `variables:`) in a stored test"))
            if s.record is not None:
                found += [((*sl, "record", name), f"`{name}` is not checked in a stored test (supported: "
                           f"{', '.join(sorted(_RECORD_FIELDS))})")
                          for name in sorted(s.record.model_fields_set - _RECORD_FIELDS)]
            steps: list[tuple[tuple[int | str, ...], Step | None]] = [((*sl, "start"), s.start)]
            steps += [((*sl, "turns", j), t) for j, t in enumerate(s.turns)]
            for where, step in steps:
                if step is None:
                    continue
                found += _extra(step, _STEP_FIELDS, where)
                for k, reply in enumerate(step.llm):
                    found += _extra(reply, _REPLY_FIELDS, (*where, "llm", k))
        return found


class InvalidTestDocument(InvalidInput):
    """A test document that is not a valid stored scenario (API: 422, each problem with
    its line and field)."""

    def __init__(self, name: str, problems: Sequence[ScenarioProblem]) -> None:
        first = problems[0] if problems else None
        where = f" (line {first.line}: {first.field or 'document'}: {first.message})" if first else ""
        super().__init__(f"test {name!r} is not a valid scenario{where}")
        self.problems = list(problems)


def parse_test_document(name: str, content: str) -> LoadedScenario:
    """Validate a test document; raises `InvalidTestDocument` naming line and field."""
    if len(content) > MAX_TEST_CHARS:
        raise InvalidTestDocument(name, [ScenarioProblem(line=None, field="", message=f"at most {MAX_TEST_CHARS} characters")])
    try:
        return loads_scenario(content, f"<test {name}>", StoredTestScenario)
    except ScenarioError as e:
        raise InvalidTestDocument(name, e.problems or [ScenarioProblem(line=None, field="", message=str(e))]) from None


# ------------------------------------------------------------------- documents


class AgentTestInput(BaseModel):
    """What a client writes: the scenario's YAML text (kept verbatim: comments and
    order are the author's)."""

    content: str = Field(min_length=1, max_length=MAX_TEST_CHARS, description="The scenario, as YAML text")


class AgentTestCreate(AgentTestInput):
    name: str = Field(description="`^[a-z0-9][a-z0-9_-]{0,62}$`; unique per agent")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not TEST_NAME_RE.match(v):
            raise ValueError("a test name is lowercase letters, digits, '-' and '_' (1-63, starting with a letter or digit)")
        return v


class AgentTest(BaseModel):
    agent_id: str
    name: str
    content: str
    created_at: UtcDatetime
    updated_at: UtcDatetime


def suite_hash(tests: Iterable[AgentTest]) -> str:
    """The identity of a test set: sha256 over (name, content) in name order. Two runs
    with the same hash ran exactly the same tests."""
    doc = sorted((t.name, t.content) for t in tests)
    return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode()).hexdigest()


# ---------------------------------------------------------------------- runs


class TestRunStatus(str, Enum):
    __test__ = False  # not a pytest class

    queued = "queued"
    running = "running"
    passed = "passed"
    failed = "failed"
    abandoned = "abandoned"
    """The process running it stopped before it finished (marked at the next start)."""

    @property
    def finished(self) -> bool:
        return self not in (TestRunStatus.queued, TestRunStatus.running)


class StepCheck(BaseModel):
    """One failed expectation of a step: where the test said it, what it expected, what happened."""

    line: int | None = None
    field: str = ""
    message: str
    expected: str | None = None
    actual: str | None = None


class StepResult(BaseModel):
    session: int
    step: str = Field(description="`start`, `turn N`, or `session` (checks after the conversation)")
    user: str | None = None
    passed: bool
    events: list[str] = Field(default_factory=list, description="What the agent did in this step")
    failures: list[StepCheck] = Field(default_factory=list)


class TestResult(BaseModel):
    __test__ = False

    name: str
    model: Literal["scripted", "live"] = "scripted"
    passed: bool
    steps: list[StepResult] = Field(default_factory=list)
    error: str | None = Field(None, description="Why the test could not run to the end, if it could not")
    duration_ms: float = 0.0


class TestRun(BaseModel):
    __test__ = False

    id: str
    agent_id: str
    version: int
    status: TestRunStatus
    tests_hash: str
    tests: list[str] = Field(description="The names of the tests this run runs")
    results: list[TestResult] = Field(default_factory=list)
    created_at: UtcDatetime
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    actor: str | None = Field(None, description="Who asked for the run (the API key's name)")
    error: str | None = None

    @property
    def failing(self) -> list[str]:
        return [r.name for r in self.results if not r.passed]


def new_run_id() -> str:
    import secrets

    return "run_" + secrets.token_hex(10)


class TestRunQueue(Protocol):
    """Where the API hands a queued run to be executed (`app.agents.test_pool`)."""

    def check_room(self) -> None:
        """Raise `InProgress` when no more runs may be queued now."""

    def submit(self, run: TestRun, tests: list[AgentTest]) -> None:
        """Start executing `run` (stored as queued) over `tests` in the background; never raises."""


# --------------------------------------------------------------------- the gate


class TestsNotPassing(PublishRefused):
    """Publishing needs a passing run of the current tests (API: 409 naming them in
    `failing`, as every refused publish does)."""

    __test__ = False

    def __init__(self, agent_id: str, version: int, names: list[str]) -> None:
        DomainError.__init__(
            self,
            f"version {version} of {agent_id!r} has no passing run of its current tests; not passing: "
            f"{', '.join(names)}",
            agent_id=agent_id, version=version, failing=list(names),
        )
        self.failing = list(names)
        self.names = names


def failing_names(tests: Sequence[AgentTest], runs: Sequence[TestRun], version_created_at: datetime) -> list[str]:
    """The gate's rule: the names of the current tests that have not passed for this
    version. Empty (may publish) when there are no tests, or when the newest finished
    run of exactly the current test set passed; otherwise that run's failing tests, or
    every current test when no finished run covers the current set (never run, or
    tests changed since). Only runs queued after the version was written count: an
    agent deleted and created again under the same id starts from version 1 again, and
    an old run of "version 1" says nothing about the new one."""
    if not tests:
        return []
    current = suite_hash(tests)
    names = sorted(t.name for t in tests)
    done = [r for r in runs if r.tests_hash == current and r.created_at >= version_created_at
            and r.status in (TestRunStatus.passed, TestRunStatus.failed)]
    if not done:
        return names
    newest = max(done, key=lambda r: (r.finished_at or r.created_at, r.created_at))
    if newest.status is TestRunStatus.passed:
        return []
    return sorted(newest.failing) or names
