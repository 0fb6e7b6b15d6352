"""The worker's session start, driven as LiveKit drives it: a (fake) job context with
dispatch metadata → routing → cached config → AgentFactory → a text-mode AgentSession
on the real OpenAI plugin (scripted endpoint) → a durable session record."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from livekit.agents import AgentSession
from livekit.agents.testing import fake_job_context

from app.domain import SessionStatus, StoreUnavailable
from app.domain.fallback import FALLBACK_AGENT_ID
from app.seed import seed
from app.settings import Settings
from app.store.sql import SQLStore
from app.worker.entrypoint import prepare_job
from app.worker.services import WorkerServices
from sim.fake_openai import FakeOpenAI


class SwitchableStore(SQLStore):
    """The real SQL store with an off switch, to simulate an outage at session start."""

    down = False

    async def config_epoch(self) -> int:
        if self.down:
            raise StoreUnavailable("simulated outage")
        return await super().config_epoch()

    async def list_agent_configs(self, **kw):  # type: ignore[no-untyped-def]
        if self.down:
            raise StoreUnavailable("simulated outage")
        return await super().list_agent_configs(**kw)

    async def list_published(self, **kw):  # type: ignore[no-untyped-def]
        if self.down:
            raise StoreUnavailable("simulated outage")
        return await super().list_published(**kw)


@pytest.fixture
async def services(tmp_path) -> AsyncIterator[WorkerServices]:
    store = SwitchableStore(f"sqlite+aiosqlite:///{tmp_path}/w.db")
    await store.start()
    await seed(store)
    svc = WorkerServices(Settings(cache_poll_interval=0.05), store)
    await svc.start()
    yield svc
    await svc.aclose()
    await store.aclose()


async def run_session(services: WorkerServices, metadata: str, fake: FakeOpenAI, turns: list[str]):
    with fake_job_context(job_metadata=metadata) as ctx:
        prepared = await prepare_job(ctx, services, audio=False, llm_client=fake.client())
        async with AgentSession() as session:
            prepared.manager.attach(session)
            await session.start(prepared.agent, capture_run=True)
            for t in turns:
                await session.run(user_input=t)
        await prepared.aclose()
    return prepared, await services.store.get_session(prepared.record.session_id)


async def test_purpose_routes_and_the_record_keeps_version_and_turns(services) -> None:
    fake = FakeOpenAI().text("Happy to help you find the right plan.")
    prepared, rec = await run_session(
        services, json.dumps({"purpose": "sales", "user_id": "u-1"}), fake, ["I want to buy"]
    )
    assert prepared.config.agent_id == "sales-agent-v1"
    assert prepared.decision.reason == "purpose"
    assert rec.agent_id == "sales-agent-v1" and rec.config_version == 1 and rec.user_id == "u-1"
    assert rec.status == SessionStatus.completed
    texts = [(t.role, t.text) for t in rec.turns]
    assert ("user", "I want to buy") in texts
    assert ("assistant", "Happy to help you find the right plan.") in texts
    # what the model saw is the sales agent's rendered instructions and its record tools
    req = fake.requests[0]
    assert "{" not in (req.system or "")  # every placeholder rendered
    assert any(n.startswith("record_") for n in req.tool_names)


async def test_a_patch_applies_to_the_next_session_only(services) -> None:
    store = services.store
    first_fake = FakeOpenAI().text("v1 here").text("still v1")
    with fake_job_context(job_metadata=json.dumps({"purpose": "support"})) as ctx:
        first = await prepare_job(ctx, services, audio=False, llm_client=first_fake.client())
        async with AgentSession() as session:
            first.manager.attach(session)
            await session.start(first.agent, capture_run=True)
            await session.run(user_input="hello")
            # an operator edits the agent while this call is running
            await store.update_agent_config(
                "support-agent-v1", {"prompt_config": {"instructions": "You are the NEW support agent."}}
            )
            second_fake = FakeOpenAI().text("v2 here")
            _, rec2 = await run_session(services, json.dumps({"purpose": "support"}), second_fake, ["hi"])
            await session.run(user_input="are you still there?")
        await first.aclose()
    rec1 = await store.get_session(first.record.session_id)
    assert rec1.config_version == 1 and rec2.config_version == 2
    assert "NEW support agent" not in (first_fake.requests[-1].system or "")
    assert (second_fake.requests[0].system or "").startswith("You are the NEW support agent.")


async def test_hostile_metadata_routes_to_the_default_and_is_recorded(services) -> None:
    fake = FakeOpenAI().text("Hello from support.")
    for meta in ['{"agent_id": {"$ne": null}}', "\xff\xfe not json", "[" * 5000, json.dumps({"purpose": "x" * 9000})]:
        prepared, rec = await run_session(services, meta, FakeOpenAI().text("ok"), ["hi"])
        assert prepared.config.agent_id == "support-agent-v1"  # the seeded default
        assert rec.route_reason and rec.route_reason.startswith("default")
    del fake


async def test_store_down_uses_last_known_good_and_says_so(services) -> None:
    await run_session(services, json.dumps({"purpose": "sales"}), FakeOpenAI().text("ok"), ["hi"])
    services.store.down = True
    import asyncio

    await asyncio.sleep(0.2)  # the cache's polls now fail: its snapshot is not known fresh
    with fake_job_context(job_metadata=json.dumps({"purpose": "sales"})) as ctx:
        prepared = await prepare_job(ctx, services, audio=False, llm_client=FakeOpenAI().text("ok").client())
    assert prepared.config.agent_id == "sales-agent-v1"
    assert prepared.record.degraded and "last known-good" in prepared.record.degraded
    services.store.down = False
    await prepared.aclose()
    rec = await services.store.get_session(prepared.record.session_id)
    assert rec.degraded == prepared.record.degraded  # written once the store came back


async def test_store_down_with_nothing_cached_gets_the_fallback_agent(tmp_path) -> None:
    store = SwitchableStore(f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    await store.start()
    store.down = True
    svc = WorkerServices(Settings(), store)
    await svc.start()
    try:
        fake = FakeOpenAI().text("Sorry, can I take a message?")
        with fake_job_context(job_metadata=json.dumps({"purpose": "support"})) as ctx:
            prepared = await prepare_job(ctx, svc, audio=False, llm_client=fake.client())
            async with AgentSession() as session:
                await session.start(prepared.agent, capture_run=True)
                result = await session.run(user_input="hello?")
        assert prepared.config.agent_id == FALLBACK_AGENT_ID
        assert "no config cached" in (prepared.record.degraded or "")
        result.expect.contains_message(role="assistant")
        assert "record_callback_number" in fake.requests[0].tool_names
    finally:
        await svc.aclose()
        await store.aclose()


async def test_missing_required_variable_falls_back_to_the_default(services) -> None:
    store = services.store
    await store.update_agent_config(
        "sales-agent-v1",
        {"prompt_config": {"instructions": "Sell to {customer}.", "variables": {"customer": {"required": True}}}},
    )
    prepared, rec = await run_session(
        services, json.dumps({"purpose": "sales"}), FakeOpenAI().text("ok"), ["hi"]
    )
    assert prepared.config.agent_id == "support-agent-v1"
    assert rec.route_reason == "purpose:missing_variables"
    # with the variable supplied it routes as asked
    prepared, _ = await run_session(
        services, json.dumps({"purpose": "sales", "variables": {"customer": "Ada"}}),
        FakeOpenAI().text("ok"), ["hi"],
    )
    assert prepared.config.agent_id == "sales-agent-v1"


async def test_pte_mode_needs_no_store(tmp_path) -> None:
    svc = WorkerServices(Settings(agent_mode="pte"), None)
    await svc.start()
    fake = FakeOpenAI().text("Let's begin with a personal introduction.")
    with fake_job_context(job_metadata=json.dumps({"purpose": "support"})) as ctx:
        prepared = await prepare_job(ctx, svc, audio=False, llm_client=fake.client())
        async with AgentSession() as session:
            await session.start(prepared.agent, capture_run=True)
            await session.run(user_input="ready")
    await prepared.aclose()
    assert prepared.config.agent_id == "pte-interview"
    assert "record_score" in fake.requests[0].tool_names
