"""Model servers on this machine: real local models, or a scripted demo model.

`python -m app models serve` runs one loopback, OpenAI-compatible server
(`/v1/chat/completions`, `/v1/audio/transcriptions`, `/v1/audio/speech`, `/health`):

- backed by real models (the `local` extra: llama.cpp via xllamacpp, faster-whisper,
  Piper; files from PyPI packages or the `LOCAL_*` paths): `locate`, `llm`,
  `toolcalls` (tool calls for models without them: a JSON-schema grammar), `stt`,
  `tts`, `workers` (speech models in child processes), `backend`;
- or, with `--demo`, by a scripted caller-support conversation (`demo`): an offline,
  zero-download way to try an agent.

`server` is the HTTP layer, `wire` the OpenAI format, `cli` the command, and `sidecar`
the one mechanism by which `dev --local-models` / `dev --demo` (and `chat`) start a
model server beside the platform and point the default providers at it.
"""
