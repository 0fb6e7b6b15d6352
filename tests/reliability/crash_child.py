"""A worker process that holds one live session and is then SIGKILLed (item 3).

Run: `python tests/reliability/crash_child.py <DATABASE_URL> <max_turns>` (PYTHONPATH=repo).

What it runs is the worker's real session path: the store opened from the URL, the
dev seed, `WorkerServices` (config cache), `prepare_job` under LiveKit's
`fake_job_context`, a text-mode `AgentSession` on the real OpenAI plugin pointed at the
scripted endpoint. Each user turn makes the model record one schema field (a
`record_<field>` tool call) and answer; after each turn the session manager's queue is
flushed and one JSON line reports what the store has acknowledged: the turn seqs and
texts and the collected fields. The parent kills it whenever it likes — it never
closes anything itself.
"""

from __future__ import annotations

import asyncio
import json
import sys

from livekit.agents import AgentSession
from livekit.agents.testing import fake_job_context

from app.seed import seed
from app.settings import Settings
from app.store import open_store
from app.worker.entrypoint import prepare_job
from app.worker.services import WorkerServices
from sim.fake_openai import FakeOpenAI

FIELDS = [
    ("caller_name", "Ada Lovelace"),
    ("issue_category", "billing"),
    ("urgency", "high"),
    ("description", "I was charged twice for the same order last week."),
    ("order_id", "AB123456"),
]


async def main(url: str, max_turns: int) -> None:
    store = open_store(url)
    await store.start()
    await seed(store)
    services = WorkerServices(Settings(_env_file=None), store)  # type: ignore[call-arg]
    await services.start()
    fake = FakeOpenAI()
    meta = json.dumps({"purpose": "support", "user_id": "crash-user"})
    with fake_job_context(job_metadata=meta) as ctx:
        prepared = await prepare_job(ctx, services, audio=False, llm_client=fake.client())
        manager = prepared.manager
        async with AgentSession() as session:
            manager.attach(session)
            await session.start(prepared.agent, capture_run=True)
            for i in range(max_turns):
                if i < len(FIELDS):
                    name, value = FIELDS[i]
                    fake.tool_call(f"record_{name}", {"value": value}).text(f"Thanks, noted your {name}.")
                else:
                    fake.text(f"Anything else? (turn {i})")
                await session.run(user_input=f"user turn {i}")
                assert await manager.flush(30), "the store did not acknowledge the turn"
                assert not manager.dropped, manager.dropped
                print(json.dumps({
                    "session_id": prepared.record.session_id,
                    "turn": i,
                    "turns": [[t.seq, t.role, t.text] for t in prepared.record.turns],
                    "collected": manager.collected,
                }), flush=True)
            await asyncio.sleep(3600)  # only SIGKILL ends this


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
