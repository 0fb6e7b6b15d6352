"""The local model stack (`python -m app models serve`, the `local` extra) on this machine.

Run: `uv run --extra local python -m sim.bench.local_models [--turns 3] [--sizes 1,4]`

Starts one local model server (SmolLM2-135M via llama.cpp, Whisper base, Piper joe) as
the tests do (`sim.local_models`), then measures over HTTP with the OpenAI SDK:

- LLM: time to first token and generation speed (completion tokens / seconds after the
  first token) of streamed replies to a short support prompt, one at a time and 4 at once
  (llama.cpp decodes parallel slots together);
- tool choice: with `tool_choice="auto"` and four record/end tools offered (the server
  turns them into a grammar), how many of a set of caller lines that each call for one
  tool got a tool call at all, how many got the right one, and whether every call's
  arguments validated against the tool's schema (they must: the grammar);
- STT: real-time factor (processing seconds / audio seconds) of Whisper base on every
  committed voice fixture; TTS: real-time factor of Piper on a few reply sentences;
- a voice turn end to end at 1 and 4 concurrent sessions: the seeded support agent in a
  LiveKit `AgentSession` (as `sim.bench.voice_density` runs it: silero VAD, the OpenAI
  plugins, the production session start) with LLM, STT and TTS all on the local server;
  latency = end of the caller's speech (last fixture frame released) -> the agent's
  first audio frame at the speaker. It includes the VAD's 0.55 s end-of-speech silence.

The machine is shared: the load average is printed with the figures. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import statistics
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import openai
import psutil

from sim.bench.stats import emit, percentile
from sim.local_models import local_extra_installed, local_model_server
from sim.voice.audio import FIXTURES

SUPPORT = "You are Acme's friendly phone support assistant. Answer in one or two short sentences."
PROMPTS = [
    "Hello, my parcel arrived damaged. What can I do?",
    "Hi, I was charged twice for my order last week.",
    "Can you tell me when my order will arrive?",
    "I need to change the delivery address for my order.",
]
TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "record_order_id", "description": "Record the caller's order number.",
        "parameters": {"type": "object", "properties": {"value": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{6,8}$"}},
                       "required": ["value"]}}},
    {"type": "function", "function": {
        "name": "record_caller_name", "description": "Record the caller's full name.",
        "parameters": {"type": "object", "properties": {"value": {"type": "string", "minLength": 1, "maxLength": 80}},
                       "required": ["value"]}}},
    {"type": "function", "function": {
        "name": "record_urgency", "description": "Record how urgent the caller's problem is.",
        "parameters": {"type": "object", "properties": {"value": {"enum": ["low", "medium", "high", "critical"]}},
                       "required": ["value"]}}},
    {"type": "function", "function": {
        "name": "end_session", "description": "End the call when the caller says goodbye.",
        "parameters": {"type": "object", "properties": {"reason": {"type": "string", "maxLength": 120}},
                       "required": ["reason"]}}},
]
TOOL_LINES = [
    ("My order number is AB123456.", "record_order_id"),
    ("The order is CD7654321.", "record_order_id"),
    ("My name is Grace Hopper.", "record_caller_name"),
    ("This is Alan Turing speaking.", "record_caller_name"),
    ("It's very urgent, I need it tomorrow.", "record_urgency"),
    ("No rush at all, whenever you can.", "record_urgency"),
    ("Thanks, that's all. Goodbye!", "end_session"),
    ("That's everything, bye.", "end_session"),
]
TOOL_SYSTEM = ("You are Acme's phone support assistant. Record every detail the caller gives with the matching "
               "tool as soon as they say it, and end the call when they say goodbye.")
TTS_LINES = [
    "Thanks for calling Acme support. How can I help you today?",
    "I'm sorry to hear that. May I have your order number, please?",
    "Got it. The support team will follow up within one business day.",
]


def sdk(base_url: str) -> openai.AsyncClient:
    return openai.AsyncClient(api_key="sk-local", base_url=base_url, max_retries=0,
                              http_client=httpx2.AsyncClient(timeout=httpx2.Timeout(300, connect=5)))


async def one_reply(c: openai.AsyncClient, prompt: str, max_tokens: int) -> dict[str, float]:
    t0 = time.perf_counter()
    first = None
    tokens = 0
    stream = await c.chat.completions.create(
        model="local", stream=True, max_tokens=max_tokens, stream_options={"include_usage": True},
        messages=[{"role": "system", "content": SUPPORT}, {"role": "user", "content": prompt}])
    async for ch in stream:
        if first is None and ch.choices and ch.choices[0].delta.content:
            first = time.perf_counter()
        if ch.usage is not None:
            tokens = ch.usage.completion_tokens
    end = time.perf_counter()
    first = first or end
    return {"ttft_s": first - t0, "tokens": tokens, "decode_s": end - first}


async def bench_llm(base_url: str, max_tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with sdk(base_url) as c:
        await one_reply(c, PROMPTS[0], 8)  # warm-up: the system prompt is read once per slot
        for n in (1, 4):
            runs: list[dict[str, float]] = []
            t0 = time.perf_counter()
            # a new caller line each time (the reply is not cached), the same system prompt
            asked = [f"{p} This is call {n}{i}." for i, p in enumerate(PROMPTS)]
            if n == 1:
                for p in asked:
                    runs.append(await one_reply(c, p, max_tokens))
            else:
                runs = list(await asyncio.gather(*(one_reply(c, p, max_tokens) for p in asked)))
            wall = time.perf_counter() - t0
            tokens = sum(r["tokens"] for r in runs)
            per_stream = [r["tokens"] / r["decode_s"] for r in runs if r["decode_s"] > 0 and r["tokens"] > 1]
            out[f"llm_c{n}_ttft_p50_ms"] = statistics.median(r["ttft_s"] for r in runs) * 1000
            out[f"llm_c{n}_tokens_per_s_per_stream"] = statistics.median(per_stream) if per_stream else 0.0
            out[f"llm_c{n}_tokens_per_s_total"] = tokens / wall
            print(f"  LLM, {n} at once: TTFT p50 {out[f'llm_c{n}_ttft_p50_ms']:.0f} ms, "
                  f"{out[f'llm_c{n}_tokens_per_s_per_stream']:.1f} tokens/s per stream, "
                  f"{out[f'llm_c{n}_tokens_per_s_total']:.1f} tokens/s in all ({tokens} tokens, {wall:.1f} s)",
                  flush=True)
    return out


async def bench_tool_choice(base_url: str) -> dict[str, Any]:
    picked = right = valid = 0
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    async with sdk(base_url) as c:
        for line, want in TOOL_LINES:
            r = await c.chat.completions.create(
                model="local", max_tokens=80, tools=TOOLS, tool_choice="auto",  # type: ignore[arg-type]
                messages=[{"role": "system", "content": TOOL_SYSTEM}, {"role": "user", "content": line}])
            calls = r.choices[0].message.tool_calls or []
            got = [call.function.name for call in calls]  # type: ignore[union-attr]
            if calls:
                picked += 1
                right += want in got
                ok = True
                for call in calls:
                    try:
                        jsonschema.validate(json.loads(call.function.arguments),  # type: ignore[union-attr]
                                            schemas[call.function.name])  # type: ignore[union-attr]
                    except (jsonschema.ValidationError, ValueError, KeyError):
                        ok = False
                valid += ok
            print(f"    {line!r}: {', '.join(got) or 'replied: ' + repr((r.choices[0].message.content or '')[:60])}",
                  flush=True)
    n = len(TOOL_LINES)
    print(f"  tool choice (auto): a tool picked for {picked}/{n} lines that call for one, the right one {right}/{n}; "
          f"arguments valid in {valid}/{picked} calls", flush=True)
    return {"tool_picked": picked, "tool_right": right, "tool_lines": n, "tool_args_valid": valid}


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as w:
        return w.getnframes() / w.getframerate()


async def bench_speech(root: str) -> dict[str, Any]:
    stt_proc = stt_audio = tts_proc = tts_audio = 0.0
    async with httpx2.AsyncClient(timeout=300) as c:
        fixtures = sorted(FIXTURES.glob("*.wav"))
        await c.post(f"{root}/v1/audio/transcriptions", files={"file": ("w.wav", fixtures[0].read_bytes())})
        for f in fixtures:
            data = f.read_bytes()
            t0 = time.perf_counter()
            r = await c.post(f"{root}/v1/audio/transcriptions", files={"file": (f.name, data)},
                             data={"language": "en"})
            stt_proc += time.perf_counter() - t0
            r.raise_for_status()
            stt_audio += wav_seconds(data)
        await c.post(f"{root}/v1/audio/speech", json={"input": "Warm up.", "response_format": "wav"})
        for line in TTS_LINES:
            t0 = time.perf_counter()
            r = await c.post(f"{root}/v1/audio/speech", json={"input": line, "response_format": "wav"})
            tts_proc += time.perf_counter() - t0
            r.raise_for_status()
            tts_audio += wav_seconds(r.content)
    out = {"stt_rtf": stt_proc / stt_audio, "stt_audio_s": stt_audio, "tts_rtf": tts_proc / tts_audio,
           "tts_audio_s": tts_audio}
    print(f"  STT (Whisper base): real-time factor {out['stt_rtf']:.2f} over {len(fixtures)} fixtures "
          f"({stt_audio:.1f} s of audio); TTS (Piper): real-time factor {out['tts_rtf']:.2f} "
          f"({tts_audio:.1f} s of speech)", flush=True)
    return out


async def voice_session(services: Any, index: int, turns: int, base_url: str) -> dict[str, Any]:
    from livekit.agents import AgentSession

    from app.domain.routing import MetadataSource
    from app.worker.session_start import prepare_session
    from sim.bench.voice_density import _first_audio_after, _wait_quiet, utterances
    from sim.voice.clock import SimClock
    from sim.voice.io import Mic, Segment, SimAudioInput, SimAudioOutput
    from sim.voice.runner import voice_session_kwargs
    from sim.voice.spec import VoiceOptions

    lines = [u for u in utterances() if "goodbye" not in u[0] and "that_s_all" not in u[0]]
    llm_client, audio_client = sdk(base_url), sdk(base_url)
    clock = SimClock(1.0)
    mic_in, speaker = SimAudioInput(), SimAudioOutput(clock, keep_audio=False)
    mic = Mic(clock, mic_in, frame_ms=50, continuous=True)
    latencies: list[float] = []
    missed = 0
    error = None
    meta = json.dumps({"purpose": "support", "user_id": f"bench-local-{index}"})
    prepared = await prepare_session(services, [MetadataSource("job", meta)], room=f"bench-local-{index}",
                                     audio=True, llm_client=llm_client, stt_client=audio_client,
                                     tts_client=audio_client)
    session = AgentSession(**voice_session_kwargs(services.load_vad(), VoiceOptions(speed=1.0)))
    try:
        async with session:
            session.input.audio, session.output.audio = mic_in, speaker
            prepared.manager.attach(session)
            mic.start()
            await session.start(prepared.agent)
            await _wait_quiet(speaker, first=0, timeout=120)  # the greeting
            for k in range(turns):
                await asyncio.sleep(0.6)
                label, pcm = lines[(index + k * 3) % len(lines)]
                seen = len(speaker.segments)
                played = (await mic.play([Segment.speech(pcm, label)]))[0]
                seg = await _first_audio_after(speaker, seen, timeout=120)
                if seg is None:
                    missed += 1
                    continue
                latencies.append(seg.started_wall - played.end_wall)
                await _wait_quiet(speaker, first=seg.index, timeout=120)
    except Exception as e:  # a broken session is reported, not fatal to the run
        error = f"{type(e).__name__}: {e}"
    finally:
        await mic.aclose()
        await speaker.aclose()
        await prepared.aclose()
        await llm_client.close()
        await audio_client.close()
    return {"latencies": latencies, "missed": missed, "error": error}


async def bench_voice(base_url: str, sizes: list[int], turns: int) -> dict[str, Any]:
    from app.seed import seed
    from app.settings import Settings
    from app.store import open_store
    from app.worker.services import WorkerServices

    tmp = Path(tempfile.mkdtemp(prefix="bench-local-"))
    url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    store = open_store(url)
    await store.start()
    await seed(store)
    settings = Settings(_env_file=None, database_url=url, cache_poll_interval=1.0,  # type: ignore[call-arg]
                        openai_base_url=base_url)
    services = WorkerServices(settings, store)
    await services.start()
    services.load_vad()
    out: dict[str, Any] = {}
    try:
        await voice_session(services, 0, 1, base_url)  # warm-up: the agent's prompt into the cache
        for n in sizes:
            results = await asyncio.gather(*(voice_session(services, i, turns, base_url) for i in range(n)))
            lat = [x for r in results for x in r["latencies"]]
            missed = sum(r["missed"] for r in results)
            errors = [r["error"] for r in results if r["error"]]
            p50 = percentile(lat, 50) * 1000 if lat else None
            p90 = percentile(lat, 90) * 1000 if lat else None
            out[f"voice_n{n}_turn_p50_ms"] = p50
            out[f"voice_n{n}_turn_p90_ms"] = p90
            out[f"voice_n{n}_turns"] = len(lat)
            out[f"voice_n{n}_missed"] = missed
            print(f"  voice turn, {n} session(s): speech end -> first reply audio p50 "
                  f"{p50 if p50 is None else round(p50)} ms, p90 {p90 if p90 is None else round(p90)} ms "
                  f"({len(lat)} turns, {missed} unanswered{', errors: ' + '; '.join(errors) if errors else ''}); "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        await services.aclose()
        await store.aclose()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    server = local_model_server()
    started = time.perf_counter() - t0
    print(f"local models: server up in {started:.1f} s; {psutil.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
          flush=True)
    figures: dict[str, Any] = {"server_start_s": started}
    figures |= await bench_llm(server.base_url, args.max_tokens)
    figures |= await bench_tool_choice(server.base_url)
    figures |= await bench_speech(server.root)
    figures |= await bench_voice(server.base_url, [int(s) for s in args.sizes.split(",")], args.turns)
    figures["cpus"] = psutil.cpu_count()
    figures["loadavg_1m"] = os.getloadavg()[0]
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,4", help="concurrent voice sessions per measurement")
    ap.add_argument("--turns", type=int, default=3, help="caller turns per voice session")
    ap.add_argument("--max-tokens", type=int, default=64, help="reply length for the LLM figures")
    args = ap.parse_args()
    if not local_extra_installed():
        raise SystemExit("needs the `local` extra: uv sync --extra local")
    emit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
