"""Session turns are durable one by one: a SIGKILLed writer loses at most the turn in flight.

A child process opens the store from the URL alone, starts a session and appends turns,
printing each seq only after `append_turn` returned. The parent reads some of those
lines, kills the child with SIGKILL (no cleanup, no `aclose`), then opens the same
database with a fresh store and checks every reported turn is there.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

from app.domain import SessionStatus

REPO_ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from app.domain import SessionRecord, Turn
    from app.store import open_store

    async def main(url: str, n: int) -> None:
        store = open_store(url)
        await store.start()
        await store.start_session(SessionRecord(session_id="crash-1", room="r", agent_id="agent-a"))
        print("ready", flush=True)
        for seq in range(n):
            role = "user" if seq % 2 else "assistant"
            await store.append_turn("crash-1", Turn(seq=seq, role=role, text=f"turn {seq} " + "x" * 200))
            print(seq, flush=True)
        await asyncio.sleep(3600)  # never closes the store: only SIGKILL ends this

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)

N_TURNS = 400
READ_BEFORE_KILL = 25


async def test_turns_reported_before_sigkill_survive(store_target):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        store_target.url,
        str(N_TURNS),
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    reported: list[int] = []
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        if line.strip() != b"ready":
            err = await asyncio.wait_for(proc.stderr.read(), timeout=10)
            raise AssertionError(f"child failed to start: {line!r} {err.decode(errors='replace')}")
        while len(reported) < READ_BEFORE_KILL:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            assert line, (await proc.stderr.read()).decode(errors="replace")
            reported.append(int(line))
        # mid-stream: the child is still appending while it dies
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        rc = await asyncio.wait_for(proc.wait(), timeout=30)
    assert rc == -signal.SIGKILL

    # everything the child printed before it died was acknowledged by append_turn
    rest = await proc.stdout.read()
    reported += [int(x) for x in rest.split()]
    assert reported == list(range(len(reported)))
    assert len(reported) >= READ_BEFORE_KILL

    fresh = store_target.new_store()
    await fresh.start()
    try:
        rec = await fresh.get_session("crash-1")
        seqs = [t.seq for t in rec.turns]
        assert seqs == list(range(len(seqs))), "turns must be contiguous from 0"
        # every acknowledged turn is there; at most the one in flight may also have landed
        assert len(reported) <= len(seqs) <= len(reported) + 1
        for t in rec.turns:
            assert t.text == f"turn {t.seq} " + "x" * 200
        assert rec.status == SessionStatus.active

        # start-up recovery of the dead process's session
        assert await fresh.abandon_active_sessions("worker crashed") == 1
        assert (await fresh.get_session("crash-1")).status == SessionStatus.abandoned

        # the store is writable again after the crash
        await fresh.append_turn("crash-1", rec.turns[-1].model_copy(update={"seq": len(seqs)}))
        assert len((await fresh.get_session("crash-1")).turns) == len(seqs) + 1
    finally:
        await fresh.aclose()
