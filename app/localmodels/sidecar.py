"""A model server beside the platform: `dev --local-models`, `dev --demo`, `chat --...`.

The one mechanism behind both flags: start `python -m app models serve [--demo]` as a
child process on `LOCAL_MODELS_PORT` (127.0.0.1), wait until its `/health` answers, and
point the default providers (LLM, STT and TTS base URL) at it (`point_providers`).
Agents that set their own `base_url` keep it. Inference therefore never runs in the
platform's process: its event loop (API, LiveKit worker, sessions) only does I/O.

If a model server of the same kind already answers on that port (another `dev`, or a
`models serve` started by hand), it is used as it is and left running at exit. A child
that dies is reported (`on_state("down", why)`: the supervisor shows it on `/readyz`)
and started again with backoff; meanwhile sessions fail to reach their model, which
their records show as the provider being unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import httpx

from app.localmodels.settings import LocalModelSettings
from app.settings import Settings

log = logging.getLogger(__name__)

Kind = Literal["local", "demo"]
ModelsState = Literal["starting", "ok", "down"]
StateCallback = Callable[[ModelsState, str | None], None]

HEALTH_TIMEOUT = 2.0
RESTART_BACKOFF_MAX = 30.0
STOP_TIMEOUT = 10.0
PROVIDER_MODELS: dict[Kind, dict[str, str]] = {
    "local": {"default_llm_model": "local-llm", "default_stt_model": "local-whisper",
              "default_tts_model": "local-piper", "default_tts_voice": "default"},
    "demo": {"default_llm_model": "demo", "default_stt_model": "demo", "default_tts_model": "demo",
             "default_tts_voice": "demo"},
}
"""Names sent to the model server, which serves one model of each kind whatever is asked:
they only make logs and session metrics say what answered."""


class ModelServerError(Exception):
    """The model server could not be started; `str()` is one line for the terminal."""


def point_providers(settings: Settings, kind: Kind, base_url: str) -> Settings:
    """`settings` with the default providers on the model server at `base_url`."""
    update: dict[str, object] = {"openai_base_url": base_url, **PROVIDER_MODELS[kind]}
    if settings.openai_base_url and settings.openai_base_url != base_url:
        log.info("OPENAI_BASE_URL (%s) is replaced by the %s model server for this run", settings.openai_base_url, kind)
    return settings.model_copy(update=update)


async def probe(base: str, timeout: float = HEALTH_TIMEOUT) -> dict[str, object] | None:
    """The model server's /health document, or None when nothing healthy answers."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            r = await client.get(f"{base}/health")
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    try:
        doc = r.json()
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class ModelSidecar:
    def __init__(self, kind: Kind, local: LocalModelSettings, *, json_logs: bool = False,
                 log_level: str | None = None, on_state: StateCallback | None = None) -> None:
        """`log_level`: the child's LOG_LEVEL, when it should differ from this process's."""
        self.kind = kind
        self.local = local
        self.json_logs = json_logs
        self.log_level = log_level
        self.on_state = on_state or (lambda _s, _d: None)
        self.proc: asyncio.subprocess.Process | None = None
        self.attached = False
        self._tail: deque[str] = deque(maxlen=20)
        self._pump: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.local.models_port}"

    @property
    def base_url(self) -> str:
        return self.local.base_url

    def point(self, settings: Settings) -> Settings:
        return point_providers(settings, self.kind, self.base_url)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Use a model server of our kind already on the port, or start one and wait for
        it to be healthy; raises `ModelServerError` with the reason."""
        self.on_state("starting", f"{self.kind} model server starting")
        found = await probe(self.root)
        if found is not None:
            if found.get("backend") != self.kind:
                raise ModelServerError(
                    f"LOCAL_MODELS_PORT: 127.0.0.1:{self.local.models_port} already serves a "
                    f"{found.get('backend')!s} model server, not the {self.kind} one asked for")
            self.attached = True
            log.info("using the %s model server already running on %s", self.kind, self.base_url)
            self.on_state("ok", None)
            return
        await self._spawn()
        await self._wait_healthy()
        log.info("%s model server ready on %s", self.kind, self.base_url)
        self.on_state("ok", None)

    def watch(self) -> None:
        """Keep a started child running: report its exit and start it again with backoff."""
        if self.proc is not None and self._watch is None:
            self._watch = asyncio.create_task(self._keep_running(), name="model-server-watch")

    async def aclose(self) -> None:
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(BaseException):
                await self._watch
        await self._stop_child()

    # ------------------------------------------------------------------- internals

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "app", "models", "serve", "--port", str(self.local.models_port)]
        if self.kind == "demo":
            cmd.append("--demo")
        if self.json_logs:
            cmd.append("--json-logs")
        return cmd

    async def _spawn(self) -> None:
        self._tail.clear()
        root = str(Path(__file__).resolve().parents[2])  # where `app` is importable from
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        if self.log_level is not None:
            env["LOG_LEVEL"] = self.log_level
        self.proc = await asyncio.create_subprocess_exec(
            *self._command(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env)
        self._pump = asyncio.create_task(self._forward_stderr(self.proc), name="model-server-log")

    async def _forward_stderr(self, proc: asyncio.subprocess.Process) -> None:
        """The child's log lines go to our stderr as they are (same format), and the last
        few are kept to explain a failed start."""
        assert proc.stderr is not None
        while True:
            line = await proc.stderr.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            self._tail.append(text)
            print(text, file=sys.stderr, flush=True)

    def _why_exited(self, code: int | None) -> str:
        errors = [line[len("error: "):] for line in self._tail if line.startswith("error: ")]
        if errors:
            return errors[-1]
        return f"the {self.kind} model server exited with code {code}" + (
            f" ({self._tail[-1][:200]})" if self._tail else "")

    async def _wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.local.start_timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                if self._pump is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._pump, 2)
                raise ModelServerError(self._why_exited(self.proc.returncode))
            doc = await probe(self.root, timeout=1.0)
            if doc is not None:
                if doc.get("backend") != self.kind:
                    await self._stop_child()
                    raise ModelServerError(f"LOCAL_MODELS_PORT: port {self.local.models_port} answered as a "
                                           f"{doc.get('backend')} model server")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 0.25)
        await self._stop_child()
        raise ModelServerError(f"the {self.kind} model server did not become healthy within "
                               f"{self.local.start_timeout:g}s (LOCAL_START_TIMEOUT)")

    async def _keep_running(self) -> None:
        backoff = 1.0
        while not self._closing:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._closing:
                return
            if self._pump is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._pump, 2)
            why = self._why_exited(code)
            log.error("%s; starting it again in %.0fs", why, backoff)
            self.on_state("down", f"{self.kind} model server is down: {why}")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)
            try:
                await self._spawn()
                await self._wait_healthy()
            except ModelServerError as e:
                self.on_state("down", f"{self.kind} model server is down: {e}")
                continue
            log.info("%s model server running again on %s", self.kind, self.base_url)
            self.on_state("ok", None)
            backoff = 1.0

    async def _stop_child(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 2)
