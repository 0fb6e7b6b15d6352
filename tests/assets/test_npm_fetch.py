"""Fetching one locked npm package without Node (app/assets/npm.py): the registry is
faked at the HTTP boundary with respx; tarballs, hashes and the cache are real."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from pathlib import Path

import httpx
import pytest
import respx

import app.assets.npm as npm
from app.assets.browser import LOCKFILE, PACKAGES
from app.assets.npm import LockedPackage, NpmFetchError, cached_package, check_integrity, fetch_package, locked_package

from .npm_fakes import integrity, locked, tarball, write_lock


def leftovers(cache: Path) -> list[str]:
    root = cache / "npm"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@respx.mock
async def test_fetch_verifies_unpacks_and_then_works_offline(tmp_path: Path) -> None:
    data = tarball({"dist/client.mjs": b"export const x = 1;", "bin/tool": (b"#!/bin/sh\n", 0o755)})
    pkg = locked(data)
    route = respx.get(pkg.resolved).respond(200, content=data)

    root = await fetch_package(pkg, tmp_path)
    assert root == tmp_path / "npm" / "demo-pkg@1.0.0"
    assert (root / "dist" / "client.mjs").read_bytes() == b"export const x = 1;"
    assert (root / "bin" / "tool").stat().st_mode & 0o777 == 0o755
    assert (root / "dist" / "client.mjs").stat().st_mode & 0o777 == 0o644
    assert (root / ".integrity").read_text().strip() == pkg.integrity
    assert leftovers(tmp_path) == ["demo-pkg@1.0.0"]

    route.side_effect = httpx.ConnectError("network is unreachable")
    assert await fetch_package(pkg, tmp_path) == root  # a cache hit asks nobody
    assert route.call_count == 1
    assert cached_package(pkg, tmp_path) == root


@respx.mock
async def test_a_tampered_download_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    data = tarball({"index.js": b"evil()"})
    pkg = LockedPackage("demo-pkg", "1.0.0", locked(data).resolved, integrity(b"what the lock promised"))
    respx.get(pkg.resolved).respond(200, content=data)
    with pytest.raises(NpmFetchError, match=r"demo-pkg@1.0.0 from https://registry.npmjs.org/\S+: integrity mismatch"):
        await fetch_package(pkg, tmp_path)
    assert leftovers(tmp_path) == []
    assert cached_package(pkg, tmp_path) is None


@respx.mock
async def test_offline_without_a_cache_names_the_url_and_the_reason(tmp_path: Path) -> None:
    pkg = locked(tarball({"a": b"1"}))
    respx.get(pkg.resolved).mock(side_effect=httpx.ConnectError("[Errno -3] Temporary failure in name resolution"))
    with pytest.raises(NpmFetchError) as e:
        await fetch_package(pkg, tmp_path)
    assert str(e.value) == f"GET {pkg.resolved}: ConnectError: [Errno -3] Temporary failure in name resolution"


@respx.mock
async def test_an_http_error_names_its_status(tmp_path: Path) -> None:
    pkg = locked(tarball({"a": b"1"}))
    respx.get(pkg.resolved).respond(404, json={"error": "Not found"})
    with pytest.raises(NpmFetchError, match=r"GET https://\S+: HTTP 404$"):
        await fetch_package(pkg, tmp_path)


def _tar_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("package/ok.js")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"1"))
        tar.addfile(member, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, link
    m.size = len(data) if kind == tarfile.REGTYPE else 0
    return m, data if kind == tarfile.REGTYPE else b""


@pytest.mark.parametrize(("member", "why"), [
    (_member("package/../../escape.js"), "unsafe path"),
    (_member("/etc/cron.d/x"), "unsafe path"),
    (_member("package/link", tarfile.SYMTYPE, "/etc/passwd"), "links and devices are refused"),
    (_member("package/hard", tarfile.LNKTYPE, "package/ok.js"), "links and devices are refused"),
    (_member("package/dev", tarfile.CHRTYPE), "links and devices are refused"),
])
@respx.mock
async def test_unsafe_tarball_members_are_refused(tmp_path: Path, member: tuple[tarfile.TarInfo, bytes], why: str) -> None:
    data = _tar_with(*member)
    pkg = locked(data)
    respx.get(pkg.resolved).respond(200, content=data)
    with pytest.raises(NpmFetchError, match=why):
        await fetch_package(pkg, tmp_path)
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "escape.js").exists() and not (tmp_path.parent / "escape.js").exists()


@respx.mock
async def test_a_mirror_serves_the_same_paths_under_the_same_hash(tmp_path: Path) -> None:
    data = tarball({"a.js": b"1"})
    pkg = locked(data, name="@scope/demo", version="2.0.0")
    assert pkg.url("https://npm.corp.example/repo/") == "https://npm.corp.example/repo/@scope/demo/-/demo-2.0.0.tgz"
    public = respx.get(pkg.resolved).respond(500)
    mirror = respx.get("https://npm.corp.example/repo/@scope/demo/-/demo-2.0.0.tgz").respond(200, content=data)
    root = await fetch_package(pkg, tmp_path, registry="https://npm.corp.example/repo")
    assert root.name == "@scope+demo@2.0.0" and (root / "a.js").read_bytes() == b"1"
    assert mirror.call_count == 1 and public.call_count == 0


@respx.mock
async def test_an_incomplete_cache_entry_is_replaced(tmp_path: Path) -> None:
    data = tarball({"a.js": b"new"})
    pkg = locked(data)
    stale = tmp_path / "npm" / "demo-pkg@1.0.0"
    stale.mkdir(parents=True)
    (stale / "a.js").write_bytes(b"half-written")  # no .integrity: never completed
    assert cached_package(pkg, tmp_path) is None
    respx.get(pkg.resolved).respond(200, content=data)
    root = await fetch_package(pkg, tmp_path)
    assert (root / "a.js").read_bytes() == b"new"


@respx.mock
async def test_concurrent_fetches_end_with_one_complete_copy(tmp_path: Path) -> None:
    data = tarball({f"f{i}.js": bytes([i]) * 1000 for i in range(50)})
    pkg = locked(data)
    respx.get(pkg.resolved).respond(200, content=data)
    roots = await asyncio.gather(*(fetch_package(pkg, tmp_path) for _ in range(4)))
    assert len(set(roots)) == 1
    assert leftovers(tmp_path) == ["demo-pkg@1.0.0"]
    assert len(list(roots[0].glob("f*.js"))) == 50


@respx.mock
async def test_an_oversized_download_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(npm, "MAX_TARBALL_BYTES", 1000)
    data = tarball({"big.bin": os.urandom(4000)})  # incompressible
    pkg = locked(data)
    respx.get(pkg.resolved).respond(200, content=data)
    with pytest.raises(NpmFetchError, match="larger than 1000 bytes"):
        await fetch_package(pkg, tmp_path)


def test_integrity_strings() -> None:
    check_integrity(b"abc", f"sha1-x {integrity(b'abc')}")  # any known hash of the list may match
    with pytest.raises(NpmFetchError, match="unsupported integrity"):
        check_integrity(b"abc", "sha1-qZk+NkcGgWq6PiVxeFDCbJzQ2J0=")
    with pytest.raises(NpmFetchError, match="integrity mismatch"):
        check_integrity(b"abd", integrity(b"abc"))


def test_the_lockfile_pins_every_served_package_by_url_and_hash() -> None:
    """The console's lock must stay usable without npm: an https tarball URL and a
    sha512 per package, at the version package.json asks for."""
    wanted = json.loads((LOCKFILE.parent / "package.json").read_text())["dependencies"]
    for served in PACKAGES:
        pkg = locked_package(LOCKFILE, served.name)
        assert pkg.version == wanted[served.name]
        base = served.name.split("/")[-1]
        assert pkg.resolved == f"https://registry.npmjs.org/{served.name}/-/{base}-{pkg.version}.tgz"
        assert pkg.integrity.startswith("sha512-")


def test_a_lock_without_the_package_is_a_clear_error(tmp_path: Path) -> None:
    lock = write_lock(tmp_path / "package-lock.json", locked(b"x"))
    with pytest.raises(NpmFetchError, match=r"no usable entry for livekit-client \(KeyError"):
        locked_package(lock, "livekit-client")
    lock.write_text(json.dumps({"packages": {"node_modules/x": {
        "version": "1", "resolved": "http://plain/x.tgz", "integrity": "sha512-x"}}}))
    with pytest.raises(NpmFetchError, match="not an https:// tarball"):
        locked_package(lock, "x")
