"""Session writes from several worker processes on one store: the write-lock wait.

Run: `uv run python -m sim.bench.session_writers [--processes 2] [--sessions 50] [--store sqlite]`

With `WORKER_PROCESSES` > 1 every process's session writers commit to the same database;
on SQLite that means one file and one write lock shared by all of them. This bench runs
`--processes` spawned processes, each with its own store (as a worker process has), and
`--sessions` concurrent sessions spread over them. Each session writes what a voice call's
session writer writes, as `apply_session_writes` batches: its start, then every
`--turn-every` seconds (a caller's line and the agent's answer, a brisk pace) one batch
of the user turn, the assistant turn and the metrics/usage snapshot, then its end. The
latency of every batch is timed (the whole store call: the lock wait, the transaction,
the commit). No audio pipeline runs, so the figure is the store's, not a starved loop's.

Prints p50/p99/max per process and overall; ends with one JSON line
(`session_write_p99_ms`, ...). `--store mongo|postgres` runs the same against a real
server for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time
import uuid
from multiprocessing.connection import Connection
from typing import Any

from app.domain import SessionRecord, SessionStatus, Turn
from app.store import open_store
from app.store.base import AppendTurn, FinishSession, StartSession, UpdateSession
from sim.bench.stats import emit, percentile
from sim.bench.stores import STORES, database


async def one_session(store: Any, index: int, seconds: float, turn_every: float, lat: list[float]) -> None:
    sid = uuid.uuid4().hex
    await asyncio.sleep(turn_every * (index % 10) / 10)  # calls do not all speak at once

    async def batch(ops: list[Any]) -> None:
        t0 = time.perf_counter()
        await store.apply_session_writes(sid, ops)
        lat.append(time.perf_counter() - t0)

    await batch([StartSession(SessionRecord(session_id=sid, room=f"room-{sid}", agent_id="support-agent-v1",
                                            config_version=1, owner="bench")),
                 AppendTurn(Turn(seq=0, role="assistant", text="Hello, how can I help you today?"))])
    seq, metrics = 1, []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.sleep(turn_every)
        metrics.append({"seq": seq + 1, "user_seq": seq, "llm_ttft_ms": 310.0, "tts_ttfb_ms": 120.0,
                        "total_ms": 1200.0, "speech_ms": 2400.0})
        await batch([
            AppendTurn(Turn(seq=seq, role="user", text=f"This is what the caller said in turn {seq}, a sentence or two.")),
            AppendTurn(Turn(seq=seq + 1, role="assistant", text="Thanks, I've noted that. Is there anything else?")),
            UpdateSession({"metrics": list(metrics)}),
            UpdateSession({"usage": {"llm_input_tokens": 900 * seq, "llm_output_tokens": 40 * seq}}),
        ])
        seq += 2
    await batch([FinishSession(SessionStatus.completed, "caller hung up")])


async def process_main_async(url: str, sessions: int, seconds: float, turn_every: float, offset: int) -> dict[str, Any]:
    store = open_store(url)
    await store.start()
    lat: list[float] = []
    try:
        await asyncio.gather(*(one_session(store, offset + i, seconds, turn_every, lat) for i in range(sessions)))
    finally:
        await store.aclose()
    return {"pid": os.getpid(), "sessions": sessions, "latencies_s": lat}


def process_main(url: str, sessions: int, seconds: float, turn_every: float, offset: int, conn: Connection) -> None:
    conn.send(asyncio.run(process_main_async(url, sessions, seconds, turn_every, offset)))


def ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1000


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    async with database(args.store) as url:
        setup = open_store(url)
        await setup.start()  # schema once, before the writers race for it
        await setup.aclose()
        ctx = multiprocessing.get_context("spawn")
        share = [args.sessions // args.processes + (1 if i < args.sessions % args.processes else 0)
                 for i in range(args.processes)]
        print(f"session writes: {args.sessions} sessions over {args.processes} process(es) {share}, one batch "
              f"per session every {args.turn_every:g} s for {args.seconds:g} s, store {args.store}, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        procs, conns = [], []
        offset = 0
        for n in share:
            parent, child = ctx.Pipe(duplex=False)
            p = ctx.Process(target=process_main, args=(url, n, args.seconds, args.turn_every, offset, child))
            p.start()
            child.close()
            procs.append(p)
            conns.append(parent)
            offset += n
        results = [await asyncio.to_thread(c.recv) for c in conns]
        for p in procs:
            await asyncio.to_thread(p.join, 30)
    everything: list[float] = []
    for i, r in enumerate(results):
        lat = r["latencies_s"]
        everything += lat
        print(f"  process {i}: {r['sessions']} sessions, {len(lat)} batches, p50/p99/max "
              f"{ms(lat, 50):.1f}/{ms(lat, 99):.1f}/{max(lat) * 1000:.1f} ms", flush=True)
    print(f"  all: {len(everything)} batches ({len(everything) / args.seconds:.0f}/s), p50/p99/max "
          f"{ms(everything, 50):.1f}/{ms(everything, 99):.1f}/{max(everything) * 1000:.1f} ms, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    return {
        "store": args.store, "processes": args.processes, "sessions": args.sessions,
        "turn_every_s": args.turn_every, "batches": len(everything),
        "session_write_p50_ms": ms(everything, 50), "session_write_p99_ms": ms(everything, 99),
        "session_write_max_ms": max(everything) * 1000, "loadavg_1m": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--turn-every", type=float, default=3.0, help="seconds between a session's turn batches")
    ap.add_argument("--store", choices=STORES, default="sqlite")
    args = ap.parse_args()
    if args.processes < 1 or args.sessions < args.processes:
        ap.error("need at least one process and one session per process")
    emit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
