"""`app.worker.model_unavailable`: a model that fails for good ends the session as
failed, with a reason and an error text that is one line and carries no secret; the
record is what the admin API serves. Voice (the spoken apology) is proven by the sim
scenario `voice_llm_unavailable.yaml`; `chat` by tests/test_chat.py."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient
from livekit.agents import AgentSession
from livekit.agents.testing import fake_job_context
from pydantic import SecretStr

from app.api import create_app
from app.domain import AgentConfigInput, LLMFallback, SessionStatus
from app.seed import seed
from app.settings import Settings
from app.store.sql import SQLStore
from app.worker.entrypoint import prepare_job
from app.worker.model_unavailable import (
    LLM_UNAVAILABLE,
    MAX_ERROR_CHARS,
    ModelUnavailable,
    describe_error,
    missing_llm_endpoint,
)
from app.worker.services import WorkerServices
from sim.fake_openai import FakeOpenAI

ADMIN = "admin-key-model-unavailable-0123"
OPENAI_KEY = "sk-proj-configured-key-that-must-not-leak-42"


@pytest.fixture
async def services(tmp_path) -> AsyncIterator[WorkerServices]:
    store = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/w.db")
    await store.start()
    await seed(store)
    settings = Settings(_env_file=None, cache_poll_interval=0.05, admin_api_key=SecretStr(ADMIN),  # type: ignore[call-arg]
                        openai_api_key=SecretStr(OPENAI_KEY))
    svc = WorkerServices(settings, store)
    await svc.start()
    yield svc
    await svc.aclose()
    await store.aclose()


async def test_a_model_failing_after_its_retries_ends_the_session_failed(services: WorkerServices) -> None:
    """Five 500s: LiveKit retries the request (max_retry 3), then reports it unrecoverable;
    the session is ended at once (LiveKit alone would wait for three more dead turns)."""
    fake = FakeOpenAI()
    for _ in range(5):
        fake.error(500, f"upstream down (key {OPENAI_KEY})")
    with fake_job_context(job_metadata=json.dumps({"purpose": "support", "user_id": "u-9"})) as ctx:
        prepared = await prepare_job(ctx, services, audio=False, llm_client=fake.client())
        async with AgentSession() as session:
            prepared.manager.attach(session)
            guard = ModelUnavailable.attach(session, prepared.manager, services.settings)
            closed: list[str] = []
            session.on("close", lambda ev: closed.append(ev.reason.value))
            await session.start(prepared.agent, capture_run=True)
            # the run may end with LiveKit's APIError or, once the guard closed the session,
            # without one: what matters is what follows
            with contextlib.suppress(Exception):
                await session.run(user_input="My parcel is damaged")
            await guard.wait()
            assert closed, "the session was not closed"
        await prepared.aclose()
    assert len(fake.requests) == 4  # the first try and LiveKit's three retries, then no more
    assert guard.outcome is not None and guard.outcome.reason == LLM_UNAVAILABLE
    assert not guard.apologised  # text mode: nobody to speak to
    rec = await services.store.get_session(prepared.record.session_id)
    assert (rec.status, rec.end_reason) == (SessionStatus.failed, LLM_UNAVAILABLE)
    assert rec.error is not None and "500" in rec.error and OPENAI_KEY not in rec.error
    # the admin API serves it, filterable by status
    app = create_app(services.settings, services.store)
    async with AsyncTestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN}"
        listed = (await client.get("/api/v1/sessions", params={"status": "failed"})).json()["items"]
        assert [(s["session_id"], s["end_reason"]) for s in listed] == [(rec.session_id, "llm_unavailable")]
        one = (await client.get(f"/api/v1/sessions/{rec.session_id}")).json()
        assert one["status"] == "failed" and one["error"] == rec.error


def test_the_error_text_is_one_bounded_line_without_secrets() -> None:
    err = RuntimeError(
        f"Error code: 401 - Incorrect API key provided: sk-proj-abc********wxyz.\n"
        f"  header was Bearer {ADMIN} and key {OPENAI_KEY}"
    )
    text = describe_error(err, [ADMIN, OPENAI_KEY])
    assert "\n" not in text
    assert text == (
        "RuntimeError: Error code: 401 - Incorrect API key provided: sk-*** "
        "header was Bearer *** and key ***"
    )
    assert len(describe_error("x" * 5000)) == MAX_ERROR_CHARS


def test_a_model_endpoint_is_a_key_or_a_base_url_global_or_per_agent() -> None:
    bare = Settings(_env_file=None)  # type: ignore[call-arg]
    agent = AgentConfigInput.model_validate({"agent_id": "a-1", "name": "A", "prompt_config": {"instructions": "x"}})
    own = agent.model_copy(update={"llm": agent.llm.model_copy(update={"base_url": "http://127.0.0.1:11434/v1"})})
    problem = missing_llm_endpoint(bare, agent)  # type: ignore[arg-type]
    assert problem is not None and "'a-1'" in problem and "OPENAI_API_KEY" in problem
    assert missing_llm_endpoint(bare, own) is None  # type: ignore[arg-type]
    chained = agent.model_copy(update={"llm": agent.llm.model_copy(update={"fallbacks": [
        LLMFallback.model_validate({"base_url": "http://127.0.0.1:8080/v1"})]})})
    assert missing_llm_endpoint(bare, chained) is None  # type: ignore[arg-type]  # the chain reaches it
    assert missing_llm_endpoint(bare.model_copy(update={"openai_api_key": SecretStr("sk-x")}), agent) is None  # type: ignore[arg-type]
    assert missing_llm_endpoint(bare.model_copy(update={"openai_base_url": "http://h/v1"}), agent) is None  # type: ignore[arg-type]
