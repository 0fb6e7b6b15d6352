"""Library adaptations (`app/adapters`): pinned to the version they were written against,
installed explicitly at process start, and falling back to the library's own code path
(with one warning) on any other version."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from livekit.plugins import openai as lk_openai
from openai.resources.chat.completions import completions as completions_module

from app.adapters import (
    install_adapters,
    livekit_agents,
    openai_sdk,
    opentelemetry_sdk,
    otlp_exporter,
    pins,
    silero as silero_adapter,
)
from app.adapters.livekit_agents import SegmentingSTT
from app.agents.audio import session_audio_models

REPO = Path(__file__).resolve().parents[1]


def test_every_adapter_pins_the_installed_version() -> None:
    for module in (openai_sdk, silero_adapter, livekit_agents, otlp_exporter, opentelemetry_sdk):
        assert pins.installed_version(module.DISTRIBUTION) == module.WRITTEN_AGAINST, module.__name__
        assert f"{module.DISTRIBUTION} {module.WRITTEN_AGAINST}" in (module.__doc__ or "").replace("\n", " ")
    assert install_adapters() == {
        "app.adapters.openai_sdk": True, "app.adapters.silero": True, "app.adapters.livekit_agents": True,
        "app.adapters.otlp_exporter": True, "app.adapters.opentelemetry_sdk": True,
    }


def test_a_version_mismatch_logs_one_warning_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.adapters"):
        assert pins.matches("openai", "0.0.1", adapter="app.adapters.openai_sdk") is False
        assert pins.matches("openai", openai_sdk.WRITTEN_AGAINST, adapter="app.adapters.openai_sdk") is True
    (record,) = caplog.records
    msg = record.getMessage()
    assert "app.adapters.openai_sdk" in msg and "0.0.1" in msg and openai_sdk.WRITTEN_AGAINST in msg
    assert "library's own code path" in msg


def test_openai_sdk_left_alone_on_another_version(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(openai_sdk, "_installed", False)
    monkeypatch.setattr(openai_sdk, "_identity_types", set())
    monkeypatch.setattr(openai_sdk, "WRITTEN_AGAINST", "2.0.0")
    before = completions_module.async_maybe_transform
    with caplog.at_level(logging.WARNING, logger="app.adapters"):
        assert openai_sdk.install() is False
        assert openai_sdk.install() is False  # installed once: no second warning
    assert completions_module.async_maybe_transform is before  # not wrapped (again)
    assert not openai_sdk._identity_types  # the fast path never applies
    assert len([r for r in caplog.records if "2.0.0" in r.getMessage()]) == 1


@pytest.mark.parametrize("inactive", [silero_adapter, livekit_agents])
def test_audio_falls_back_to_livekits_own_path(monkeypatch: pytest.MonkeyPatch, inactive: object) -> None:
    from livekit.plugins import silero

    vad = silero.VAD.load()
    stt = lk_openai.STT(api_key="sk-test")
    adapted_stt, adapted_vad = session_audio_models(stt, vad)
    assert isinstance(adapted_stt, SegmentingSTT) and adapted_vad is not vad
    monkeypatch.setattr(inactive, "_active", False)
    plain_stt, plain_vad = session_audio_models(stt, vad)
    assert plain_stt is stt and plain_vad is vad  # LiveKit wraps the STT in its own StreamAdapter


def test_nothing_is_installed_by_importing() -> None:
    """Importing the product (factory, worker, supervisor) patches nothing; starting the
    worker services does."""
    code = textwrap.dedent("""
        import asyncio
        import app.agents.factory, app.worker.entrypoint, app.supervisor, app.chat
        from openai.resources.chat.completions import completions
        from app.adapters import silero, livekit_agents, otlp_exporter
        from livekit.agents.telemetry import input_delta, pii
        from opentelemetry.exporter.otlp.proto.common import trace_encoder
        from opentelemetry.sdk.trace import Span
        from livekit.agents.llm import LLMStream
        from livekit.agents.voice import agent_activity
        def state():
            print(hasattr(completions.async_maybe_transform, "__wrapped__"), silero.active(), livekit_agents.active(),
                  hasattr(input_delta.compute, "__wrapped__"), hasattr(trace_encoder.encode_spans, "__wrapped__"),
                  hasattr(pii.is_pii_attribute, "__wrapped__"), hasattr(Span.set_attribute, "__wrapped__"),
                  hasattr(LLMStream._attempt_span, "_app_original"), hasattr(agent_activity.dataclass, "_app_original"))
        state()
        from app.settings import Settings
        from app.worker.services import WorkerServices

        async def main():
            services = WorkerServices(Settings(_env_file=None), None)
            await services.start()
            await services.aclose()
        asyncio.run(main())
        state()
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["False " * 8 + "False", "True " * 8 + "True"], out.stdout


