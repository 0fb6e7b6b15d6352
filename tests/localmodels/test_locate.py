"""Model paths: a wrong one is refused before anything loads, with one line naming the
setting (`app.localmodels.locate`, and `python -m app models serve` as users run it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.localmodels.locate import ModelFileError, locate_llm, locate_stt, locate_tts
from app.localmodels.settings import LocalModelSettings

REPO = Path(__file__).resolve().parents[2]


def settings(**kw: object) -> LocalModelSettings:
    return LocalModelSettings(_env_file=None, **kw)  # type: ignore[call-arg]


def test_a_missing_or_non_gguf_llm_file_names_its_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as e:
        locate_llm(settings(llm_model=tmp_path / "nope.gguf"))
    assert e.value.setting == "LOCAL_LLM_MODEL" and "does not exist" in str(e.value)
    text = tmp_path / "model.gguf"
    text.write_text("not a model")
    with pytest.raises(ModelFileError) as e:
        locate_llm(settings(llm_model=text))
    assert str(e.value) == f"LOCAL_LLM_MODEL: {text} is not a GGUF model (no GGUF header)"
    good = tmp_path / "ok.gguf"
    good.write_bytes(b"GGUF" + b"\0" * 16)
    assert locate_llm(settings(llm_model=good)) == good


def test_a_whisper_directory_needs_model_bin_and_config(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as e:
        locate_stt(settings(stt_model=tmp_path / "absent"))
    assert e.value.setting == "LOCAL_STT_MODEL"
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelFileError) as e:
        locate_stt(settings(stt_model=tmp_path))
    assert "missing model.bin" in str(e.value)
    (tmp_path / "model.bin").write_bytes(b"\0")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError) as e:
        locate_stt(settings(stt_model=tmp_path))
    assert "not valid JSON" in str(e.value)
    (tmp_path / "config.json").write_text("{}")
    assert locate_stt(settings(stt_model=tmp_path)).directory == tmp_path


def test_a_piper_voice_needs_an_onnx_file_and_its_config(tmp_path: Path) -> None:
    voice = tmp_path / "v.onnx"
    voice.write_text("hello")
    with pytest.raises(ModelFileError) as e:
        locate_tts(settings(tts_voice=voice))
    assert str(e.value) == f"LOCAL_TTS_VOICE: {voice} is not an ONNX model"
    voice.write_bytes(b"\x08\x07rest")
    with pytest.raises(ModelFileError) as e:
        locate_tts(settings(tts_voice=voice))
    assert "v.onnx.json is missing" in str(e.value)
    (tmp_path / "v.onnx.json").write_text(json.dumps({"audio": {}}))
    with pytest.raises(ModelFileError) as e:
        locate_tts(settings(tts_voice=voice))
    assert "no audio.sample_rate" in str(e.value)
    (tmp_path / "v.onnx.json").write_text(json.dumps({"audio": {"sample_rate": 22050}}))
    assert locate_tts(settings(tts_voice=voice)).model == voice


def test_models_serve_refuses_a_bad_model_path_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "weights.gguf"
    bad.write_text("<html>a download error page</html>")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_")}
    env.update(PYTHONPATH=str(REPO), LOCAL_LLM_MODEL=str(bad), LOCAL_MODELS_PORT="1")
    res = subprocess.run([sys.executable, "-m", "app", "models", "serve"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: LOCAL_LLM_MODEL: {bad} is not a GGUF model (no GGUF header)"]


def test_models_serve_refuses_an_invalid_setting_value(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCAL_")}
    env.update(PYTHONPATH=str(REPO), LOCAL_LLM_PARALLEL="0")
    res = subprocess.run([sys.executable, "-m", "app", "models", "serve"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[0].startswith("error: setting LOCAL_LLM_PARALLEL:")
