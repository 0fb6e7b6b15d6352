"""`python -m app chat`, run as a user runs it: a subprocess in a terminal-like pipe,
talking to an OpenAI-compatible server over loopback (our scripted fake behind
uvicorn — the same path as Ollama or vLLM), with no LiveKit server at all."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import uvicorn

from app.store.sql import SQLStore
from sim.fake_openai import FakeOpenAI

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_chat_talks_to_the_routed_agent_and_stores_the_session(tmp_path: Path) -> None:
    fake = (
        FakeOpenAI()
        .tool_call("record_caller_name", {"value": "Ada Lovelace"})
        .text("Thanks Ada. What is your order number?")
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake.asgi_app(), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    db = tmp_path / "chat.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LIVEKIT_", "DATABASE_"))}
    env.update(
        PYTHONPATH=str(REPO), DATABASE_URL=f"sqlite+aiosqlite:///{db}",
        OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", OPENAI_API_KEY="sk-local-test",
    )
    try:
        # seed first (chat uses whatever the database holds)
        seed = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "seed", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await seed.communicate()
        assert seed.returncode == 0, out.decode()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "chat", "--purpose", "support", "--user-id", "ada",
            cwd=tmp_path, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(b"Hi, this is Ada Lovelace\n\n"), 90)
    finally:
        server.should_exit = True
        await task
    out, err = stdout.decode(), stderr.decode()
    assert proc.returncode == 0, err
    assert "support-agent-v1 v1" in err  # the banner names the routed agent and version
    assert "support-agent-v1> Thanks Ada. What is your order number?" in out
    # the model received the support agent's instructions and the user's words
    req = fake.requests[0]
    assert "support" in (req.system or "").lower()
    assert any("Ada Lovelace" in str(m.get("content")) for m in req.messages)
    # the conversation and the collected field are stored like a voice session's
    store = SQLStore(f"sqlite+aiosqlite:///{db}")
    await store.start()
    try:
        sessions, total = await store.list_sessions()
        assert total == 1
        rec = await store.get_session(sessions[0].session_id)
    finally:
        await store.aclose()
    assert rec.agent_id == "support-agent-v1" and rec.user_id == "ada"
    assert rec.collected == {"caller_name": "Ada Lovelace"}
    assert [t.role for t in rec.turns if t.role == "user"] == ["user"]
    assert rec.status.value == "completed"
