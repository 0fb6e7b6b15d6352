"""The import rules of app/'s layers, read from the source (every import statement,
module level or inside a function or `if TYPE_CHECKING:` block).

domain <- store <- agents, webhooks <- api / worker <- supervisor, CLI: a layer imports only
layers below it; `api` and `worker` never import each other; `domain` and `store`
import no LiveKit; library adaptations (`app/adapters`) depend on no feature code;
nothing in `app/` imports the tests or the sim; every module in `app/` is imported by
the product (no module kept only for tests).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app"

ENTRY_POINTS = {"app.__main__"}
"""Started by `python -m app`; everything else must be reachable from it."""


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    where: str

    def __str__(self) -> str:
        return f"{self.where}: {self.importer} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def app_modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for p in APP.rglob("*.py")
        if "node_modules" not in p.parts
    }


def imports_of(name: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, where) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append(Import(name, module, where))
            # `from app.x import y` may name a submodule y
            found += [Import(name, f"{module}.{alias.name}", where) for alias in node.names]
    return found


ALL_IMPORTS = [imp for name, path in sorted(app_modules().items()) for imp in imports_of(name, path)]


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if parts[0] == "app" and len(parts) > 1 else parts[0]


def within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


FORBIDDEN: dict[str, tuple[str, ...]] = {
    # below every layer: anything may record a metric
    "observability": ("livekit", "app.domain", "app.store", "app.agents", "app.api", "app.worker",
                      "app.adapters", "app.supervisor", "app.chat", "app.seed", "app.console", "app.settings"),
    # importer layer: what it must not import
    "domain": ("livekit", "app.store", "app.agents", "app.api", "app.worker", "app.adapters",
               "app.supervisor", "app.chat", "app.seed", "app.console", "app.webhooks"),
    "store": ("livekit", "app.agents", "app.api", "app.worker", "app.adapters", "app.supervisor",
              "app.chat", "app.seed", "app.console", "app.webhooks"),
    # webhook delivery: beside the agents layer, on the store; never on a session's path
    "webhooks": ("livekit", "app.agents", "app.api", "app.worker", "app.adapters", "app.supervisor",
                 "app.chat", "app.seed", "app.console"),
    "adapters": ("app.domain", "app.store", "app.agents", "app.api", "app.worker", "app.supervisor",
                 "app.chat", "app.seed", "app.console", "app.settings"),
    "agents": ("app.api", "app.worker", "app.supervisor", "app.chat", "app.seed", "app.console"),
    "api": ("app.worker", "app.agents", "app.adapters", "app.supervisor", "app.chat", "app.console"),
    "worker": ("app.api", "app.supervisor", "app.chat", "app.console"),
    # outbound calls and campaigns: on the store and livekit-api; used by the API and the supervisor
    "telephony": ("app.agents", "app.api", "app.worker", "app.supervisor", "app.chat", "app.seed", "app.console"),
    # model servers are a separate process: they know the OpenAI wire format, not the platform
    "localmodels": ("livekit", "app.domain", "app.store", "app.agents", "app.api", "app.worker", "app.adapters",
                    "app.supervisor", "app.chat", "app.seed", "app.console"),
}


@pytest.mark.parametrize("importer", sorted(FORBIDDEN))
def test_layer_imports_only_what_is_below_it(importer: str) -> None:
    banned = FORBIDDEN[importer]
    bad = [str(i) for i in ALL_IMPORTS if layer(i.importer) == importer and within(i.target, *banned)]
    assert not bad, "\n".join(bad)


def test_api_and_worker_never_import_each_other() -> None:
    bad = [
        str(i) for i in ALL_IMPORTS
        if (layer(i.importer), layer(i.target)) in {("api", "worker"), ("worker", "api")}
        and within(i.target, "app")
    ]
    assert not bad, "\n".join(bad)


def test_domain_and_store_import_no_livekit() -> None:
    bad = [str(i) for i in ALL_IMPORTS if layer(i.importer) in ("domain", "store") and within(i.target, "livekit")]
    assert not bad, "\n".join(bad)


def test_app_imports_no_test_code() -> None:
    bad = [str(i) for i in ALL_IMPORTS if within(i.target, "tests", "sim", "pytest", "respx", "hypothesis")]
    assert not bad, "\n".join(bad)


def test_every_app_module_is_used_by_the_product() -> None:
    """Reachable by imports from `python -m app` (function-level imports count: the CLI
    and the supervisor load the worker stack lazily). A module only tests import does
    not belong in app/ (it would ship in the image)."""
    modules = app_modules()
    edges: dict[str, set[str]] = {}
    for imp in ALL_IMPORTS:
        if imp.target in modules:
            edges.setdefault(imp.importer, set()).add(imp.target)
    # importing a submodule runs its packages' __init__ too
    for name in modules:
        parent = name.rpartition(".")[0]
        while parent:
            if parent in modules:
                edges.setdefault(name, set()).add(parent)
            parent = parent.rpartition(".")[0]
    seen: set[str] = set()
    todo = list(ENTRY_POINTS)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += edges.get(name, ())
    unused = sorted(set(modules) - seen - {"app"})
    assert not unused, f"modules under app/ that no product code imports: {unused}"


def test_the_walk_sees_real_imports() -> None:
    """The checks above are only as good as the import walk: it must see the module-level,
    lazy and TYPE_CHECKING imports this repository is known to have."""
    pairs = {(i.importer, i.target) for i in ALL_IMPORTS}
    assert ("app.worker.entrypoint", "livekit.agents") in pairs  # module level
    assert ("app.worker.process", "app.worker.entrypoint") in pairs  # inside a function
    assert ("app.worker.sessions", "livekit.agents") in pairs  # under TYPE_CHECKING
    assert ("app.api.resolve", "app.store.resolver") in pairs


def test_every_directly_imported_package_is_declared() -> None:
    """A package app/ imports must be a dependency in pyproject.toml, not something
    another dependency happens to pull in today."""
    import importlib.metadata
    import re
    import sys
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [d for deps in project.get("optional-dependencies", {}).values() for d in deps]
    declared = {
        re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-")
        for d in [*project["dependencies"], *extras]
    }
    # the `local` extra's packages, named even where the extra is not installed
    owners = {"faster_whisper": ["faster-whisper"], "piper": ["piper-tts"], **importlib.metadata.packages_distributions()}
    namespace = {"livekit"}  # a namespace package: its subpackages come from several distributions
    missing = []
    for imp in ALL_IMPORTS:
        parts = imp.target.split(".")
        top = parts[0]
        if top in sys.stdlib_module_names or top == "app" or not imp.target:
            continue
        if top in namespace:
            if len(parts) < 2 or parts[1] not in ("agents", "api", "plugins", "rtc", "protocol"):
                continue
            dist = {"agents": "livekit-agents", "api": "livekit-api", "rtc": "livekit", "protocol": "livekit-protocol"}
            names = [dist[parts[1]]] if parts[1] in dist else (
                [f"livekit-plugins-{parts[2]}"] if len(parts) > 2 else []
            )
        else:
            names = owners.get(top, [top])
        if names and not any(n.lower().replace("_", "-") in declared for n in names):
            missing.append(f"{imp} (distribution {', '.join(names)})")
    assert not missing, "\n".join(sorted(set(missing)))
