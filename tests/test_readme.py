"""README.md stays true: every setting documented, the two set-up commands present, and
the API examples run as written against a live `dev` process."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.settings import Settings

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    table = "\n".join(line for line in README.splitlines() if line.startswith("|"))
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    missing = sorted(name.upper() for name in Settings.model_fields if name.upper() not in documented)
    assert not missing, f"README configuration table lacks: {', '.join(missing)}"


def test_the_two_setup_commands() -> None:
    assert "uv run python -m app dev" in README
    assert "uv run pytest" in README


def test_every_event_type_is_documented() -> None:
    from app.domain.events import EVENT_TYPES

    missing = sorted(name for name in EVENT_TYPES if f"`{name}`" not in README)
    assert not missing, f"README lacks the event type(s): {', '.join(missing)}"


# ------------------------------------------------------------- the API block, run as written

API_SECTION = "## The API at a glance"
README_BASE = "http://127.0.0.1:8000"
STATUS_MARK = "@@status"


@dataclass
class Command:
    line: int
    """README line where the command starts."""
    text: str
    comment: str

    @property
    def expected(self) -> int:
        m = re.match(r"(\d{3})\b", self.comment)
        assert m, f"README line {self.line}: the command's comment must start with its status: {self.comment!r}"
        return int(m.group(1))


def api_block() -> tuple[int, str]:
    """The shell block of "The API at a glance" and the README line it starts on."""
    section = README.index(API_SECTION)
    start = README.index("```sh\n", section) + len("```sh\n")
    end = README.index("```", start)
    return README.count("\n", 0, start) + 1, README[start:end]


def shell_lines(first_line: int, block: str) -> list[tuple[int, str, str]]:
    """Logical shell lines as `(readme_line, code, comment)`: quote-aware (a quoted body may
    span lines), `\\`-newline continues a line, `#` at the start of a word begins a comment."""
    out: list[tuple[int, str, str]] = []
    code, comment, quote = "", "", ""
    line, start_line, in_comment = first_line, first_line, False
    i = 0
    while i < len(block):
        c = block[i]
        if in_comment:
            if c == "\n":
                out.append((start_line, code.strip(), comment.strip()))
                code, comment, in_comment = "", "", False
                start_line = line + 1
                line += 1
            else:
                comment += c
        elif quote:
            code += c
            if c == "\\" and quote == '"':
                code += block[i + 1]
                i += 1
            elif c == quote:
                quote = ""
            if c == "\n":
                line += 1
        elif c in "'\"":
            quote = c
            code += c
        elif c == "\\" and block[i + 1 : i + 2] == "\n":
            code += " "
            line += 1
            i += 1
        elif c == "#" and (not code or code[-1] in " \t;"):
            in_comment = True
        elif c == "\n":
            out.append((start_line, code.strip(), comment.strip()))
            code, comment = "", ""
            line += 1
            start_line = line
        else:
            code += c
        i += 1
    assert not quote, "unterminated quote in the README's API block"
    return [entry for entry in out if entry[1] or entry[2]]


def curl_commands(first_line: int, block: str) -> list[Command]:
    """Every `curl` command with its comment: the one ending its line, else the comment
    line right below it (a long command's)."""
    commands: list[Command] = []
    previous_was_command = False
    for line, code, comment in shell_lines(first_line, block):
        if code:
            assert len(re.findall(r"(?:^|[;&|]\s*)curl\s", code)) <= 1, f"README line {line}: one curl per line"
            previous_was_command = code.startswith("curl ")
            if previous_was_command:
                commands.append(Command(line, code, comment))
        elif previous_was_command and not commands[-1].comment:
            commands[-1].comment = comment
        else:
            previous_was_command = False
    return commands


def test_every_api_example_states_its_status() -> None:
    first, block = api_block()
    commands = curl_commands(first, block)
    assert len(commands) >= 15
    for cmd in commands:
        assert 100 <= cmd.expected <= 599
    assert block.count(README_BASE) >= 3  # the test below points these at its own server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`python -m app dev` as a newcomer runs it: a fresh SQLite file (seeded at start),
    no LiveKit or OpenAI settings, `ADMIN_API_KEY` set; yields its base URL and key."""
    tmp = tmp_path_factory.mktemp("readme-dev")
    port, key = _free_port(), "readme-admin-key-0123456789"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "ADMIN_", "OPENAI_", "DATABASE_"))}
    env.update(PYTHONPATH=str(REPO), HOST="127.0.0.1", PORT=str(port), ADMIN_API_KEY=key,
               DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/app.db", LOG_LEVEL="WARNING")
    log = (tmp / "dev.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "app", "dev"], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp / "dev.log").read_text()
            time.sleep(0.2)
        yield base, key
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_block(block: str, base: str, key: str, curl: str | None, tmp: Path) -> list[tuple[int, str]]:
    """Run the block in bash, every `curl` printing its status after its output; returns
    `(status, output)` per curl call, in order. `curl`: None for the real one on PATH,
    else a path to run instead (the stand-in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "ADMIN_", "OPENAI_"))}
    env["ADMIN_API_KEY"] = key
    if curl is not None:
        bindir = tmp / "bin"
        bindir.mkdir(exist_ok=True)
        wrapper = bindir / "curl"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(curl)} "$@"\n')
        wrapper.chmod(0o755)
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    script = (
        f"curl() {{ command curl -w '\\n{STATUS_MARK} %{{http_code}}\\n' \"$@\"; }}\n"
        + block.replace(README_BASE, base)
    )
    proc = subprocess.run(["bash", "-c", script], env=env, cwd=tmp, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    parts = re.split(rf"\n?{STATUS_MARK} (\d{{3}})\n", proc.stdout)
    return [(int(parts[i + 1]), parts[i]) for i in range(0, len(parts) - 1, 2)]


CURLS = ["stand-in"] + (["curl"] if shutil.which("curl") else [])
"""The stand-in always (so it is known to behave like curl), real curl where there is one;
the block ends as it began (billing agent and route deleted), so it runs again."""


@pytest.mark.parametrize("curl", CURLS)
def test_the_api_block_runs_top_to_bottom_as_written(
    dev_server: tuple[str, str], curl: str, tmp_path: Path
) -> None:
    base, key = dev_server
    first, block = api_block()
    commands = curl_commands(first, block)
    stand_in = str(REPO / "tests" / "curl_stand_in.py") if curl == "stand-in" else None
    results = run_block(block, base, key, stand_in, tmp_path)
    assert len(results) == len(commands), results
    wrong = [
        f"README line {cmd.line}: {cmd.text[:90]}\n    comment says {cmd.expected}, got {status}: {output.strip()[:300]}"
        for cmd, (status, output) in zip(commands, results, strict=True)
        if status != cmd.expected
    ]
    assert not wrong, "\n".join(wrong)
    for cmd, (_status, output) in zip(commands, results, strict=True):
        etag = re.search(r'ETag: ("\d+")', cmd.comment)
        if etag:
            assert re.search(rf"^etag: {etag.group(1)}\r?$", output, re.I | re.M), output
        if "422" in cmd.comment and '"key"' in cmd.comment:
            key_said = re.search(r'"key": "([^"]+)"', cmd.comment)
            assert key_said and [e.get("key") for e in json.loads(output)["extra"]] == [key_said.group(1)]
