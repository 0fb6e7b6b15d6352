"""The publish gate of stored tests: may this version of an agent go live?

Called by whoever publishes (the publish endpoint, rollback): `failing_tests` answers
with the names of the tests that stand in the way, empty when the version may publish.
Policy (`app.domain.agent_tests.failing_names`): only a version whose own config says
`require_passing_tests: true` is gated, and then it needs a finished run, against that
version, of exactly the current test set, that passed. An agent without tests passes
(there is nothing to fail; a team that wants "no tests, no publish" writes one).
"""

from __future__ import annotations

from app.domain import AgentConfig
from app.domain.agent_tests import TestsNotPassing, failing_names
from app.store.agent_test_service import MAX_RUNS_LISTED
from app.store.base import ConfigStore


async def failing_tests(
    store: ConfigStore, agent_id: str, version: int, config: AgentConfig | None = None
) -> list[str]:
    """Names of the current tests without a passing run against `version`; empty = may
    publish. `config`: that version when it is being written (not stored yet, so no run
    can have covered it). Raises `NotFound` if that version does not exist."""
    config = config if config is not None else await store.get_agent_config(agent_id, version)
    if not config.require_passing_tests:
        return []
    tests = await store.list_agent_tests(agent_id)
    runs = await store.list_test_runs(agent_id, version, limit=MAX_RUNS_LISTED)
    return failing_names(tests, runs, config.created_at)


async def require_passing_tests(
    store: ConfigStore, agent_id: str, version: int, config: AgentConfig | None = None
) -> None:
    """`failing_tests`, as the error the API answers with 409 naming the tests."""
    names = await failing_tests(store, agent_id, version, config)
    if names:
        raise TestsNotPassing(agent_id, version, names)
