"""`python -m app chat`: a text conversation with a routed agent in the terminal.

It runs the same routing, cache, factory, tools and session record as a voice call,
in LiveKit's text mode (an `AgentSession` with no room and no audio), so it works
with nothing but an OpenAI-compatible endpoint: no LiveKit server, no audio library.

The terminal is the conversation: the agent's lines on stdout, ours (banner, errors)
on stderr, one line each. LiveKit's own log lines (retry warnings, tracebacks) show
only with LOG_LEVEL=DEBUG. When the model is unavailable the session ends as a voice
call would (`app.worker.model_unavailable`: recorded `failed` / `llm_unavailable`),
with one error line and exit status 1; with no model endpoint configured at all,
chat says so before the first turn and exits with 2.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from app.domain import SessionStatus, StoreUnavailable
from app.domain.analysis import AnalysisStatus, SessionAnalysis
from app.domain.routing import MetadataSource
from app.domain.usage import SessionUsage
from app.logging_setup import secret_values
from app.observability import tracing
from app.settings import Settings
from app.store import ConfigStore, open_store
from app.webhooks.dispatcher import Dispatcher
from app.worker.model_unavailable import LLM_UNAVAILABLE, ModelUnavailable, describe_error, missing_llm_endpoint
from app.worker.services import WorkerServices
from app.worker.session_start import prepare_session
from app.worker.tracing import start_tracing

WEBHOOK_FLUSH_S = 10.0
"""At exit, how long the session's webhooks may take to go out (what is still due then
is delivered by any `dev`/`start` process on the same database)."""

if TYPE_CHECKING:
    from livekit.agents import CloseEvent, ConversationItemAddedEvent

EXIT_MODEL_UNAVAILABLE = 1
EXIT_NO_MODEL_ENDPOINT = 2


def _say(who: str, text: str) -> None:
    print(f"{who}> {text}", flush=True)


def _error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr, flush=True)


async def run_chat(
    settings: Settings,
    *,
    purpose: str | None = None,
    agent_id: str | None = None,
    variables: dict[str, str] | None = None,
    user_id: str = "terminal",
    lines: AsyncIterator[str] | None = None,
    version: int | None = None,
) -> int:
    """`lines`: an async iterator of user inputs (tests); stdin when None. `version`: that
    version of `agent_id` (a draft) instead of the published one."""
    from livekit.agents import AgentSession
    from livekit.agents.llm import ChatMessage

    from app.agents.providers import session_connect_options
    from app.worker.budget import attach_budget_guard

    start_tracing(settings)
    store = open_store(settings.database_url)
    try:
        await store.start()
    except StoreUnavailable as e:
        print(f"warning: store unavailable ({e.message}); the session is not recorded until it "
              "answers, and store-backed agents give way to the fallback agent", file=sys.stderr)
    services = WorkerServices(settings, store)
    await services.start()
    dispatcher = Dispatcher(settings, store)
    dispatcher.start()
    meta: dict[str, Any] = {"variables": variables or {}, "user_id": user_id}
    if agent_id:
        meta["agent_id"] = agent_id
        if version is not None:
            meta["version"] = version
    if purpose:
        meta["purpose"] = purpose
    try:
        prepared = await prepare_session(
            services, [MetadataSource("job", json.dumps(meta))], room="terminal", audio=False
        )
        rec = prepared.manager.record
        no_endpoint = missing_llm_endpoint(settings, prepared.config)
        if no_endpoint:
            prepared.manager.finish(SessionStatus.failed, LLM_UNAVAILABLE, no_endpoint)
            await prepared.aclose()
            _error(no_endpoint)
            print(f"[session {rec.session_id} stored as failed ({LLM_UNAVAILABLE})]", file=sys.stderr, flush=True)
            await _flush_webhooks(store, dispatcher)
            return EXIT_NO_MODEL_ENDPOINT
        print(
            f"[{prepared.config.agent_id} v{prepared.config.version} — {prepared.decision.reason}; "
            f"session {rec.session_id}; empty line or Ctrl-D to quit]",
            file=sys.stderr, flush=True,
        )
        async with AgentSession(conn_options=session_connect_options()) as session:
            prepared.manager.attach(session)
            attach_budget_guard(session, prepared.manager)
            guard = ModelUnavailable.attach(session, prepared.manager, settings)

            def on_item(ev: ConversationItemAddedEvent) -> None:
                item = ev.item
                if isinstance(item, ChatMessage) and item.role == "assistant" and item.text_content:
                    _say(prepared.manager.agent_id, item.text_content)

            closed = asyncio.Event()

            def on_close(_ev: CloseEvent) -> None:
                closed.set()

            session.on("conversation_item_added", on_item)
            session.on("close", on_close)
            try:
                await session.start(prepared.agent, capture_run=True)  # returns after the greeting
            except Exception as e:  # a greeting the model must generate, and it failed
                if guard.outcome is None:
                    _error(describe_error(e, secret_values(settings)))
            if guard.outcome is None:
                async for line in lines if lines is not None else _stdin_lines():
                    if not line.strip() or closed.is_set():
                        break
                    try:
                        await session.run(user_input=line)
                    except Exception as e:  # reported in one line; the model's failures end the chat
                        if guard.outcome is None:
                            _error(describe_error(e, secret_values(settings)))
                    if guard.outcome is not None or closed.is_set():
                        break
            await guard.wait()
        await prepared.aclose()
        if guard.outcome is not None:
            _error(f"the model is unavailable ({guard.outcome.error}); the conversation has ended")
            print(f"[session {rec.session_id} stored as failed ({guard.outcome.reason})]", file=sys.stderr, flush=True)
            await _flush_webhooks(store, dispatcher)
            return EXIT_MODEL_UNAVAILABLE
        print(f"[session {rec.session_id} stored; collected: {json.dumps(prepared.manager.collected)}]",
              file=sys.stderr, flush=True)
        if rec.usage.models:
            print(f"[{_usage_line(rec.usage)}]", file=sys.stderr, flush=True)
        if rec.analysis is not None and services.analysis is not None:
            timeout = rec.analysis.request.settings.timeout_s * rec.analysis.request.settings.max_attempts + 10
            print("[analysing the call...]", file=sys.stderr, flush=True)
            result = await services.analysis.wait_for(rec.session_id, timeout)
            for line in _analysis_lines(result):
                print(f"[{line}]", file=sys.stderr, flush=True)
        await _flush_webhooks(store, dispatcher)
        return 0
    finally:
        await dispatcher.aclose()
        await services.aclose()
        await store.aclose()
        await asyncio.to_thread(tracing.shutdown)


def _usage_line(usage: SessionUsage) -> str:
    text = (f"usage: {usage.llm_input_tokens} input tokens ({usage.llm_cached_tokens} cached), "
            f"{usage.llm_output_tokens} output tokens; cost ${usage.cost_usd:.6f}")
    if usage.unpriced_models:
        text += f" (no price for {', '.join(usage.unpriced_models)})"
    return text


def _analysis_lines(analysis: SessionAnalysis | None) -> list[str]:
    if analysis is None:
        return ["analysis: not finished yet; it is stored on the session when it is"]
    if analysis.status != AnalysisStatus.done:
        return [f"analysis failed: {analysis.error}"]
    lines = []
    if analysis.summary is not None:
        lines.append(f"summary: {analysis.summary}")
    if analysis.success is not None:
        lines.append(f"success: {'passed' if analysis.success.passed else 'failed'} — {analysis.success.reason}")
    if analysis.extracted is not None:
        lines.append(f"extracted: {json.dumps(analysis.extracted, ensure_ascii=False)}")
    return lines


async def _flush_webhooks(store: ConfigStore, dispatcher: Dispatcher) -> None:
    """The session's events (a failed one's too) get a chance to go out before exit."""
    try:
        hooks = bool(await store.list_webhooks())
    except StoreUnavailable:
        hooks = False
    if hooks and not await dispatcher.flush(WEBHOOK_FLUSH_S):
        print("[webhooks still due are delivered by the next dev/start process on this database]",
              file=sys.stderr, flush=True)


async def _stdin_lines() -> AsyncIterator[str]:
    while True:
        try:
            line = await asyncio.to_thread(input, "you> ")
        except EOFError:
            return
        yield line
