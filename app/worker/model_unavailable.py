"""When a model is unavailable: apologise, record, end. The one place that decides it.

"Unavailable" means LiveKit reported an unrecoverable error from one of the session's
models: an `AgentSession` `error` event whose `ErrorEvent.error` is an `LLMError`
(also a realtime model's), `STTError` or `TTSError` with `recoverable=False`. LiveKit
emits that only once the model has failed for good: after its own retries
(`conn_options.max_retry`, with backoff), at once for an answer it will not retry
(401, 400), and — with a `FallbackAdapter` (issue 20) — once every model of the chain
has failed. Whatever the model, the session then:

1. is recorded as failed: status `failed`, end reason `llm_unavailable` (or
   `stt_unavailable` / `tts_unavailable`), `error` a one-line description of the failure
   with configured secrets and key-like strings masked; a model that answered earlier
   in the session changes nothing (the call was cut by the failure);
2. apologises, when a caller listens (the session has an audio output): `APOLOGY`,
   played from a clip bundled with the app, never synthesised, because the provider
   that failed usually serves the TTS too (same key, same endpoint) and the caller
   must never be left in silence; not interruptible, and added to the transcript.
   A text session's front end says it itself (`chat` prints one error line);
3. ends: the `AgentSession` is closed, which ends the LiveKit job (`entrypoint`).

LiveKit's own default is to carry on, silently, until `max_unrecoverable_errors` (3)
more consecutive failures: a caller would sit through four dead turns. Also here:
`missing_llm_endpoint`, the configuration under which the model cannot even be asked
(no key and no base URL), which `chat` refuses up front and `dev` warns about.

The clip (16 kHz mono, 16-bit) was made with espeak-ng and sox:

    espeak-ng -v en-us -s 165 -w raw.wav "<APOLOGY>"
    sox raw.wav -r 16000 -b 16 -c 1 app/worker/apology.wav \\
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse norm -3
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import wave
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from livekit import rtc

from app.domain import AgentConfig, SessionStatus
from app.logging_setup import secret_values
from app.settings import Settings

if TYPE_CHECKING:
    from livekit.agents import AgentSession, ErrorEvent

    from app.worker.sessions import SessionManager

log = logging.getLogger(__name__)

LLM_UNAVAILABLE = "llm_unavailable"
STT_UNAVAILABLE = "stt_unavailable"
TTS_UNAVAILABLE = "tts_unavailable"
REASONS = {
    "llm_error": LLM_UNAVAILABLE,
    "realtime_model_error": LLM_UNAVAILABLE,
    "stt_error": STT_UNAVAILABLE,
    "tts_error": TTS_UNAVAILABLE,
}
"""`LLMError.type` (and STT/TTS/realtime) -> the session's end reason."""

APOLOGY = (
    "I'm sorry, something went wrong on our side and I can't continue right now. "
    "Please try again in a few minutes. Goodbye."
)
APOLOGY_CLIP = Path(__file__).with_name("apology.wav")
"""`APOLOGY`, spoken (see the module docstring for how it was made)."""

INTERRUPT_TIMEOUT = 2.0
"""Stop whatever the agent is saying or generating before apologising."""
APOLOGY_TIMEOUT = 15.0
"""The clip plays ~7.5 s; past this the session is closed anyway."""
CLOSE_TIMEOUT = 10.0
FRAME_MS = 20
MAX_ERROR_CHARS = 500

_KEY_LIKE = re.compile(r"(\bsk-|\bBearer\s+)[A-Za-z0-9._*~+/=-]{4,}", re.IGNORECASE)


@dataclass(frozen=True)
class Unavailable:
    """Why the session ended: its end reason and the recorded error text."""

    reason: str
    error: str

    @property
    def model(self) -> str:
        return self.reason.removesuffix("_unavailable").upper()


