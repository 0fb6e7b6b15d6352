"""AGENT_MODE as configuration: `config_source` picks the process's config source, and no
other module looks at the mode."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient
from livekit.agents import AgentSession
from pydantic import SecretStr

from app.api.app import create_app
from app.domain import NotFound, StoreUnavailable
from app.domain.loading import ConfigFileError
from app.domain.routing import MetadataSource
from app.settings import DEFAULT_PROMPTS_DIR, Settings
from app.store.cache import ConfigCache
from app.store.sources import (
    PTE_AGENT_ID,
    PTE_CONFIG_FILE,
    FixedConfigSource,
    NoStoreSource,
    config_source,
    load_pte_config,
)
from app.store.sql import SQLStore
from app.worker.services import WorkerServices
from app.worker.session_start import prepare_session
from sim.fake_openai import FakeOpenAI

REPO = Path(__file__).resolve().parents[1]


def settings(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/src.db")
    await s.start()
    yield s
    await s.aclose()


async def test_dynamic_mode_reads_the_store_through_one_cache(store: SQLStore) -> None:
    cache = ConfigCache(store)
    assert config_source(settings(), store, cache=cache) is cache  # the process's one cache
    own = config_source(settings(cache_poll_interval=0.2), store)
    assert isinstance(own, ConfigCache)
    nothing = config_source(settings(), None)
    assert isinstance(nothing, NoStoreSource)
    with pytest.raises(StoreUnavailable):
        await nothing.current()
    with pytest.raises(NotFound):
        await nothing.get_agent_config("support-agent-v1")


async def test_pte_mode_is_a_read_only_single_agent_snapshot(store: SQLStore) -> None:
    cache = ConfigCache(store)
    source = config_source(settings(agent_mode="pte"), store, cache=cache)
    assert isinstance(source, FixedConfigSource)  # not the store's cache, even when one is given
    snap = await source.current()
    assert source.is_fresh() and snap is source.snapshot
    assert list(snap.configs) == [PTE_AGENT_ID]
    assert [(r.purpose, r.agent_id, r.is_default) for r in snap.routes] == [("default", PTE_AGENT_ID, True)]
    assert snap.routing.default_agent_id == PTE_AGENT_ID
    assert (await source.get_agent_config(PTE_AGENT_ID)).version == 1
    with pytest.raises(NotFound):
        await source.get_agent_config("support-agent-v1")
    assert [t.name for t in snap.configs[PTE_AGENT_ID].tools] == ["end_session", "record_score"]


async def test_the_prompts_directory_comes_from_settings(tmp_path: Path) -> None:
    assert (DEFAULT_PROMPTS_DIR / PTE_CONFIG_FILE).is_file()  # the default works in the repo (and /app in the image)
    assert settings().prompts_dir == DEFAULT_PROMPTS_DIR
    mine = tmp_path / "my-prompts"
    mine.mkdir()
    text = (DEFAULT_PROMPTS_DIR / PTE_CONFIG_FILE).read_text().replace(
        "name: PTE Speaking Practice", "name: PTE Practice (ours)")
    (mine / PTE_CONFIG_FILE).write_text(text)
    source = config_source(settings(agent_mode="pte", prompts_dir=mine), None)
    assert (await source.current()).configs[PTE_AGENT_ID].name == "PTE Practice (ours)"
    assert load_pte_config(DEFAULT_PROMPTS_DIR).name == "PTE Speaking Practice"

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(DEFAULT_PROMPTS_DIR / "support-agent-v1.yaml", wrong / PTE_CONFIG_FILE)
    with pytest.raises(ConfigFileError, match="agent_id: expected 'pte-interview'"):
        config_source(settings(agent_mode="pte", prompts_dir=wrong), None)


def test_prompts_dir_is_a_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROMPTS_DIR", str(tmp_path))
    assert settings().prompts_dir == tmp_path


async def test_pte_mode_records_sessions_in_the_store_when_there_is_one(store: SQLStore) -> None:
    """The mode changes where configs come from, not whether sessions are recorded."""
    services = WorkerServices(settings(agent_mode="pte"), store)
    await services.start()
    try:
        fake = FakeOpenAI().text("Welcome.")
        prepared = await prepare_session(services, [MetadataSource("job", json.dumps({"purpose": "support"}))],
                                         room="r", audio=False, llm_client=fake.client())
        async with AgentSession() as session:
            await session.start(prepared.agent, capture_run=True)
            await session.run(user_input="ready")
        await prepared.aclose()
        rec = await store.get_session(prepared.record.session_id)
        assert (rec.agent_id, rec.config_version, rec.route_reason) == (PTE_AGENT_ID, 1, "default:unknown_purpose")
        assert {"record_score", "end_session"} <= set(fake.requests[0].tool_names)
    finally:
        await services.aclose()


async def test_pte_mode_api_resolves_and_mints_for_the_examiner(store: SQLStore) -> None:
    s = settings(agent_mode="pte", admin_api_key=SecretStr("admin-key-123456"))
    async with AsyncTestClient(create_app(s, store)) as client:
        r = await client.get("/api/v1/resolve", headers={"Authorization": "Bearer admin-key-123456"})
    assert r.status_code == 200, r.text
    assert (r.json()["agent_id"], r.json()["config_version"], r.json()["stale"]) == (PTE_AGENT_ID, 1, False)


def test_only_the_source_picker_reads_the_agent_mode() -> None:
    """PTE is configuration: no `if mode == pte` anywhere but `app.store.sources`."""
    readers = []
    for path in sorted((REPO / "app").rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            hit = (isinstance(node, ast.Attribute) and node.attr in ("agent_mode", "pte_mode", "pte")) or (
                isinstance(node, ast.Name) and node.id == "AgentMode"
            )
            if hit:
                readers.append(str(path.relative_to(REPO)))
    assert set(readers) == {"app/store/sources.py", "app/settings.py"}, sorted(set(readers))
