"""The parsed-config memo: stored versions are immutable, so a version parsed once (keyed
by its `VersionKey`) never goes stale, and re-validating stored JSON on every read would
only burn CPU. Also where a stored version that no longer validates is reported."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from app.domain import AgentConfig, CorruptRecord
from app.store.backend import StoredVersion, VersionKey

log = logging.getLogger(__name__)

MAX_PARSED = 4096


def parse_stored_config(data: Any, agent_id: str, version: int) -> AgentConfig:
    """A stored version as the domain model, or `CorruptRecord` naming it.

    Stored rows were valid when written, so a failure means the row was edited by hand
    or written by a newer build (then the app was rolled back). The message carries
    the field path and pydantic's message, never the stored value (it may be a secret
    header)."""
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
        raise CorruptRecord(
            f"stored configuration of agent {agent_id!r} version {version} does not validate "
            f"in this build ({where}: {first.get('msg')}); roll the agent back to a valid "
            "version or delete it",
            agent_id=agent_id, version=version, field=where,
        ) from None


class ParsedVersions(dict[VersionKey, AgentConfig]):
    """Bounded (oldest out first); the backends are given it as the set of keys whose data
    they need not fetch."""

    def __init__(self) -> None:
        super().__init__()
        self._corrupt_seen: set[tuple[str, int]] = set()

    def remember(self, key: VersionKey, cfg: AgentConfig) -> AgentConfig:
        if key not in self:
            if len(self) >= MAX_PARSED:
                self.pop(next(iter(self)))
            self[key] = cfg
        return cfg

    def parse(self, stored: StoredVersion) -> AgentConfig:
        """`CorruptRecord` if the stored data no longer validates."""
        cfg = self.get(stored.key)
        if cfg is not None:
            return cfg
        if stored.data is None:  # the backend left it out because we had it: evicted since
            raise LookupError(stored.key)
        return self.remember(stored.key, parse_stored_config(stored.data, stored.key.agent_id, stored.key.version))

    def parse_listing(self, rows: list[StoredVersion]) -> list[AgentConfig]:
        """A listing without the rows that no longer validate (one bad row must not hide every
        other agent from the API and the worker's cache); each is logged once per process."""
        out: list[AgentConfig] = []
        for row in rows:
            try:
                out.append(self.parse(row))
            except CorruptRecord as e:
                key = (row.key.agent_id, row.key.version)
                if key not in self._corrupt_seen:
                    self._corrupt_seen.add(key)
                    log.error("%s (left out of listings)", e.message)
        return out
