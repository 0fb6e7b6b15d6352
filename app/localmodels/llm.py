"""The LLM: llama.cpp's server, in process (xllamacpp), behind our chat endpoint.

Why in process: `xllamacpp.Server.handle_chat_completions` runs llama.cpp's own
OpenAI-compatible handler (chat template, sampling, grammars, parallel slots with
continuous batching, prompt cache) without a second HTTP hop, and it releases the GIL
while the model works, so the server's event loop keeps answering. Each request runs
in a worker thread; its chunks cross to the loop through a queue, and a consumer that
goes away (the client hung up, the user barged in) stops the generation at the next
token by returning True from the callback.

llama.cpp also opens its own HTTP listener; it is bound to a random loopback port and
never advertised: the one address clients use is ours.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from app.localmodels.settings import LocalModelSettings

log = logging.getLogger(__name__)

_END = object()


class LLMError(Exception):
    """llama.cpp refused or failed a request; `status` and `body` are what the client gets."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code


def _error_of(doc: Mapping[str, Any]) -> LLMError:
    inner = doc.get("error")
    err: Mapping[str, Any] = inner if isinstance(inner, dict) else doc
    code = err.get("code")
    status = code if isinstance(code, int) else 500
    message = str(err.get("message") or "the model server failed")
    kind = str(err.get("type") or "server_error")
    if kind == "exceed_context_size_error":
        n_prompt, n_ctx = err.get("n_prompt_tokens"), err.get("n_ctx")
        message = (f"the conversation is longer than the model's context: {n_prompt} prompt tokens, "
                   f"{n_ctx} available per conversation (LOCAL_LLM_CONTEXT)")
        return LLMError(400, message, kind="invalid_request_error", code="context_length_exceeded")
    return LLMError(status if 400 <= status < 600 else 500, message, kind=kind)


class LlamaChat:
    """One GGUF model served by llama.cpp; `stream()` is safe to call concurrently."""

    def __init__(self, gguf: Path, settings: LocalModelSettings) -> None:
        self.gguf = gguf
        self.settings = settings
        self._server: Any = None
        self._pool = ThreadPoolExecutor(max_workers=settings.llm_parallel * 2, thread_name_prefix="llm")

    @property
    def name(self) -> str:
        return self.gguf.stem

    def load(self) -> None:
        """Blocking (seconds): call from a thread. Raises on a file llama.cpp cannot load."""
        import xllamacpp

        s = self.settings
        p = xllamacpp.CommonParams()
        p.model.path = str(self.gguf)
        p.n_parallel = s.llm_parallel
        p.n_ctx = s.llm_context * s.llm_parallel  # llama.cpp splits it evenly between slots
        p.use_jinja = True
        p.cpuparams.n_threads = s.llm_threads
        p.cpuparams_batch.n_threads = s.llm_batch_threads
        p.hostnames = ["127.0.0.1"]
        p.port = 0
        p.endpoint_metrics = False
        p.endpoint_slots = False
        p.endpoint_props = False
        # llama.cpp logs every request to stderr; its errors reach clients (and our log)
        # as error documents, so its own lines are kept for LOG_LEVEL=DEBUG.
        p.verbosity = 3 if log.isEnabledFor(logging.DEBUG) else -1
        self._server = xllamacpp.Server(p)

    def grammar_of(self, schema_json: str) -> str:
        import xllamacpp

        grammar: str = xllamacpp.json_schema_to_grammar(schema_json)
        return grammar

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """llama.cpp's chunks for a streamed chat request. Raises `LLMError` when it
        refuses the request (before or during the stream)."""
        if self._server is None:
            raise LLMError(503, "the model is not loaded", kind="server_error")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def on_chunk(doc: dict[str, Any]) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, doc)
            return stop.is_set()

        def run() -> None:
            try:
                self._server.handle_chat_completions(body, on_chunk)
            except Exception as e:  # a request llama.cpp rejects before it starts (bad messages)
                loop.call_soon_threadsafe(queue.put_nowait, LLMError(400, str(e)))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        future = loop.run_in_executor(self._pool, run)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, LLMError):
                    raise item
                if isinstance(item, dict) and "error" in item:
                    raise _error_of(item)
                yield item
        finally:
            stop.set()  # takes effect at the next token (a prompt being read runs to its end)
            if not future.done():
                future.add_done_callback(lambda f: f.exception())

    def close(self) -> None:
        server, self._server = self._server, None
        del server  # the destructor stops llama.cpp's loop and joins its thread
        self._pool.shutdown(wait=False, cancel_futures=True)
