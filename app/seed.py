"""Idempotent loading of the example agents and routes from `prompts/`.

`python -m app seed` and the first `dev` start call `seed(store)`. The seed only ever
*adds*: an agent or route that already exists is left exactly as it is, even when it
differs from the file (an operator may have edited it through the admin API), and the
default route is only created when the table has no default yet. Running it twice
therefore writes nothing the second time: versions and `config_epoch` stay unchanged.

Files: every `*.yaml` in the directory is one `AgentConfigInput` whose file name is its
`agent_id`, except `routes.yaml` (the routing table) and `pte_interview.yaml` (the
PTE interviewer, run only with `AGENT_MODE=pte`; see `app.store.sources`). Every file
is validated before anything is written, so a bad file leaves the store untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from app.domain import AgentConfigInput, AlreadyExists, NotFound, Route
from app.domain.field_errors import field_errors, format_location
from app.domain.loading import ConfigFileError, load_agent_file, read_yaml
from app.settings import DEFAULT_PROMPTS_DIR
from app.store.base import ConfigStore
from app.store.sources import PTE_CONFIG_FILE

log = logging.getLogger(__name__)

PROMPTS_DIR = DEFAULT_PROMPTS_DIR
ROUTES_FILE = "routes.yaml"
NOT_SEEDED = frozenset({ROUTES_FILE, PTE_CONFIG_FILE})
"""Files in `prompts/` that are not seed agents."""

__all__ = [
    "NOT_SEEDED",
    "PROMPTS_DIR",
    "ConfigFileError",
    "SeedReport",
    "load_routes",
    "load_seed_agents",
    "seed",
]


@dataclass
class SeedReport:
    """What a seed run did; ids are in file order."""

    created_agents: list[str] = field(default_factory=list)
    kept_agents: list[str] = field(default_factory=list)
    """Already present (possibly edited since): left untouched."""
    created_routes: list[str] = field(default_factory=list)
    kept_routes: list[str] = field(default_factory=list)
    """Purposes already routed: left untouched."""
    skipped_default: str | None = None
    """The file's default route, not created because the store already has a default."""

    @property
    def changed(self) -> bool:
        return bool(self.created_agents or self.created_routes)

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        def part(label: str, items: list[str]) -> str:
            return f"{label} {len(items)}" + (f" ({', '.join(items)})" if items else "")

        parts = [
            part("agents created", self.created_agents),
            part("kept", self.kept_agents),
            part("routes created", self.created_routes),
            part("kept", self.kept_routes),
        ]
        text = "; ".join([", ".join(parts[:2]), ", ".join(parts[2:])])
        if self.skipped_default:
            text += f"; default route {self.skipped_default!r} skipped (a default already exists)"
        return text


def seed_agent_files(prompts_dir: Path = PROMPTS_DIR) -> list[Path]:
    """The agent files the seed loads, sorted by name."""
    if not prompts_dir.is_dir():
        raise ConfigFileError(prompts_dir, "prompts directory not found")
    return sorted(
        p for p in prompts_dir.glob("*.yaml") if p.is_file() and p.name not in NOT_SEEDED
    )


def load_seed_agents(prompts_dir: Path = PROMPTS_DIR) -> list[AgentConfigInput]:
    """Parse and validate every seed agent file; `ConfigFileError` names file and field."""
    agents: list[AgentConfigInput] = []
    for path in seed_agent_files(prompts_dir):
        cfg = load_agent_file(path)
        if cfg.agent_id != path.stem:
            raise ConfigFileError(
                path, f"agent_id: {cfg.agent_id!r} must match the file name ({path.stem!r})"
            )
        agents.append(cfg)
    ids = {a.agent_id for a in agents}
    for cfg in agents:
        missing = [h for h in cfg.handoffs if h not in ids]
        if missing:
            raise ConfigFileError(
                prompts_dir / f"{cfg.agent_id}.yaml",
                f"handoffs: {', '.join(missing)} not among the seed agents",
            )
    return agents


def load_routes(prompts_dir: Path = PROMPTS_DIR) -> list[Route]:
    """Parse `routes.yaml`: `routes: [{purpose, agent_id, is_default?}, ...]`, one default."""
    path = prompts_dir / ROUTES_FILE
    doc = read_yaml(path)
    if not isinstance(doc, dict) or set(doc) != {"routes"}:
        raise ConfigFileError(path, "expected a mapping with a single key 'routes' (a list)")
    items = doc["routes"]
    if not isinstance(items, list):
        raise ConfigFileError(path, f"routes: expected a list, got {type(items).__name__}")
    routes: list[Route] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigFileError(path, f"routes[{i}]: expected a mapping")
        if "updated_at" in item:
            raise ConfigFileError(path, f"routes[{i}].updated_at: set by the store, not the file")
        try:
            routes.append(Route.model_validate(item))
        except ValidationError as e:
            raise ConfigFileError(path, f"invalid route: {_prefixed(i, e)}") from None
    purposes = [r.purpose for r in routes]
    dupes = sorted({p for p in purposes if purposes.count(p) > 1})
    if dupes:
        raise ConfigFileError(path, f"routes: purpose(s) listed twice: {', '.join(dupes)}")
    defaults = [r.purpose for r in routes if r.is_default]
    if len(defaults) > 1:
        raise ConfigFileError(path, f"routes: more than one default ({', '.join(defaults)})")
    return routes


def _prefixed(index: int, err: ValidationError) -> str:
    return "; ".join(f"{format_location(('routes', index, *loc))}: {msg}" for loc, msg in field_errors(err))


async def seed(store: ConfigStore, prompts_dir: Path = PROMPTS_DIR) -> SeedReport:
    """Create the agents and routes from `prompts_dir` that the store does not have yet.

    Never modifies or deletes anything; see the module docstring. Concurrent seeds are
    safe for agents (a lost create race counts as kept); for routes the last writer of a
    purpose both were missing wins, with identical content.
    """
    agents = load_seed_agents(prompts_dir)
    routes = load_routes(prompts_dir)
    seeded_ids = {a.agent_id for a in agents}
    for r in routes:
        if r.agent_id not in seeded_ids:
            raise ConfigFileError(
                prompts_dir / ROUTES_FILE,
                f"routes: purpose {r.purpose!r} points at {r.agent_id!r}, which is not a seed agent",
            )

    report = SeedReport()
    for cfg in agents:
        if await _agent_exists(store, cfg.agent_id):
            report.kept_agents.append(cfg.agent_id)
            continue
        try:
            await store.create_agent_config(cfg)
        except AlreadyExists:
            report.kept_agents.append(cfg.agent_id)
        else:
            report.created_agents.append(cfg.agent_id)

    existing = {r.purpose: r for r in await store.list_routes()}
    has_default = any(r.is_default for r in existing.values())
    for route in routes:
        if route.purpose in existing:
            report.kept_routes.append(route.purpose)
            continue
        if route.is_default and has_default:
            report.skipped_default = route.purpose
            continue
        await store.put_route(route)
        report.created_routes.append(route.purpose)
        has_default = has_default or route.is_default

    log.info("seed from %s: %s", prompts_dir, report.summary())
    return report


async def _agent_exists(store: ConfigStore, agent_id: str) -> bool:
    try:
        await store.get_agent_config(agent_id)
    except NotFound:
        return False
    return True
