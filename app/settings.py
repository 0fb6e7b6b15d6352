"""Process settings, read once from the environment (and `.env` / `.env.local`).

One `Settings` object is built at start-up and passed down explicitly; nothing else
reads `os.environ`, so tests can build the whole app from a literal `Settings(...)`.
"""

from __future__ import annotations

import os
import re
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.cores import CpuPinning, usable_cores

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/app.db"
DEFAULT_REPLY_MAX_TOKENS = 250
"""The reply cap of agents that set no `llm.max_tokens` (`DEFAULT_LLM_MAX_TOKENS` changes
it): about a minute of speech, with room for a tool call's arguments."""
MIN_LIVEKIT_SECRET_BYTES = 32
"""LiveKit tokens are HMAC-SHA256 JWTs signed with LIVEKIT_API_SECRET; a key shorter than
the hash output (RFC 7518 §3.2) is guessable offline from any token a client holds."""
DEFAULT_PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"
"""`prompts/` beside the `app` package: the repository root, or /app in the image."""


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/voice-platform`, else `~/.cache/voice-platform` (the XDG default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voice-platform"


class AgentMode(str, Enum):
    dynamic = "dynamic"
    pte = "pte"


class ExecutorType(str, Enum):
    thread = "thread"
    process = "process"


class ModelPrice(BaseModel):
    """What one model costs, in US dollars; a unit left out costs nothing. The built-in
    table is `app.domain.pricing.DEFAULT_PRICES`; `PRICE_TABLE` adds or replaces models."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: float = Field(0.0, ge=0, description="Per million input (prompt) tokens.")
    cached_input_per_mtok: float | None = Field(
        None, ge=0, description="Per million cached input tokens; unset: the input price."
    )
    output_per_mtok: float = Field(0.0, ge=0, description="Per million output (completion) tokens.")
    audio_per_minute: float = Field(0.0, ge=0, description="Per minute of audio transcribed (STT) or spoken (TTS).")
    per_mchars: float = Field(0.0, ge=0, description="Per million characters synthesised (TTS).")
    as_of: date | None = Field(None, description="When these prices were taken from the provider's price list.")


PriceTable = dict[Annotated[str, StringConstraints(min_length=1, max_length=200)], ModelPrice]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=(".env", ".env.local"),
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy async URL (sqlite+aiosqlite, postgresql+asyncpg) or mongodb:// URL.",
    )
    admin_api_key: SecretStr | None = Field(None, description="Bearer key for the admin API.")
    token_api_key: SecretStr | None = Field(
        None, description="Optional separate bearer key for POST /api/v1/token."
    )
    livekit_url: str | None = Field(None, description="wss:// URL of LiveKit Cloud or server.")
    livekit_api_key: SecretStr | None = None
    livekit_api_secret: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = Field(
        None, description="Any OpenAI-compatible endpoint (Ollama, vLLM, a local fake)."
    )
    agent_mode: AgentMode = AgentMode.dynamic
    prompts_dir: Path = Field(
        DEFAULT_PROMPTS_DIR,
        description="Directory of the example agents, routes and the PTE interviewer (YAML).",
    )
    agent_name: str = Field(
        "voice-platform", description="Name the worker registers with; tokens dispatch to it."
    )
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    trace_content: bool = Field(
        False,
        description="Put conversation content (messages, tool arguments and results) on trace "
        "spans; off by default, since it may be personal data.",
    )
    trace_slow_store_write_ms: float = Field(
        100.0, ge=0,
        description="A session-record write batch gets a trace span (store.session_write) when it "
        "takes at least this long, is retried or fails; 0 traces every batch. Every batch's time "
        "is in the store_session_write_seconds histogram either way.",
    )
    dtmf_pause_s: float = Field(
        2.0, gt=0, le=30,
        description="Phone calls: keys the caller presses become one input at '#' or after this "
        "many seconds without another key.",
    )
    metrics_access: Literal["key", "open"] = Field(
        "key",
        description="GET /metrics: behind the admin key (key) or open to any caller (open: a "
        "scraper on a private network).",
    )
    log_format: Literal["auto", "text", "json"] = "auto"
    executor_type: ExecutorType = ExecutorType.thread
    worker_processes: int | None = Field(
        None,
        description="LiveKit worker processes this machine runs, each an AgentServer serving calls as "
        "threads (THREAD executor) under the same agent name; the admin API runs in the supervisor "
        "process. Unset: one per usable core (the cgroup CPU quota and CPU affinity count, not just "
        "the host's cores). At most 4 × the usable cores; 1 with EXECUTOR_TYPE=process.",
    )
    worker_cpu_pinning: CpuPinning = Field(
        "auto",
        description="Pin each worker process to one core (round-robin past the core count), so one "
        "process's stop-the-world pauses (a full garbage collection stalls every call of that "
        "process) are not stretched by another process's threads on the same core. auto: when "
        "there is more than one worker process and the cores are the machine's own (no cgroup CPU "
        "quota below them); on: whenever there is more than one; off: never.",
    )
    drain_timeout: float = Field(
        240.0, gt=0, le=244,
        description="Seconds active sessions may run on after SIGTERM. At most 244: the goodbye "
        "and shutdown steps after it need up to 56 s more, inside fly's 300 s kill_timeout.",
    )
    default_llm_model: str = "gpt-4.1-mini"
    default_llm_max_tokens: int = Field(
        DEFAULT_REPLY_MAX_TOKENS, ge=1, le=32768,
        description="The reply cap for agents that set no llm.max_tokens: about a minute of "
        "speech, with room for a tool call's arguments.",
    )
    default_stt_model: str = "gpt-4o-mini-transcribe"
    default_tts_model: str = "gpt-4o-mini-tts"
    default_tts_voice: str = "alloy"
    token_ttl_s: int = Field(3600, ge=60, le=86400)
    token_rate_per_minute: int = Field(30, ge=1)
    client_ip_header: str | None = Field(
        None, pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="Header carrying the caller's address, set by a trusted proxy in front of "
        "the app (fly.io: Fly-Client-IP). The token rate limit counts per value of it; unset, "
        "per peer address (behind a proxy: every caller shares the proxy's one limit).",
    )
    cache_poll_interval: float = Field(
        0.25, gt=0, le=5.0,
        description="Seconds between the config cache's checks of the store's change counter: "
        "how soon another process's config write reaches this one's next session (one cheap "
        "read per check).",
    )
    session_heartbeat_interval: float = Field(
        15.0, gt=0, le=300,
        description="Seconds between this process's heartbeats on the sessions it runs.",
    )
    session_stale_after: float = Field(
        60.0, gt=0, le=3600,
        description="An active session whose owner has not heartbeated for this long is marked "
        "abandoned (its process died); also how often that sweep runs. Keep it several "
        "heartbeat intervals long.",
    )
    canary_min_sessions: int = Field(
        30, ge=1, le=100_000,
        description="Finished sessions each arm of a canary needs before the rollout guard judges it.",
    )
    canary_margin: float = Field(
        0.05, ge=0, lt=1,
        description="How much worse a canary's rate may be (absolute, 0.05 = 5 points) before it counts as worse.",
    )
    canary_confidence: float = Field(
        0.95, gt=0.5, lt=1,
        description="One-sided confidence that the canary is worse by more than the margin, for all rates together.",
    )
    canary_guard_interval: float = Field(
        15.0, gt=0, le=3600,
        description="Seconds between the rollout guard's checks of running canaries (also run as sessions end).",
    )
    max_body_bytes: int = 1024 * 1024
    asset_cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Where browser packages fetched from the npm registry (the console's LiveKit "
        "client, Swagger UI) are kept; reused offline once filled.",
    )
    npm_registry: str | None = Field(
        None, pattern=r"^https?://\S+$",
        description="An npm registry mirror to fetch them from instead of registry.npmjs.org "
        "(the lockfile's integrity hashes still apply).",
    )

    analysis_model: str | None = Field(
        None, max_length=200,
        description="Model for post-call analysis when an agent's analysis settings name none "
        "(default: the agent's own model).",
    )
    analysis_concurrency: int = Field(2, ge=1, le=64, description="Analyses one process runs at once.")
    analysis_poll_interval: float = Field(
        5.0, gt=0, le=300,
        description="Seconds between looks for pending analyses left by other processes or a restart "
        "(this process's own sessions are analysed as soon as they end).",
    )
    price_table: PriceTable = Field(
        default_factory=dict,
        description='JSON: model name -> prices (USD), added to or replacing the built-in table, e.g. '
        '{"gpt-4.1-mini": {"input_per_mtok": 0.4, "cached_input_per_mtok": 0.1, "output_per_mtok": 1.6, '
        '"as_of": "2025-08-01"}}.',
    )
    webhook_url_policy: Literal["auto", "public", "any"] = Field(
        "auto",
        description="Where webhook URLs may point. public: https only, and never to loopback, private, "
        "link-local or metadata addresses (checked at create and at every delivery, on the address "
        "connected to); any: anything http(s); auto: public in `start`, any in `dev`.",
    )
    webhook_allow_loopback: bool = Field(
        False, description="Under the public policy, still allow loopback receivers (http too): tests, "
        "a local relay.")
    webhook_retry_window: float = Field(
        86400.0, gt=0, le=30 * 86400, description="Seconds a delivery is retried before it is failed.")
    webhook_retry_base_delay: float = Field(
        5.0, gt=0, le=3600, description="First retry after about this many seconds; doubles each attempt.")
    webhook_retry_max_delay: float = Field(
        3600.0, gt=0, le=86400, description="Cap on the pause between two attempts.")
    webhook_connect_timeout: float = Field(5.0, gt=0, le=60)
    webhook_timeout: float = Field(
        15.0, gt=0, le=120, description="Total seconds for one attempt: connect, send, and read the answer.")
    webhook_concurrency: int = Field(
        4, ge=1, le=64, description="Attempts in flight per endpoint in one process.")
    webhook_max_response_bytes: int = Field(
        65536, ge=0, le=16 * 1024 * 1024, description="Bytes of a receiver's answer read (the rest is dropped).")
    webhook_poll_interval: float = Field(
        0.5, gt=0, le=60, description="Seconds between a dispatcher's checks for due deliveries "
        "(this process's own events wake it at once).")

    outbound_trunk_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="LiveKit SIP outbound trunk (ST_...) that outbound calls and campaigns dial through "
        "unless a request names one.")
    call_deny_list: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Numbers never dialled, comma-separated: E.164 numbers, or prefixes ending in * (+1900*).")
    call_ring_timeout: float = Field(
        30.0, ge=5, le=120, description="Seconds an outbound call rings before it counts as no answer.")
    call_rate_per_minute: int = Field(
        10, ge=1, le=1000000, description="POST /calls per API key per minute (429 with Retry-After above).")
    campaign_max_contacts: int = Field(
        10000, ge=1, le=1000000, description="Contacts one campaign may hold.")
    campaign_poll_interval: float = Field(
        2.0, gt=0, le=60, description="Seconds between a campaign runner's looks for due contacts.")

    @field_validator("call_deny_list", mode="before")
    @classmethod
    def _deny_list(cls, v: object) -> object:
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip()]
        if isinstance(v, list):
            for entry in v:
                if not isinstance(entry, str) or not re.fullmatch(r"\+[0-9]{1,15}\*?", entry):
                    raise ValueError(f"CALL_DENY_LIST entry {entry!r} is not an E.164 number or a +prefix*")
        return v

    def call_denied(self, number: str) -> bool:
        return any(number.startswith(e[:-1]) if e.endswith("*") else number == e for e in self.call_deny_list)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("admin_api_key", "token_api_key", "openai_api_key", "npm_registry", "analysis_model", mode="before")
    @classmethod
    def _blank_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("worker_processes")
    @classmethod
    def _worker_processes_in_range(cls, v: int | None) -> int | None:
        if v is None:
            return v
        cores = usable_cores()
        if v < 1:
            raise ValueError(f"must be at least 1 (unset: one per usable core, {cores} here)")
        if v > 4 * cores:
            raise ValueError(
                f"{v} is more than 4 × the {cores} usable core(s) of this machine (at most {4 * cores}); "
                "each process costs its own start-up memory"
            )
        return v

    @model_validator(mode="after")
    def _one_process_worker_with_process_executor(self) -> Settings:
        if self.executor_type == ExecutorType.process and (self.worker_processes or 1) > 1:
            raise ValueError(
                "WORKER_PROCESSES must be 1 (or unset) with EXECUTOR_TYPE=process: that executor "
                "already runs every call in a process of its own"
            )
        return self

    @property
    def worker_process_count(self) -> int:
        """How many LiveKit worker processes the supervisor runs (`WORKER_PROCESSES`, resolved)."""
        if self.worker_processes is not None:
            return self.worker_processes
        return 1 if self.executor_type == ExecutorType.process else usable_cores()

    @model_validator(mode="after")
    def _stale_outlasts_heartbeats(self) -> Settings:
        # A live owner must get at least two heartbeats in before its sessions look stale.
        if self.session_stale_after < 2 * self.session_heartbeat_interval:
            raise ValueError("SESSION_STALE_AFTER must be at least twice SESSION_HEARTBEAT_INTERVAL")
        return self

    @property
    def webhooks_public_only(self) -> bool:
        """The webhook URL policy in force (`auto` is resolved by `python -m app dev|start`;
        left unresolved, the strict one)."""
        return self.webhook_url_policy != "any"

    @property
    def is_mongo(self) -> bool:
        return self.database_url.startswith(("mongodb://", "mongodb+srv://"))

    def missing_livekit(self) -> list[str]:
        """The LiveKit settings the worker and `POST /api/v1/token` need that are unset."""
        given = {
            "LIVEKIT_URL": self.livekit_url,
            "LIVEKIT_API_KEY": self.livekit_api_key,
            "LIVEKIT_API_SECRET": self.livekit_api_secret,
        }
        return [name for name, value in given.items() if not value]

    def weak_livekit_secret(self) -> str | None:
        """Why LIVEKIT_API_SECRET is too short to sign tokens with, or None if it is not."""
        if self.livekit_api_secret is None:
            return None
        size = len(self.livekit_api_secret.get_secret_value().encode())
        if size >= MIN_LIVEKIT_SECRET_BYTES:
            return None
        return (
            f"LIVEKIT_API_SECRET is {size} bytes long; tokens signed with it (HMAC-SHA256) need "
            f"at least {MIN_LIVEKIT_SECRET_BYTES}"
        )

    def missing_for_production(self) -> list[str]:
        """Settings `start` refuses to run without, one name per missing item."""
        missing: list[str] = []
        if self.admin_api_key is None:
            missing.append("ADMIN_API_KEY")
        missing += self.missing_livekit()
        if "database_url" not in self.model_fields_set:
            # The dev default (./data/app.db) is no place for production data: make the
            # operator say where it lives (the image sets /data, fly mounts a volume there).
            missing.append("DATABASE_URL")
        return missing