def describe_error(error: BaseException | str, secrets: Iterable[str] = ()) -> str:
    """One line, safe to store and show: the error's type and message with every
    configured secret and anything key-like (`sk-...`, `Bearer ...`) masked."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    for secret in sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _KEY_LIKE.sub(lambda m: f"{m.group(1)}***", text)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def missing_llm_endpoint(settings: Settings, config: AgentConfig | None = None) -> str | None:
    """Why the agent's model cannot be asked at all, or None: without OPENAI_API_KEY and
    without a base URL (OPENAI_BASE_URL, or a base URL of the agent's own: `llm.base_url`
    or any `llm.fallbacks[].base_url`, which the chain reaches when OpenAI refuses the
    keyless request) requests would go to OpenAI with no key."""
    if settings.openai_api_key is not None or settings.openai_base_url:
        return None
    if config is not None and (config.llm.base_url or any(f.base_url for f in config.llm.fallbacks)):
        return None
    whose = f"agent {config.agent_id!r} has no llm.base_url and " if config is not None else ""
    return (
        f"no model endpoint: {whose}neither OPENAI_API_KEY nor OPENAI_BASE_URL is set "
        "(set OPENAI_API_KEY for OpenAI, or OPENAI_BASE_URL for an OpenAI-compatible server)"
    )


_clip: tuple[int, bytes] | None = None


def _read_clip() -> tuple[int, bytes]:
    with wave.open(str(APOLOGY_CLIP), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{APOLOGY_CLIP.name}: expected 16-bit mono PCM")
        return w.getframerate(), w.readframes(w.getnframes())


async def apology_frames() -> AsyncIterator[rtc.AudioFrame]:
    """The apology clip as 20 ms frames (read once per process, off the event loop)."""
    global _clip
    if _clip is None:
        _clip = await asyncio.to_thread(_read_clip)
    rate, pcm = _clip
    step = rate * FRAME_MS // 1000 * 2
    for start in range(0, len(pcm), step):
        chunk = pcm[start : start + step]
        yield rtc.AudioFrame(chunk, rate, 1, len(chunk) // 2)


class ModelUnavailable:
    """Watches one session for an unavailable model and then apologises, records and
    ends it (see the module docstring). `outcome` is set from the moment it decided;
    `wait()` returns once the session has been ended."""

    def __init__(self, session: AgentSession[Any], recorder: SessionManager, *, secrets: Iterable[str] = ()) -> None:
        self._session = session
        self._recorder = recorder
        self._secrets = tuple(secrets)
        self.outcome: Unavailable | None = None
        self._task: asyncio.Task[None] | None = None
        self.apologised = False

    @classmethod
    def attach(cls, session: AgentSession[Any], recorder: SessionManager, settings: Settings) -> ModelUnavailable:
        guard = cls(session, recorder, secrets=secret_values(settings))
        session.on("error", guard._on_error)
        return guard

    def _on_error(self, ev: ErrorEvent) -> None:
        error = ev.error
        reason = REASONS.get(getattr(error, "type", ""))
        if reason is None or getattr(error, "recoverable", True):
            return  # LiveKit retries it, or not a model's error
        cause: BaseException = getattr(error, "error", None) or RuntimeError(str(error))
        log.debug("session %s: %s", self._recorder.record.session_id, reason, exc_info=cause)
        self.trigger(reason, cause)

    def trigger(self, reason: str, error: BaseException | str) -> None:
        """Decide that the session's model is unavailable (once; later calls are ignored)."""
        if self.outcome is not None:
            return
        self.outcome = Unavailable(reason, describe_error(error, self._secrets))
        # First, whatever happens next: the record says why the session ended.
        self._recorder.finish(SessionStatus.failed, reason, self.outcome.error)
        log.warning(
            "session %s: %s is unavailable (%s); apologising and ending the session",
            self._recorder.record.session_id, self.outcome.model, self.outcome.error,
        )
        self._task = asyncio.get_running_loop().create_task(self._end(), name="model-unavailable")

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _end(self) -> None:
        session, sid = self._session, self._recorder.record.session_id
        if session.output.audio is not None:
            try:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(session.interrupt(force=True), INTERRUPT_TIMEOUT)
                handle = session.say(APOLOGY, audio=apology_frames(), allow_interruptions=False)
                await asyncio.wait_for(handle.wait_for_playout(), APOLOGY_TIMEOUT)
                self.apologised = True
            except Exception as e:  # closing already, or the audio output failed
                log.warning("session %s: apology not played (%s)", sid, e or type(e).__name__)
        try:
            await asyncio.wait_for(session.aclose(), CLOSE_TIMEOUT)
        except Exception as e:
            log.warning("session %s: close failed (%s)", sid, e or type(e).__name__)
