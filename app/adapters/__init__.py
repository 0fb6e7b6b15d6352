"""Adaptations of third-party library internals, one module per library.

Each module names the library version it was written against and checks the
installed one in its `install()`; on a mismatch it leaves the library's own code path
in place and logs one warning. Nothing is patched or enabled on import:
`install_adapters()` runs once at process start (supervisor, `chat`, the sim).

- `openai_sdk`: the OpenAI SDK's chat-completions body transform, skipped where it is
  the identity;
- `silero`: silero's VAD stream run inline, one per session (`SessionVAD`);
- `livekit_agents`: `stt.StreamAdapter` segmenting on that one VAD stream
  (`SegmentingSTT`); no chat-context JSON for a trace span whose PII filter would drop it;
  the PII filter's key test answered once per key; LiveKit's tracer starting lean spans
  through direct calls, its PII filter applied to them as their batch is encoded; an LLM
  request's first attempt given a span of its own only when it fails; the dataclass
  LiveKit defines inside its per-reply function made once per process.
- `opentelemetry_sdk`: a span's scalar attribute stored without the library's two locks
  and re-check where they cannot change the outcome; lean spans (plain maps, one context
  manager object, filtered and encoded on the export thread) where every processor of the
  provider is known.
- `otlp_exporter`: the OTLP span encoder writing the request's protobuf bytes itself (the
  library's bytes, what repeats encoded once), a lean span's filters applied as its batch
  is encoded.
"""

from __future__ import annotations


def install_adapters() -> dict[str, bool]:
    """Install every adapter (idempotent); which ones are active, by module name.

    Call it on the main thread: the silero adapter imports the silero plugin, and
    LiveKit plugins register themselves on the main thread only."""
    from app.adapters import livekit_agents, openai_sdk, opentelemetry_sdk, otlp_exporter, silero

    # the SDK's and the exporter's first: LiveKit's tracer is made lean as livekit_agents installs
    return {
        openai_sdk.__name__: openai_sdk.install(),
        silero.__name__: silero.install(),
        opentelemetry_sdk.__name__: opentelemetry_sdk.install(),
        otlp_exporter.__name__: otlp_exporter.install(),
        livekit_agents.__name__: livekit_agents.install(),
    }
