"""The issue's "done when": a session run through `python -m app chat` against the
scripted OpenAI-compatible endpoint produces a `session.ended` delivery to a receiver on
loopback that the `standardwebhooks` library verifies, carrying the transcript and the
collected data (with its validation state). Nothing else runs: the chat process's own
dispatcher delivers before it exits."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from app.domain.webhooks import WebhookInput
from app.store import open_store
from sim.fake_openai import FakeOpenAI
from sim.webhook_receiver import WebhookReceiver
from tests.webhooks.conftest import seed_database, serve_scripted, verify

REPO = Path(__file__).resolve().parents[2]


async def test_a_chat_session_is_delivered_as_a_signed_session_ended(tmp_path: Path) -> None:
    fake = (FakeOpenAI().tool_call("record_caller_name", {"value": "Ada Lovelace"})
            .text("Thanks Ada. What is your order number?"))
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    server, task, env = await serve_scripted(fake, db_url)
    async with WebhookReceiver() as rx:
        try:
            await seed_database(tmp_path, env)
            store = open_store(db_url)
            await store.start()
            try:
                hook = await store.create_webhook(WebhookInput(url=rx.url, events=["session.ended"]))
            finally:
                await store.aclose()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "app", "chat", "--purpose", "support", "--user-id", "ada", cwd=tmp_path,
                env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            stdout, stderr = await asyncio.wait_for(proc.communicate(b"Hi, this is Ada Lovelace\n\n"), 90)
        finally:
            server.should_exit = True
            await task
        assert proc.returncode == 0, stderr.decode()
        assert len(rx.received) == 1, stderr.decode()  # delivered before chat exited
    (req,) = rx.received
    payload = verify(hook.secret, req)  # the receiver's library accepts the signature
    assert payload["type"] == "session.ended"
    data = payload["data"]
    assert data["agent_id"] == "support-agent-v1" and data["user_id"] == "ada" and data["status"] == "completed"
    assert data["collected"] == {"caller_name": "Ada Lovelace"}
    assert data["collected_validation"]["state"] in ("complete", "incomplete")
    assert ("user", "Hi, this is Ada Lovelace") in [(t["role"], t["text"]) for t in data["transcript"]]
    assert ("assistant", "Thanks Ada. What is your order number?") in [
        (t["role"], t["text"]) for t in data["transcript"]]
    assert req.webhook_id.startswith("evt_")
