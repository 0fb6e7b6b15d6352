"""The browser packages the process serves and where each one comes from.

Three npm packages, pinned in `app/console/package-lock.json`: `livekit-client` (the
console's Talk page), `swagger-ui-dist` (the API reference at `/schema`) and `uplot` (the
console's latency charts). Each is served from the first of:

1. `app/console/node_modules/<pkg>` when it holds the locked version (`npm ci` ran: the
   Docker image does this at build time, its code directory is read-only);
2. the asset cache (`ASSET_CACHE_DIR`), filled by `app.assets.npm.fetch_package` from the
   npm registry at the first start, verified against the lock's integrity hash, and used
   offline from then on.

Only the process that serves (`dev`/`start`) fetches: it starts the downloads in the
background at start-up and, if one failed (no network yet), tries again when a page that
needs it is requested. Apps built without `fetch=True` (tests, tools) only look on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from app.assets.npm import LockedPackage, NpmFetchError, cached_package, fetch_package, locked_package, package_dir
from app.settings import Settings

log = logging.getLogger(__name__)

NPM_PROJECT = Path(__file__).resolve().parents[1] / "console"
"""The npm project that pins the browser packages (package.json + package-lock.json)."""
LOCKFILE = NPM_PROJECT / "package-lock.json"
NODE_MODULES = NPM_PROJECT / "node_modules"
RETRY_AFTER = 15.0
"""Seconds after a failed fetch before a page request may start another."""


@dataclass(frozen=True)
class BrowserPackage:
    name: str
    subdir: str
    """The part of the package that is served ("" for all of it)."""
    probe: str
    """A file of `subdir` whose presence means the package is usable."""
    used_by: str


LIVEKIT_CLIENT = BrowserPackage("livekit-client", "dist", "livekit-client.esm.mjs", "the console's Talk page")
SWAGGER_UI = BrowserPackage("swagger-ui-dist", "", "swagger-ui-bundle.js", "the API reference at /schema")
UPLOT = BrowserPackage("uplot", "dist", "uPlot.esm.js", "the console's latency charts")
PACKAGES = (LIVEKIT_CLIENT, SWAGGER_UI, UPLOT)


class AssetState(str, Enum):
    ready = "ready"
    fetching = "fetching"
    missing = "missing"


@dataclass(frozen=True)
class AssetStatus:
    state: AssetState
    detail: str = ""
    """Why it is missing, for the page that needs it (no secrets: URLs and paths only)."""


class BrowserAssets:
    """Resolves, and when allowed fetches, the browser packages of one process."""

    def __init__(
        self, cache_dir: Path, *, registry: str | None = None, fetch: bool = False,
        node_modules: Path | None = None, lockfile: Path | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.registry = registry
        self.fetch_enabled = fetch
        self.node_modules = node_modules if node_modules is not None else NODE_MODULES
        self.lockfile = lockfile if lockfile is not None else LOCKFILE
        self._locked: dict[str, LockedPackage | NpmFetchError] = {}
        self._tasks: dict[str, asyncio.Task[Path | None]] = {}
        self._errors: dict[str, tuple[float, str]] = {}
        self._found: dict[str, Path] = {}
        """Packages seen usable: they stay so, and pages ask on every request."""

    @classmethod
    def from_settings(cls, settings: Settings, *, fetch: bool = False) -> BrowserAssets:
        return cls(settings.asset_cache_dir, registry=settings.npm_registry, fetch=fetch)

    # ------------------------------------------------------------------ where

    def locked(self, pkg: BrowserPackage) -> LockedPackage:
        found = self._locked.get(pkg.name)
        if found is None:
            try:
                found = locked_package(self.lockfile, pkg.name)
            except NpmFetchError as e:
                found = e
            self._locked[pkg.name] = found
        if isinstance(found, NpmFetchError):
            raise found
        return found

    def _node_modules_dir(self, pkg: BrowserPackage, locked: LockedPackage) -> Path | None:
        root = self.node_modules / pkg.name
        try:
            version = json.loads((root / "package.json").read_text(encoding="utf-8")).get("version")
        except (OSError, ValueError, AttributeError):
            return None
        served = root / pkg.subdir
        return served if version == locked.version and (served / pkg.probe).is_file() else None

    def serve_dir(self, pkg: BrowserPackage) -> Path:
        """The directory a static route should serve `pkg` from. It may not exist yet
        (a fetch fills it in place): routes built at start-up find it once it does."""
        locked = self.locked(pkg)
        return self._node_modules_dir(pkg, locked) or package_dir(locked, self.cache_dir) / pkg.subdir

    def directory(self, pkg: BrowserPackage) -> Path | None:
        """The served directory if `pkg` is usable now, else None (no network)."""
        if pkg.name in self._found:
            return self._found[pkg.name]
        try:
            locked = self.locked(pkg)
        except NpmFetchError:
            return None
        found = self._node_modules_dir(pkg, locked)
        if found is None:
            root = cached_package(locked, self.cache_dir)
            if root is not None and (root / pkg.subdir / pkg.probe).is_file():
                found = root / pkg.subdir
        if found is not None:
            self._found[pkg.name] = found
        return found

    def status(self, pkg: BrowserPackage) -> AssetStatus:
        if self.directory(pkg) is not None:
            return AssetStatus(AssetState.ready)
        task = self._tasks.get(pkg.name)
        if task is not None and not task.done():
            return AssetStatus(AssetState.fetching, f"{pkg.name} is being fetched from the npm registry")
        try:
            locked = self.locked(pkg)
        except NpmFetchError as e:
            return AssetStatus(AssetState.missing, str(e))
        where = package_dir(locked, self.cache_dir)
        if pkg.name in self._errors:
            reason = self._errors[pkg.name][1]
            return AssetStatus(AssetState.missing, f"{reason}; no cached copy in {where}")
        if not self.fetch_enabled:
            return AssetStatus(
                AssetState.missing,
                f"{pkg.name}@{locked.version} is not in {self.node_modules} or {where}; "
                "`python -m app dev` fetches it from the npm registry at start",
            )
        return AssetStatus(AssetState.missing, f"{pkg.name}@{locked.version} has not been fetched yet")

    # ------------------------------------------------------------------ fetching

    def start(self) -> None:
        """Start fetching every package that is not on disk (in the background)."""
        for pkg in PACKAGES:
            self.request_fetch(pkg, force=True)

    def request_fetch(self, pkg: BrowserPackage, *, force: bool = False) -> None:
        """A page needs `pkg`: fetch it in the background unless it is on disk, being
        fetched, or failed less than RETRY_AFTER seconds ago. Needs a running loop."""
        if not self.fetch_enabled or self.directory(pkg) is not None:
            return
        task = self._tasks.get(pkg.name)
        if task is not None and not task.done():
            return
        failed = self._errors.get(pkg.name)
        if failed is not None and not force and time.monotonic() - failed[0] < RETRY_AFTER:
            return
        self._tasks[pkg.name] = asyncio.get_running_loop().create_task(self.ensure(pkg), name=f"fetch:{pkg.name}")

    async def ensure(self, pkg: BrowserPackage) -> Path | None:
        """Fetch `pkg` if it is not on disk; its directory, or None (the reason is logged
        and kept for `status`)."""
        found = self.directory(pkg)
        if found is not None:
            return found
        try:
            locked = self.locked(pkg)
            root = await fetch_package(locked, self.cache_dir, registry=self.registry)
        except NpmFetchError as e:
            self._errors[pkg.name] = (time.monotonic(), str(e))
            log.warning(
                "%s is unavailable: could not fetch npm package %s: %s; no cached copy in %s",
                pkg.used_by, pkg.name, e, self.cache_dir / "npm",
            )
            return None
        except OSError as e:  # the cache directory is not writable, the disk is full...
            self._errors[pkg.name] = (time.monotonic(), f"cannot write the asset cache: {e}")
            log.warning("%s is unavailable: cannot write %s: %s (set ASSET_CACHE_DIR)", pkg.used_by, self.cache_dir, e)
            return None
        self._errors.pop(pkg.name, None)
        served = root / pkg.subdir
        if not (served / pkg.probe).is_file():
            self._errors[pkg.name] = (time.monotonic(), f"{pkg.name}@{locked.version} has no {pkg.subdir}/{pkg.probe}")
            log.warning("%s is unavailable: %s", pkg.used_by, self._errors[pkg.name][1])
            return None
        return served

    async def wait(self) -> None:
        """Wait for the fetches started so far (tests, tools)."""
        tasks = [t for t in self._tasks.values() if not t.done()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
