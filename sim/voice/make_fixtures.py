"""Generate the voice sim's speech fixtures with espeak-ng and sox.

    uv run python -m sim.voice.make_fixtures            # write the missing ones
    uv run python -m sim.voice.make_fixtures --force    # regenerate all
    uv run python -m sim.voice.make_fixtures --check    # exit 1 if one is missing (no espeak needed)
    uv run python -m sim.voice.make_fixtures --prune    # also delete fixtures nothing uses

Every user turn of every `io: voice` scenario under sim/scenarios/ needs one WAV:
`sim/voice/fixtures/<voice.fixture or fixture_name(voice.say or user)>.wav`, saying
`voice.say` or else the turn's `user` text (the benchmark, sim/bench/voice_density.py,
replays these too). They are 16 kHz mono 16-bit PCM, trimmed to the speech (the end of
the file is the end of speech, which the benchmark's latency is measured from) and
normalised to -3 dBFS peak. The files are committed: CI and developers need no speech engine.

Needs the Debian packages `espeak-ng` and `sox` (apt-get install espeak-ng sox).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sim.scenario import ScenarioError, load_scenario
from sim.voice.audio import FIXTURES, INPUT_RATE
from sim.voice.spec import fixture_name

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
VOICE = "en-us"
WPM = 170

def wanted() -> dict[str, str]:
    """fixture name -> the words it says, for every voice scenario turn."""
    out: dict[str, str] = {}
    for path in sorted(SCENARIOS.glob("*.yaml")):
        if "io: voice" not in path.read_text(encoding="utf-8"):
            continue  # a text scenario: skip parsing it
        try:
            sc = load_scenario(path).scenario
        except ScenarioError as e:
            print(f"skipping {path.name}: {e}", file=sys.stderr)
            continue
        if sc.io != "voice":
            continue
        for session in sc.sessions:
            for turn in session.turns:
                v = turn.voice
                text = (v.say if v and v.say else None) or turn.user
                name = (v.audio_fixture if v and v.audio_fixture else None) or fixture_name(text)
                if out.get(name, text) != text:
                    raise SystemExit(f"{path.name}: fixture {name} would say both {out[name]!r} and {text!r}")
                out[name] = text
    return out


def synthesize(text: str, dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", VOICE, "-s", str(WPM), "-w", str(raw), text], check=True)
        subprocess.run(
            ["sox", str(raw), "-r", str(INPUT_RATE), "-c", "1", "-b", "16", str(dest),
             # trim silence at both ends, then normalise
             "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse",
             "gain", "-n", "-3"],
            check=True,
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="regenerate every fixture")
    ap.add_argument("--check", action="store_true", help="only report missing fixtures (exit 1 if any)")
    ap.add_argument("--prune", action="store_true", help="delete fixtures no scenario uses")
    args = ap.parse_args(argv)
    need = wanted()
    missing = {n: t for n, t in need.items() if args.force or not (FIXTURES / f"{n}.wav").exists()}
    if args.check:
        for n, t in sorted(missing.items()):
            print(f"missing: {n}.wav ({t!r})")
        return 1 if missing else 0
    if missing and not (shutil.which("espeak-ng") and shutil.which("sox")):
        print("espeak-ng and sox are needed: apt-get install espeak-ng sox", file=sys.stderr)
        return 2
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for n, t in sorted(missing.items()):
        synthesize(t, FIXTURES / f"{n}.wav")
        print(f"wrote {n}.wav: {t!r}")
    if args.prune:
        for f in sorted(FIXTURES.glob("*.wav")):
            if f.stem not in need:
                f.unlink()
                print(f"deleted {f.name}")
    total = sum(f.stat().st_size for f in FIXTURES.glob("*.wav"))
    print(f"{len(need)} fixture(s), {total / 1024:.0f} KiB in {FIXTURES}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
