"""Shared handler parameter types and the DI providers behind them.

Dependencies are process-lifetime objects handed to `create_app`; they are provided
once (`use_cache`) and not validated per request (`SkipValidation`): they are our
own objects, not client input, and an isinstance check against the runtime-checkable
`ConfigStore` Protocol walks each of its ~25 members on every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter, SkipValidation

from app.api.status import RuntimeStatus
from app.domain import AgentConfig
from app.domain.rollout import GuardPolicy
from app.store.base import ConfigStore
from app.store.cache import ConfigCache
from app.store.sources import SnapshotSource
from app.webhooks.safety import UrlPolicy

MAX_PAGE = 200
MAX_INT = 2**31 - 1
"""Upper bound for ids/offsets from the URL: larger values are a 422, not a database
overflow error (SQLite integers are 64-bit, Postgres `integer` 32-bit)."""


@dataclass(frozen=True, slots=True)
class ConfigReader:
    """Reads of one agent config: from the worker's cache while it is fresh, else the store.

    One object rather than two injected dependencies on purpose: Litestar resolves two
    or more dependencies of a handler concurrently in an anyio task group, which on
    the hottest endpoint costs more than the handler itself.

    Freshness: a write through this process makes the cache not-fresh at once (so
    read-your-writes holds and the store answers until the next poll reloads it);
    another process's write shows within the cache's poll interval. Unknown ids and
    past versions always go to the store, so a 404 is authoritative. Writes never
    read through here: If-Match is checked by the store itself.
    """

    store: ConfigStore
    cache: ConfigCache | None = None

    async def get(self, agent_id: str, version: int | None = None) -> AgentConfig:
        cache = self.cache
        if version is None and cache is not None and cache.is_fresh():
            cfg = cache.snapshot.newest(agent_id)  # the published one, unless drafts follow it
            if cfg is not None:
                return cfg
        return await self.store.get_agent_config(agent_id, version)


Store = NamedDependency[SkipValidation[ConfigStore]]
Reader = NamedDependency[SkipValidation[ConfigReader]]
Status = NamedDependency[SkipValidation[RuntimeStatus]]
UrlPolicyDep = NamedDependency[SkipValidation[UrlPolicy]]
"""Where webhook URLs may point (`url_policy`)."""
Policy = NamedDependency[SkipValidation[GuardPolicy]]
"""The rollout guard's thresholds (`policy`): the verdict `GET .../rollout` shows."""
Configs = NamedDependency[SkipValidation[SnapshotSource]]
"""The process's config source: what sessions are resolved against (`app.store.sources`)."""

Offset = Annotated[int, QueryParameter(ge=0, le=MAX_INT, description="Items to skip")]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="Page size (1..200)")]


def constant(value: object) -> Provide:
    """A provider for a process-lifetime object: resolved once, no thread hop."""

    def provide() -> object:
        return value

    return Provide(provide, use_cache=True, sync_to_thread=False)


def dependencies(
    store: ConfigStore, cache: ConfigCache | None, status: RuntimeStatus, configs: SnapshotSource,
    url_policy: UrlPolicy, policy: GuardPolicy | None = None,
) -> dict[str, Provide]:
    """The app-level DI map; names match the handler parameters typed above."""
    return {
        "store": constant(store),
        "reader": constant(ConfigReader(store, cache)),
        "runtime_status": constant(status),
        "configs": constant(configs),
        "url_policy": constant(url_policy),
        "policy": constant(policy if policy is not None else GuardPolicy()),
    }
