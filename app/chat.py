"""`python -m app chat`: a text conversation with a routed agent in the terminal.

It runs the same routing, cache, factory, tools and session record as a voice call,
in LiveKit's text mode (an `AgentSession` with no room and no audio), so it works
with nothing but an OpenAI-compatible endpoint: no LiveKit server, no audio library.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from app.agents.routing import MetadataSource
from app.domain import StoreUnavailable
from app.settings import AgentMode, Settings
from app.store import open_store
from app.worker.entrypoint import prepare_session
from app.worker.services import WorkerServices


def _say(who: str, text: str) -> None:
    print(f"{who}> {text}", flush=True)


async def run_chat(
    settings: Settings,
    *,
    purpose: str | None = None,
    agent_id: str | None = None,
    variables: dict[str, str] | None = None,
    user_id: str = "terminal",
    lines: Any = None,
) -> int:
    """`lines`: an async iterator of user inputs (tests); stdin when None."""
    from livekit.agents import AgentSession

    store = None if settings.agent_mode == AgentMode.pte else open_store(settings.database_url)
    if store is not None:
        try:
            await store.start()
        except StoreUnavailable as e:
            print(f"warning: store unavailable ({e.message}); using the fallback agent", file=sys.stderr)
    services = WorkerServices(settings, store)
    await services.start()
    meta: dict[str, Any] = {"variables": variables or {}, "user_id": user_id}
    if agent_id:
        meta["agent_id"] = agent_id
    if purpose:
        meta["purpose"] = purpose
    try:
        prepared = await prepare_session(
            services, [MetadataSource("job", json.dumps(meta))], room="terminal", audio=False
        )
        print(
            f"[{prepared.config.agent_id} v{prepared.config.version} — {prepared.decision.reason}; "
            f"session {prepared.record.session_id}; empty line or Ctrl-D to quit]",
            file=sys.stderr, flush=True,
        )
        async with AgentSession() as session:
            prepared.manager.attach(session)

            def on_item(ev: Any) -> None:
                item = ev.item
                if getattr(item, "type", None) == "message" and item.role == "assistant" and item.text_content:
                    _say(prepared.manager.agent_id, item.text_content)

            session.on("conversation_item_added", on_item)
            closed = asyncio.Event()
            session.on("close", lambda _ev: closed.set())
            await session.start(prepared.agent, capture_run=True)  # returns after the greeting
            async for line in lines if lines is not None else _stdin_lines():
                if not line.strip() or closed.is_set():
                    break
                try:
                    await session.run(user_input=line)
                except Exception as e:  # a failed turn (LLM unreachable...) is reported, not fatal
                    print(f"error: {e}", file=sys.stderr, flush=True)
                if closed.is_set():
                    break
        await prepared.aclose()
        rec = prepared.manager.record
        print(f"[session {rec.session_id} stored; collected: {json.dumps(prepared.manager.collected)}]",
              file=sys.stderr, flush=True)
        return 0
    finally:
        await services.aclose()
        if store is not None:
            await store.aclose()


async def _stdin_lines() -> Any:
    while True:
        try:
            line = await asyncio.to_thread(input, "you> ")
        except EOFError:
            return
        yield line
