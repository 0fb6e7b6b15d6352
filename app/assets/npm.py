"""Fetch one npm package the way `npm ci` would, without Node: the tarball named by a
package-lock.json, checked against the lock's `integrity` hash, unpacked into a cache.

Why our own: the console's browser dependencies (and the test suite's Chromium) must
install on a machine that has only Python and uv. For a package whose `dist/` is
self-contained, downloading the locked tarball and checking its hash is all `npm ci`
does; no dependency resolution, no install scripts.

    pkg = locked_package(LOCKFILE, "livekit-client")
    root = await fetch_package(pkg, cache_dir)      # <cache_dir>/npm/livekit-client@2.23.0/
    cached_package(pkg, cache_dir)                  # the same path, or None: no network

A cache entry is a directory renamed into place only after the hash matched and every
file was written, with the lock's integrity in `.integrity`: a crash or a concurrent
fetch never leaves a half-unpacked package that looks complete.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx

log = logging.getLogger(__name__)

DEFAULT_REGISTRY = "https://registry.npmjs.org"
MAX_TARBALL_BYTES = 256 * 1024 * 1024
"""Refuse larger downloads (the biggest we fetch, a compressed Chromium, is ~70 MB)."""
FETCH_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
MARKER = ".integrity"
_HASHES = {"sha512": hashlib.sha512, "sha384": hashlib.sha384, "sha256": hashlib.sha256}


class NpmFetchError(RuntimeError):
    """A package could not be fetched or verified; the message says which and why."""


@dataclass(frozen=True)
class LockedPackage:
    """One package as a package-lock.json pins it."""

    name: str
    version: str
    resolved: str
    integrity: str

    @property
    def key(self) -> str:
        """A directory name for this exact version (`@scope/pkg` -> `@scope+pkg@1.2.3`)."""
        return f"{self.name.replace('/', '+')}@{self.version}"

    def url(self, registry: str | None = None) -> str:
        """The tarball URL, on `registry` instead of the public one when given (a mirror
        serves the same paths; the integrity check still holds it to the lock)."""
        if registry and self.resolved.startswith(DEFAULT_REGISTRY + "/"):
            return registry.rstrip("/") + self.resolved[len(DEFAULT_REGISTRY):]
        return self.resolved


def locked_package(lockfile: Path, name: str) -> LockedPackage:
    """`name` as `lockfile` (lockfileVersion 2 or 3) pins it: version, URL, integrity."""
    try:
        entry = json.loads(lockfile.read_text(encoding="utf-8"))["packages"][f"node_modules/{name}"]
        pkg = LockedPackage(name, entry["version"], entry["resolved"], entry["integrity"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NpmFetchError(f"{lockfile}: no usable entry for {name} ({type(e).__name__}: {e})") from None
    if not pkg.resolved.startswith("https://"):
        raise NpmFetchError(f"{lockfile}: {name} resolves to {pkg.resolved!r}, not an https:// tarball")
    return pkg


def check_integrity(data: bytes, integrity: str) -> None:
    """Raise unless `data` matches the Subresource Integrity string `integrity` (any of
    its space-separated hashes of an algorithm we know; npm writes one sha512)."""
    known = []
    for item in integrity.split():
        algo, _, digest = item.partition("-")
        if algo in _HASHES:
            known.append((algo, digest))
    if not known:
        raise NpmFetchError(f"unsupported integrity {integrity!r} (expected sha512-...)")
    for algo, digest in known:
        actual = base64.b64encode(_HASHES[algo](data).digest()).decode()
        if hmac.compare_digest(actual, digest):
            return
    algo = known[0][0]
    actual = base64.b64encode(_HASHES[algo](data).digest()).decode()
    raise NpmFetchError(f"integrity mismatch: the lock says {algo}-{known[0][1]}, the download is {algo}-{actual}")


def package_dir(pkg: LockedPackage, cache_dir: Path) -> Path:
    return cache_dir / "npm" / pkg.key


def cached_package(pkg: LockedPackage, cache_dir: Path) -> Path | None:
    """The unpacked package if a complete, verified copy is cached; no network."""
    root = package_dir(pkg, cache_dir)
    try:
        if (root / MARKER).read_text(encoding="utf-8").strip() == pkg.integrity:
            return root
    except OSError:
        pass
    return None


async def fetch_package(
    pkg: LockedPackage, cache_dir: Path, *, registry: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> Path:
    """The unpacked package directory (the tarball's `package/`), from the cache if it
    holds this version with this integrity, else downloaded, verified and unpacked.
    Raises `NpmFetchError` with the URL and the reason."""
    hit = cached_package(pkg, cache_dir)
    if hit is not None:
        return hit
    url = pkg.url(registry)
    log.info("fetching %s@%s from %s", pkg.name, pkg.version, url)
    data = await _download(url, client)
    return await asyncio.to_thread(_verify_and_unpack, pkg, data, cache_dir, url)


async def _download(url: str, client: httpx.AsyncClient | None) -> bytes:
    own = client is None
    c = client or httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=True)
    try:
        async with c.stream("GET", url) as r:
            if r.status_code != 200:
                raise NpmFetchError(f"GET {url}: HTTP {r.status_code}")
            chunks, size = [], 0
            async for chunk in r.aiter_bytes():
                size += len(chunk)
                if size > MAX_TARBALL_BYTES:
                    raise NpmFetchError(f"GET {url}: larger than {MAX_TARBALL_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as e:
        raise NpmFetchError(f"GET {url}: {type(e).__name__}: {e or 'no answer'}") from None
    finally:
        if own:
            await c.aclose()


def _member_path(member: tarfile.TarInfo) -> PurePosixPath | None:
    """The member's path below the tarball's top directory (npm packs everything under
    `package/`), or None for the top directory itself. Refuses anything that could land
    outside the target or is not a plain file or directory."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise NpmFetchError(f"unsafe path in tarball: {member.name!r}")
    if not (member.isfile() or member.isdir()):
        raise NpmFetchError(f"unsupported member in tarball: {member.name!r} (links and devices are refused)")
    rest = path.parts[1:]
    return PurePosixPath(*rest) if rest else None


def _verify_and_unpack(pkg: LockedPackage, data: bytes, cache_dir: Path, url: str) -> Path:
    try:
        check_integrity(data, pkg.integrity)
    except NpmFetchError as e:
        raise NpmFetchError(f"{pkg.name}@{pkg.version} from {url}: {e}") from None
    final = package_dir(pkg, cache_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{pkg.key}.", dir=final.parent))
    try:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
                for member in tar:
                    rel = _member_path(member)
                    if rel is None:
                        continue
                    target = tmp / rel
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    assert src is not None
                    with src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
                    target.chmod(0o755 if member.mode & 0o111 else 0o644)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise NpmFetchError(f"{pkg.name}@{pkg.version}: cannot unpack {url}: {e}") from None
        (tmp / MARKER).write_text(pkg.integrity + "\n", encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide it from other users of a shared cache
        if final.exists():  # incomplete (no marker) or from another lock: replace it
            if cached_package(pkg, cache_dir) is not None:  # a concurrent fetch won
                return final
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if cached_package(pkg, cache_dir) is not None:  # renamed into place meanwhile
                return final
            raise
        log.info("cached %s@%s in %s", pkg.name, pkg.version, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
