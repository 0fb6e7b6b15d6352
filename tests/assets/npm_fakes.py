"""npm tarballs and lockfiles made up for the asset tests (served through respx)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

from app.assets.npm import LockedPackage


def tarball(files: dict[str, bytes | tuple[bytes, int]], *, top: str = "package") -> bytes:
    """A gzipped npm-style tarball: every file under `top/`; a value may carry a mode."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, value in files.items():
            data, mode = value if isinstance(value, tuple) else (value, 0o644)
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def locked(data: bytes, name: str = "demo-pkg", version: str = "1.0.0") -> LockedPackage:
    base = name.split("/")[-1]
    return LockedPackage(name, version, f"https://registry.npmjs.org/{name}/-/{base}-{version}.tgz", integrity(data))


def write_lock(path: Path, *packages: LockedPackage) -> Path:
    path.write_text(json.dumps({
        "lockfileVersion": 3,
        "packages": {"": {}, **{
            f"node_modules/{p.name}": {"version": p.version, "resolved": p.resolved, "integrity": p.integrity}
            for p in packages
        }},
    }))
    return path