def test_otlp_encoder_left_alone_on_another_version(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from opentelemetry.exporter.otlp.proto.common import trace_encoder
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans as library_encode

    monkeypatch.setattr(otlp_exporter, "_installed", False)
    monkeypatch.setattr(otlp_exporter, "_active", False)
    monkeypatch.setattr(otlp_exporter, "WRITTEN_AGAINST", "0.0.1")
    monkeypatch.setattr(trace_encoder, "encode_spans", library_encode)
    with caplog.at_level(logging.WARNING, logger="app.adapters"):
        assert otlp_exporter.install() is False
    assert trace_encoder.encode_spans is library_encode and not otlp_exporter.active()
    assert any("0.0.1" in r.getMessage() for r in caplog.records)


def test_sdk_attribute_writes_left_alone_on_another_version(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.sdk.trace import Span, TracerProvider

    monkeypatch.setattr(opentelemetry_sdk, "_installed", False)
    monkeypatch.setattr(opentelemetry_sdk, "_active", False)
    monkeypatch.setattr(opentelemetry_sdk, "WRITTEN_AGAINST", "0.0.1")
    monkeypatch.setattr(Span, "set_attribute", opentelemetry_sdk._library_set_attribute)
    monkeypatch.setattr(Span, "set_attributes", opentelemetry_sdk._library_set_attributes)
    with caplog.at_level(logging.WARNING, logger="app.adapters"):
        assert opentelemetry_sdk.install() is False
    assert Span.set_attribute is opentelemetry_sdk._library_set_attribute and not opentelemetry_sdk.active()
    assert any("0.0.1" in r.getMessage() for r in caplog.records)
    # and LiveKit's tracer keeps the library's tracer, its spans the library's
    tracer = TracerProvider().get_tracer("livekit-agents")
    assert opentelemetry_sdk.lean(tracer) is tracer
    assert type(tracer.start_span("s")) is not opentelemetry_sdk.LeanSpan


def _count_dataclasses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The qualified names of the classes `dataclasses` processes from now on."""
    import dataclasses

    made: list[str] = []
    process = dataclasses._process_class  # type: ignore[attr-defined]

    def counted(cls: type, *args: object) -> type:
        made.append(cls.__qualname__)
        return process(cls, *args)  # type: ignore[no-any-return]

    monkeypatch.setattr(dataclasses, "_process_class", counted)
    return made


def test_livekits_per_turn_dataclasses_are_made_once_per_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    """`agent_activity` defines a dataclass inside the function every reply runs; its
    decorator now returns the class made the first time for the same definition, and makes
    a new one for anything else."""
    import dataclasses

    from livekit.agents.voice import agent_activity

    install_adapters()
    made = _count_dataclasses(monkeypatch)
    decorate = agent_activity.dataclass  # type: ignore[attr-defined]

    def segment(default: object = None) -> type:
        @decorate
        class _SpeechSegment:
            text: str
            tts: str | None = default  # type: ignore[assignment]

        return _SpeechSegment

    def other_body() -> type:
        class _SpeechSegment:
            text: int

        _SpeechSegment.__qualname__ = first.__qualname__  # the same place, another definition
        return decorate(_SpeechSegment)  # type: ignore[no-any-return]

    first, again = segment(), segment()
    assert first is again and made == ["test_livekits_per_turn_dataclasses_are_made_once_per_definition.<locals>."
                                       "segment.<locals>._SpeechSegment"]
    assert [f.name for f in dataclasses.fields(first)] == ["text", "tts"]
    assert first("hi") == again("hi") and repr(first("hi")).endswith("_SpeechSegment(text='hi', tts=None)")
    assert segment(default="x") is not first and segment(default="x") is segment(default="x")
    assert other_body() is not first and [f.type for f in dataclasses.fields(other_body())] == ["int"]
    assert segment(default=(1,)) is not segment(default=(1,))  # a default that is not plain: a new class each time
    assert len(made) == 5  # first, default "x", the other body, and the tuple default twice

    def with_options() -> type:
        @decorate(frozen=True)
        class WithOptions:
            a: int

        return WithOptions

    def module_level() -> type:
        class AtModuleLevel:
            a: int

        AtModuleLevel.__qualname__ = "AtModuleLevel"  # a class statement of a module's own: run once
        return decorate(AtModuleLevel)  # type: ignore[no-any-return]

    assert with_options() is not with_options() and module_level() is not module_level()
    assert len(made) == 9 and dataclasses.is_dataclass(with_options())


async def test_replies_make_no_dataclass_per_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """A text session's replies run `_pipeline_reply_task_impl` once per turn: after the
    first, no dataclass is made."""
    from sim.bench.throughput import PRODUCTION, session_spec
    from sim.harness import SimEnvironment, run_session
    from sim.report import Checks
    from sim.scenario import Scenario

    install_adapters()
    scenario = Scenario.model_validate({"name": "replies", "sessions": [{}]})
    async with SimEnvironment(scenario, settings_overrides=PRODUCTION) as env:
        checks = Checks()
        await run_session(env, session_spec(0, 2, False), checks=checks)  # the first reply makes it
        made = _count_dataclasses(monkeypatch)
        outcome = await run_session(env, session_spec(1, 4, False), checks=checks)
    assert not checks.failures, "\n".join(f.render() for f in checks.failures)
    assert outcome.turns == 4
    assert not [name for name in made if "_SpeechSegment" in name]
