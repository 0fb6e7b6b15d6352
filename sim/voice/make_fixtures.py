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

Needs the Debian packages `espeak-ng` and `sox` (apt-get install espeak-ng sox); turns
with `voice.speaker: piper` are spoken by the `local` extra's Piper voice instead.
"""

from __future__ import annotations

import argparse
import importlib.util
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

def wanted() -> dict[str, tuple[str, str]]:
    """fixture name -> (the words it says, who says them), for every voice scenario turn."""
    out: dict[str, tuple[str, str]] = {}
    for path in sorted(SCENARIOS.rglob("*.yaml")):
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
                speaker = v.speaker if v else "espeak"
                name = (v.audio_fixture if v and v.audio_fixture else None) or fixture_name(text, speaker)
                if out.get(name, (text, speaker)) != (text, speaker):
                    raise SystemExit(f"{path.name}: fixture {name} would say both {out[name]!r} and {text!r}")
                out[name] = (text, speaker)
    return out


def synthesize(text: str, dest: Path, speaker: str = "espeak") -> None:
    if speaker == "piper":
        synthesize_piper(text, dest)
        return
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


def synthesize_piper(text: str, dest: Path) -> None:
    """The `local` extra's Piper voice, in process: resampled to 16 kHz, trimmed to the
    speech and normalised like the espeak-ng fixtures (no sox needed)."""
    import numpy as np

    from app.localmodels.locate import locate_tts
    from app.localmodels.settings import LocalModelSettings
    from app.localmodels.tts import load_piper, resample
    from sim.voice.audio import wav_bytes

    voice = load_piper(locate_tts(LocalModelSettings()))
    pcm = np.concatenate([c.audio_int16_array for c in voice.synthesize(text)])
    pcm = resample(pcm, voice.config.sample_rate, INPUT_RATE).astype(np.float32)
    loud = np.flatnonzero(np.abs(pcm) > 0.005 * 32768)
    if loud.size:
        pcm = pcm[loud[0] : loud[-1] + 1]
    peak = float(np.abs(pcm).max()) or 1.0
    pcm = pcm * (10 ** (-3 / 20) * 32767 / peak)
    dest.write_bytes(wav_bytes(pcm.round().astype(np.int16), INPUT_RATE))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="regenerate every fixture")
    ap.add_argument("--check", action="store_true", help="only report missing fixtures (exit 1 if any)")
    ap.add_argument("--prune", action="store_true", help="delete fixtures no scenario uses")
    args = ap.parse_args(argv)
    need = wanted()
    missing = {n: t for n, t in need.items() if args.force or not (FIXTURES / f"{n}.wav").exists()}
    if args.check:
        for n, (t, who) in sorted(missing.items()):
            print(f"missing: {n}.wav ({t!r}, {who})")
        return 1 if missing else 0
    if any(who == "espeak" for _t, who in missing.values()) and not (shutil.which("espeak-ng") and shutil.which("sox")):
        print("espeak-ng and sox are needed: apt-get install espeak-ng sox", file=sys.stderr)
        return 2
    if any(who == "piper" for _t, who in missing.values()) and importlib.util.find_spec("piper") is None:
        print("the Piper fixtures need the `local` extra: uv sync --extra local", file=sys.stderr)
        return 2
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for n, (t, who) in sorted(missing.items()):
        synthesize(t, FIXTURES / f"{n}.wav", who)
        print(f"wrote {n}.wav: {t!r} ({who})")
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
