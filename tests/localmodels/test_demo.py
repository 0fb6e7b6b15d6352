"""`dev --demo`: the scripted model beside the platform, tried as a newcomer would
(`python -m app dev --demo`, then `python -m app chat --demo`), and the sidecar that
runs it: `/readyz` reports the model server, a dead one is reported and restarted."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.localmodels.demo import CALLER_SAYS, DemoScript
from sim.db_servers import free_port

REPO = Path(__file__).resolve().parents[2]
KEY = "demo-admin-key-0123456789"
README = (REPO / "README.md").read_text()


def readme_try_out(command: str) -> list[str]:
    """The arguments of the README's first-screen try-out line for `command` (`dev`,
    `chat`), so the test below runs exactly what a newcomer copies."""
    first_screen = README[: README.index("\n## Configuration")]
    start = first_screen.index("**Try it with no key and nothing to download**")
    block = first_screen[first_screen.index("```sh\n", start) + 6:]
    block = block[: block.index("```")]
    prefix = "uv run python -m app "
    for line in block.splitlines():
        words = shlex.split(line.split("#", 1)[0])
        if line.startswith(prefix) and words[5] == command:
            return words[5:]
    raise AssertionError(f"the README's first screen has no `{prefix}{command} ...` try-out line")


def tool(name: str, value: dict[str, Any], required: bool = True) -> dict[str, Any]:
    desc = f"Record '{name[7:]}' as soon as the user has provided it" + (" (required)." if required else ".")
    return {"type": "function", "function": {"name": name, "description": desc, "parameters": {
        "type": "object", "properties": {"value": value}, "required": ["value"]}}}


TOOLS = [
    tool("record_caller_name", {"type": "string"}),
    tool("record_order_id", {"type": "string", "pattern": "^[A-Z]{2}[0-9]{6,8}$"}, required=False),
    tool("record_urgency", {"enum": ["low", "medium", "high", "critical"]}),
    tool("record_description", {"type": "string", "minLength": 10}),
    {"type": "function", "function": {"name": "end_session", "parameters": {"type": "object"}}},
]


class Conversation:
    """Drives `DemoScript` the way LiveKit would: tool calls answered by tool outputs."""

    def __init__(self) -> None:
        self.script = DemoScript()
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": "support"},
                                               {"role": "assistant", "content": "What's going on today?"}]
        self.recorded: dict[str, Any] = {}

    def say(self, text: str) -> str:
        self.messages.append({"role": "user", "content": text})
        for _ in range(5):
            reply = self.script.reply({"messages": self.messages, "tools": TOOLS})
            if reply.tool is None:
                self.messages.append({"role": "assistant", "content": reply.text})
                return reply.text
            call_id = f"c{len(self.messages)}"
            self.messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": reply.tool, "arguments": json.dumps(reply.arguments)}}]})
            out = self._run(reply.tool, dict(reply.arguments or {}))
            self.messages.append({"role": "tool", "tool_call_id": call_id, "content": out})
        raise AssertionError("the script looped on tool calls")

    def _run(self, name: str, args: dict[str, Any]) -> str:
        if name == "end_session":
            return "The session ends after this reply."
        field, value = name[7:], args["value"]
        if field == "order_id" and not (isinstance(value, str) and len(value) == 8):
            return f"Error: '{field}' was not recorded: bad value. Ask the user for a valid value."
        self.recorded[field] = value
        return f"Recorded {field}={json.dumps(value)}."


def test_the_script_records_each_required_field_it_asks_for_then_ends_the_call() -> None:
    c = Conversation()
    assert c.say("Hi, my parcel arrived damaged and I need a new one.") == "Got it. May I have your name, please?"
    assert c.script.last_asked == "caller_name"
    assert "urgency" in c.say("I'm grace hopper.")
    assert c.say("Very urgent, I need it by Friday.").endswith("Is there anything else I can help with?")
    assert c.say("No, that's all. Bye!") == "Thank you for calling. Goodbye!"
    assert c.recorded == {"description": "Hi, my parcel arrived damaged and I need a new one.",
                          "caller_name": "Grace Hopper", "urgency": "high"}


def test_the_script_asks_again_when_it_cannot_tell_the_value() -> None:
    c = Conversation()
    c.say("My order is really late, it should have come last week.")
    c.say("Ada")
    assert c.say("hmm, not sure").startswith("Sorry, I didn't catch that. Which urgency fits best: low, medium")


def test_the_demo_recogniser_answers_the_question_asked_last() -> None:
    c = Conversation()
    c.say("Hi, my parcel arrived damaged and I need a new one.")
    assert CALLER_SAYS[c.script.last_asked] == "My name is Ada Lovelace."


# ----------------------------------------------------------------- as users run it


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "ADMIN_", "OPENAI_", "DATABASE_", "LOCAL_"))}
    env.update(PYTHONPATH=str(REPO), DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/app.db", HOST="127.0.0.1",
               ADMIN_API_KEY=KEY, DRAIN_TIMEOUT="5", **extra)
    return env


@pytest.fixture
def demo_dev(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[str]]]:
    port, models = free_port(), free_port()
    env = _env(tmp_path, PORT=str(port), LOCAL_MODELS_PORT=str(models))
    args = readme_try_out("dev")
    assert args == ["dev", "--demo"]
    proc = subprocess.Popen([sys.executable, "-m", "app", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        else:
            raise AssertionError("dev --demo never became ready")
        yield base, env, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _model_server_pid(parent: int) -> int:
    """psutil (a dependency), not `ps`: a machine with only Python and uv has no procps."""
    import psutil

    children = [(c.pid, " ".join(c.cmdline())) for c in psutil.Process(parent).children()]
    pids = [pid for pid, cmd in children if "models serve" in cmd]
    assert len(pids) == 1, children
    return pids[0]


def test_dev_demo_then_chat_holds_a_whole_support_call_offline(demo_dev, tmp_path: Path) -> None:
    base, env, proc = demo_dev
    ready = httpx.get(f"{base}/readyz", timeout=3).json()
    assert ready["models"] == "ok" and ready["ready"] is True
    lines = "\n".join(["Hi, my parcel arrived damaged and I need a new one.", "My name is Ada Lovelace.",
                       "It arrived damaged.", "Quite urgent, high.", "No, that's all. Bye!"]) + "\n"
    args = readme_try_out("chat")
    assert args == ["chat", "--demo", "--purpose", "support"]
    chat = subprocess.run([sys.executable, "-m", "app", *args, "--user-id", "ada"],
                          cwd=tmp_path, env={k: v for k, v in env.items() if k != "PORT"}, input=lines,
                          capture_output=True, text=True, timeout=120, check=False)
    assert chat.returncode == 0, chat.stderr
    said = [line for line in chat.stdout.splitlines() if "support-agent-v1> " in line]
    assert said[0].endswith("What's going on today?")  # the seeded agent's greeting
    assert said[1].endswith("May I have your name, please?") and said[-1].endswith("Thank you for calling. Goodbye!")
    sessions = httpx.get(f"{base}/api/v1/sessions", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()["items"]
    (rec,) = [s for s in sessions if s["user_id"] == "ada"]
    full = httpx.get(f"{base}/api/v1/sessions/{rec['session_id']}", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()
    assert (full["status"], full["end_reason"], full["agent_id"]) == ("completed", "caller said goodbye", "support-agent-v1")
    assert full["collected"] == {"description": "Hi, my parcel arrived damaged and I need a new one.",
                                 "caller_name": "Ada Lovelace", "issue_category": "damaged_or_wrong_item",
                                 "urgency": "high"}
    # chat used the demo server dev runs (attached, not a second one): still exactly one
    assert _model_server_pid(proc.pid)


def test_a_dead_model_server_is_on_readyz_until_it_is_running_again(demo_dev) -> None:
    base, _env_, proc = demo_dev
    os.kill(_model_server_pid(proc.pid), signal.SIGKILL)
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.get(f"{base}/readyz", timeout=3)
        seen.append({"status": r.status_code, **r.json()})
        if seen[-1]["status"] == 200 and any(s["status"] == 503 for s in seen):
            break
        time.sleep(0.1)
    down = [s for s in seen if s["status"] == 503]
    assert down, seen
    assert down[0]["models"] == "down" and down[0]["detail"].startswith("demo model server is down:")
    assert "-9" in down[0]["detail"]  # why: killed
    assert seen[-1]["status"] == 200 and seen[-1]["models"] == "ok", seen[-3:]


def test_dev_refuses_to_share_a_port_with_another_kind_of_model_server(tmp_path: Path) -> None:
    models = free_port()
    other = subprocess.Popen([sys.executable, "-m", "app", "models", "serve", "--demo", "--port", str(models)],
                             cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{models}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        res = subprocess.run([sys.executable, "-m", "app", "dev", "--local-models"], cwd=tmp_path,
                             env=_env(tmp_path, PORT=str(free_port()), LOCAL_MODELS_PORT=str(models)),
                             capture_output=True, text=True, timeout=60, check=False)
        assert res.returncode == 2
        assert f"error: LOCAL_MODELS_PORT: 127.0.0.1:{models} already serves a demo model server, not the local one" in res.stderr
    finally:
        other.terminate()
        other.wait(10)


def _read_until(proc: subprocess.Popen[bytes], seen: bytearray, marker: bytes, timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while marker not in seen:
        assert time.monotonic() < deadline and proc.poll() is None, seen.decode(errors="replace")
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        seen += chunk


async def test_a_model_server_that_dies_mid_call_fails_the_session_as_provider_unavailable(tmp_path: Path) -> None:
    """The model server (here the demo one, started by hand as `models serve`; `chat
    --demo` uses it) is killed between two turns: the next turn cannot reach its model,
    chat says so in one line and exits 1, and the session is stored failed /
    llm_unavailable with the reason, as for any provider that goes away."""
    models = free_port()
    env = _env(tmp_path, LOCAL_MODELS_PORT=str(models))
    server = subprocess.Popen([sys.executable, "-m", "app", "models", "serve", "--demo"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chat: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{models}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.2)
        assert subprocess.run([sys.executable, "-m", "app", "seed"], cwd=tmp_path, env=env, capture_output=True,
                              timeout=60, check=False).returncode == 0
        chat = subprocess.Popen([sys.executable, "-m", "app", "chat", "--demo", "--purpose", "support"], cwd=tmp_path,
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert chat.stdin is not None
        out = bytearray()
        _read_until(chat, out, b"you> ", 60)  # the greeting, then the prompt
        chat.stdin.write(b"Hi, my parcel arrived damaged and I need a new one.\n")
        chat.stdin.flush()
        _read_until(chat, out, b"May I have your name, please?", 60)
        server.kill()
        server.wait(10)
        chat.stdin.write(b"My name is Ada Lovelace.\n")
        chat.stdin.close()
        code = chat.wait(90)
        assert chat.stderr is not None
        err = chat.stderr.read().decode()
    finally:
        for p in (chat, server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
    assert code == 1, err
    assert "error: the model is unavailable (APIConnectionError" in err
    from app.domain import SessionStatus
    from app.store.sql import SQLStore

    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/app.db")
    await store.start()
    try:
        (only,), _ = await store.list_sessions()
        rec = await store.get_session(only.session_id)
    finally:
        await store.aclose()
    assert (rec.status, rec.end_reason) == (SessionStatus.failed, "llm_unavailable")
    assert rec.error and "APIConnectionError" in rec.error
    assert rec.collected == {"description": "Hi, my parcel arrived damaged and I need a new one."}
