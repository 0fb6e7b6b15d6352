"""Issue 14 §2/§3 through the webhooks: a `python -m app chat` session of an agent with
analysis settings, against the scripted endpoint, produces a verified `session.ended`
carrying usage and cost (and saying an analysis follows) and then a verified
`session.analyzed` carrying the stored analysis; the chat process's own runner and
dispatcher do it all before it exits."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from app.domain.webhooks import WebhookInput
from app.store import open_store
from sim.fake_openai import FakeOpenAI, Usage
from sim.webhook_receiver import WebhookReceiver
from tests.webhooks.conftest import seed_database, serve_scripted, verify

REPO = Path(__file__).resolve().parents[2]
ANSWER = {
    "summary": "Ada asked about a late order.",
    "success": {"passed": False, "reason": "No order number was given."},
    "extracted": {"refund_requested": False},
}


async def test_session_ended_carries_usage_and_session_analyzed_follows(tmp_path: Path) -> None:
    fake = (FakeOpenAI()
            .text("Thanks Ada. What is your order number?", usage=Usage(900, 12, cached_tokens=256))
            .text(json.dumps(ANSWER), usage=Usage(400, 40)))
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"
    server, task, env = await serve_scripted(fake, db_url)
    async with WebhookReceiver() as rx:
        try:
            await seed_database(tmp_path, env)
            store = open_store(db_url)
            await store.start()
            try:
                await store.update_agent_config("support-agent-v1", {"analysis": {
                    "summary_prompt": "One sentence.", "success_criteria": "An order number was given.",
                    "extraction_schema": {"type": "object", "properties": {"refund_requested": {"type": "boolean"}},
                                          "required": ["refund_requested"]}}})
                hook = await store.create_webhook(WebhookInput(url=rx.url,
                                                               events=["session.ended", "session.analyzed"]))
            finally:
                await store.aclose()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "app", "chat", "--purpose", "support", "--user-id", "ada", cwd=tmp_path,
                env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            _, stderr = await asyncio.wait_for(proc.communicate(b"Hi, this is Ada, my order is late\n\n"), 90)
        finally:
            server.should_exit = True
            await task
        assert proc.returncode == 0, stderr.decode()
        assert len(rx.received) == 2, stderr.decode()  # both delivered before chat exited
    by_type = {}
    for req in rx.received:
        payload = verify(hook.secret, req)  # the receiver's library accepts each signature
        by_type[payload["type"]] = (req, payload["data"])
    assert set(by_type) == {"session.ended", "session.analyzed"}

    ended_req, ended = by_type["session.ended"]
    assert ended["status"] == "completed" and ended["analysis_requested"] is True
    usage = ended["usage"]
    assert (usage["llm_input_tokens"], usage["llm_cached_tokens"], usage["llm_output_tokens"]) == (900, 256, 12)
    assert usage["cost_usd"] == pytest.approx((644 * 0.40 + 256 * 0.10 + 12 * 1.60) / 1e6)
    assert [m["model"] for m in usage["models"]] == ["gpt-4.1-mini"]

    analyzed_req, analyzed = by_type["session.analyzed"]
    assert analyzed["session_id"] == ended["session_id"] and analyzed["agent_id"] == "support-agent-v1"
    assert analyzed["status"] == "done" and analyzed["config_version"] == 2
    assert analyzed["summary"] == ANSWER["summary"]
    assert analyzed["success"] == ANSWER["success"] and analyzed["extracted"] == ANSWER["extracted"]
    assert analyzed["attempts"] == 1 and analyzed["model"] == "gpt-4.1-mini"
    assert analyzed["cost_usd"] == pytest.approx((400 * 0.40 + 40 * 1.60) / 1e6)
    assert analyzed_req.webhook_id != ended_req.webhook_id and analyzed_req.webhook_id.startswith("evt_")
