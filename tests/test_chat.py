"""`python -m app chat`, run as a user runs it: a subprocess in a terminal-like pipe,
talking to an OpenAI-compatible server over loopback (our scripted fake behind
uvicorn — the same path as Ollama or vLLM), with no LiveKit server at all."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import pytest
import uvicorn

from app.domain import SessionRecord, SessionStatus
from app.store.sql import SQLStore
from sim.fake_openai import FakeOpenAI, Usage

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chat_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LIVEKIT_", "DATABASE_", "LOG_"))}
    env.update(PYTHONPATH=str(REPO), DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}", **extra)
    return env


async def run_cli(tmp_path: Path, env: dict[str, str], *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", *args, cwd=tmp_path, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def only_session(tmp_path: Path) -> SessionRecord:
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}")
    await store.start()
    try:
        sessions, total = await store.list_sessions()
        assert total == 1
        return await store.get_session(sessions[0].session_id)
    finally:
        await store.aclose()


async def test_chat_without_key_or_base_url_says_so_before_the_first_turn(tmp_path: Path) -> None:
    env = chat_env(tmp_path)
    code, _, err = await run_cli(tmp_path, env, "seed")
    assert code == 0, err
    code, out, err = await run_cli(tmp_path, env, "chat", "--purpose", "support", stdin=b"hello\n\n")
    assert code == 2
    assert out == ""  # not even the greeting: the conversation never started
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: no model endpoint: agent 'support-agent-v1' has no llm.base_url and neither "
        "OPENAI_API_KEY nor OPENAI_BASE_URL is set (set OPENAI_API_KEY for OpenAI, or "
        "OPENAI_BASE_URL for an OpenAI-compatible server)"
    ]
    assert len(err.splitlines()) == 2 and "stored as failed (llm_unavailable)" in err
    rec = await only_session(tmp_path)
    assert (rec.status, rec.end_reason) == (SessionStatus.failed, "llm_unavailable")
    assert rec.error is not None and "OPENAI_API_KEY" in rec.error


async def test_an_agent_with_its_own_base_url_needs_no_global_endpoint(tmp_path: Path) -> None:
    """Per-agent `llm.base_url` counts: chat starts (and then meets a dead endpoint). With
    LOG_LEVEL=DEBUG the failure's full trace is shown too."""
    env = chat_env(tmp_path, LOG_LEVEL="DEBUG")
    code, _, err = await run_cli(tmp_path, env, "seed")
    assert code == 0, err
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}")
    await store.start()
    try:
        await store.update_agent_config("support-agent-v1", {"llm": {"base_url": f"http://127.0.0.1:{free_port()}/v1"}})
    finally:
        await store.aclose()
    code, out, err = await run_cli(tmp_path, env, "chat", "--purpose", "support", stdin=b"hello\n\n")
    assert "no model endpoint" not in err
    assert "Thanks for calling Acme support" in out  # the greeting: the session did start
    assert code == 1 and "error: the model is unavailable (APIConnectionError" in err
    assert "Traceback (most recent call last)" in err and "failed to generate LLM completion" in err


async def test_a_model_failing_in_conversation_is_one_line_a_failed_session_and_exit_1(tmp_path: Path) -> None:
    key = "sk-chat-test-key-that-must-not-leak-0123"
    # the provider refuses the key and echoes part of it, as OpenAI's 401 does
    fake = FakeOpenAI().error(401, f"Incorrect API key provided: {key[:8]}****{key[-4:]}")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake.asgi_app(), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    env = chat_env(tmp_path, OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", OPENAI_API_KEY=key)
    try:
        code, _, err = await run_cli(tmp_path, env, "seed")
        assert code == 0, err
        code, out, err = await run_cli(
            tmp_path, env, "chat", "--purpose", "support", stdin=b"My parcel is damaged\nhello?\n\n"
        )
    finally:
        server.should_exit = True
        await task
    assert code == 1
    # the greeting, one prompt, and nothing after it: no reply, no apology in text (the
    # error line says it), and the second line is never asked for
    assert out.count("you> ") == 1
    (greeting,) = out.replace("you> ", "").splitlines()
    assert greeting.startswith("support-agent-v1> Thanks for calling Acme support")
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith("error: the model is unavailable (APIStatusError: ")
    assert errors[0].endswith("; the conversation has ended")
    assert "Traceback" not in err and "livekit" not in err.lower()
    assert len(lines) == 3, err  # banner, the error, where the session went
    assert len(fake.requests) == 1  # a 401 is not retried, and the second line was never sent
    rec = await only_session(tmp_path)
    assert (rec.status, rec.end_reason) == (SessionStatus.failed, "llm_unavailable")
    assert rec.error is not None and rec.error.startswith("APIStatusError: ") and "401" in rec.error
    assert [t.role for t in rec.turns] == ["assistant", "user"]
    assert key not in err + out + rec.error and key[:8] not in rec.error  # masked: "sk-***"


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


async def test_chat_prints_and_stores_usage_with_its_cost_and_the_post_call_analysis(tmp_path: Path) -> None:
    """The Done-when path of issue 14 §2/§3 through `python -m app chat`: LiveKit's usage
    (cached tokens included) priced on the record, then the analysis asked of the same
    endpoint with structured output, after one invalid answer, stored as done."""
    answer = {"summary": "Ada asked where order AB1234567 is.", "success": {"passed": True, "reason": "Order noted."}}
    fake = (
        FakeOpenAI()
        .text("Thanks Ada. What is your order number?", usage=Usage(1000, 20, cached_tokens=512))
        .text("not json")  # the analysis model's first answer: retried
        .text(json.dumps(answer), usage=Usage(300, 30))
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake.asgi_app(), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    env = chat_env(tmp_path, OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", OPENAI_API_KEY="sk-local-test")
    try:
        code, out, err = await run_cli(tmp_path, env, "seed")
        assert code == 0, out + err
        store = SQLStore(env["DATABASE_URL"])
        await store.start()
        try:
            await store.update_agent_config("support-agent-v1", {"analysis": {
                "summary_prompt": "One sentence.", "success_criteria": "An order number was asked for."}})
        finally:
            await store.aclose()
        code, out, err = await run_cli(tmp_path, env, "chat", "--purpose", "support", stdin=b"Hi, this is Ada\n\n")
    finally:
        server.should_exit = True
        await task
    assert code == 0, err
    assert "usage: 1000 input tokens (512 cached), 20 output tokens" in err, err
    assert "summary: Ada asked where order AB1234567 is." in err
    assert "success: passed — Order noted." in err
    rec = await only_session(tmp_path)
    assert (rec.usage.llm_input_tokens, rec.usage.llm_cached_tokens, rec.usage.llm_output_tokens) == (1000, 512, 20)
    assert rec.usage.cost_usd == pytest.approx((488 * 0.40 + 512 * 0.10 + 20 * 1.60) / 1e6)
    assert rec.analysis is not None and rec.analysis.status.value == "done" and rec.analysis.attempts == 2
    assert rec.analysis.request.config_version == 2
    analysis_req = fake.requests[-1]
    assert analysis_req.body["response_format"]["type"] == "json_schema"
    assert "Caller: Hi, this is Ada" in json.dumps(analysis_req.messages)


async def test_chat_version_needs_an_agent_id(tmp_path: Path) -> None:
    code, out, err = await run_cli(tmp_path, chat_env(tmp_path), "chat", "--purpose", "support", "--version", "2")
    assert code == 2 and "--version needs --agent-id" in err
