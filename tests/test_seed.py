"""The example agents in `prompts/` and the idempotent seed that loads them."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema
import pytest

from app.domain import AgentConfigInput, NotFound, Route
from app.domain.loading import ConfigFileError, load_agent_file
from app.seed import NOT_SEEDED, PROMPTS_DIR, SeedReport, load_routes, load_seed_agents, seed
from app.store.sql import SQLStore

SEED_AGENTS = ["interview-agent-v1", "onboarding-agent-v1", "sales-agent-v1", "support-agent-v1"]
ROUTES = {
    "support": "support-agent-v1",
    "sales": "sales-agent-v1",
    "onboarding": "onboarding-agent-v1",
    "interview": "interview-agent-v1",
    "default": "support-agent-v1",
}
AGENT_FILES = sorted(p for p in PROMPTS_DIR.glob("*.yaml") if p.name != "routes.yaml")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLStore]:
    s = SQLStore(f"sqlite+aiosqlite:///{tmp_path}/seed.db")
    await s.start()
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    """A private copy of prompts/ a test may break."""
    return Path(shutil.copytree(PROMPTS_DIR, tmp_path / "prompts"))


async def snapshot(store: SQLStore) -> tuple[int, dict[str, int], list[Route]]:
    agents, _ = await store.list_agent_configs(limit=1000)
    return await store.config_epoch(), {a.agent_id: a.version for a in agents}, await store.list_routes()


# ------------------------------------------------------------------- the files


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: p.name)
def test_every_agent_file_validates(path: Path) -> None:
    cfg = load_agent_file(path)
    assert isinstance(cfg, AgentConfigInput)
    # a document that loads must survive the API's own round trip unchanged
    assert AgentConfigInput.model_validate(cfg.model_dump(mode="json")) == cfg


def test_routes_file_validates() -> None:
    routes = load_routes(PROMPTS_DIR)
    assert {r.purpose: r.agent_id for r in routes} == ROUTES
    assert [r.purpose for r in routes if r.is_default] == ["default"]


def test_seed_agents_are_the_four_examples_not_pte() -> None:
    agents = load_seed_agents(PROMPTS_DIR)
    assert sorted(a.agent_id for a in agents) == SEED_AGENTS
    assert "pte_interview.yaml" in NOT_SEEDED


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: p.name)
def test_prompts_render_with_defaults_and_read_as_speech(path: Path) -> None:
    from app.agents.factory import render_prompt

    cfg = load_agent_file(path)
    # no session variables at all: routing by purpose alone must still produce a prompt
    rendered = render_prompt(cfg, {})  # type: ignore[arg-type]  # uses prompt_config only
    assert "{" not in rendered.instructions and "}" not in rendered.instructions
    assert rendered.greeting and "{" not in rendered.greeting
    for text in (rendered.instructions, rendered.greeting):
        # nothing a TTS voice would read out literally
        assert not re.search(r"^\s*([-*•#]|\d+\.)\s", text, re.M), "list or heading markup"
        assert "**" not in text and "`" not in text
        assert not re.search(r"[\U0001F300-\U0001FAFF]", text), "emoji"
    # a greeting is one short utterance that ends on a question to the caller
    assert len(rendered.greeting.split()) <= 50
    assert rendered.greeting.rstrip().endswith("?")


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: p.name)
def test_schemas_describe_every_field_and_tools_match_handoffs(path: Path) -> None:
    cfg = load_agent_file(path)
    props = cfg.schema_config.get("properties", {})
    for name, prop in props.items():
        assert prop.get("description"), f"{name} has no description"
    names = {t.name for t in cfg.tools}
    assert "end_session" in names
    assert ("transfer" in names) == bool(cfg.handoffs)
    for target in cfg.handoffs:
        assert target in cfg.prompt_config.instructions, "the prompt says when to transfer"


def test_support_and_sales_hand_off_to_each_other() -> None:
    agents = {a.agent_id: a for a in load_seed_agents(PROMPTS_DIR)}
    assert agents["support-agent-v1"].handoffs == ["sales-agent-v1"]
    assert agents["sales-agent-v1"].handoffs == ["support-agent-v1"]


def _validator(agent_id: str) -> jsonschema.Draft202012Validator:
    cfg = load_agent_file(PROMPTS_DIR / f"{agent_id}.yaml")
    return jsonschema.Draft202012Validator(
        cfg.schema_config, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


@pytest.mark.parametrize(
    ("agent_id", "good", "bad"),
    [
        (
            "support-agent-v1",
            {"caller_name": "Ada Lovelace", "order_id": "AB123456", "issue_category": "delivery_problem",
             "urgency": "high", "description": "Parcel marked delivered but never arrived."},
            [{"order_id": "ab123456"}, {"order_id": "AB 123456"}, {"order_id": "AB12"},
             {"issue_category": "refund please"}, {"urgency": "very"}],
        ),
        (
            "sales-agent-v1",
            {"name": "Grace", "company": "Hopper Labs", "team_size": 12,
             "use_case": "Automate inbound support calls in two languages.", "budget_range": "500_to_2000",
             "email": "grace@hopper.example", "preferred_contact_time": "Tuesday after 2 pm Eastern"},
            [{"team_size": 0}, {"team_size": 2.5}, {"email": "grace at hopper dot com"},
             {"budget_range": "lots"}],
        ),
        (
            "onboarding-agent-v1",
            {"full_name": "Alan Turing", "email": "alan@example.org", "company": "Individual",
             "role": "founder", "goals": "Get the first agent live this month.", "preferred_language": "pt-BR"},
            [{"email": "alan@"}, {"preferred_language": "Portuguese"}, {"preferred_language": "PT"}],
        ),
        (
            "interview-agent-v1",
            {"candidate_name": "Katherine Johnson", "years_of_experience": 7.5,
             "key_skills": ["Python", "SQL"], "availability": "weekday mornings, UTC",
             "salary_expectation": "prefers not to say", "notice_period": "four weeks"},
            [{"years_of_experience": -1}, {"key_skills": []}, {"key_skills": "Python, SQL"},
             {"key_skills": ["SQL", "SQL"]}],
        ),
    ],
)
def test_schemas_accept_good_and_reject_bad_values(
    agent_id: str, good: dict[str, object], bad: list[dict[str, object]]
) -> None:
    v = _validator(agent_id)
    assert list(v.iter_errors(good)) == []
    for change in bad:
        assert list(v.iter_errors({**good, **change})), f"accepted {change}"


# -------------------------------------------------------------------- seeding


async def test_seed_creates_agents_and_routes(store: SQLStore) -> None:
    report = await seed(store)
    assert sorted(report.created_agents) == SEED_AGENTS
    assert report.kept_agents == []
    assert sorted(report.created_routes) == sorted(ROUTES)
    assert report.changed and report.skipped_default is None
    routes = {r.purpose: r for r in await store.list_routes()}
    assert {p: r.agent_id for p, r in routes.items()} == ROUTES
    assert [p for p, r in routes.items() if r.is_default] == ["default"]
    for agent_id in SEED_AGENTS:
        cfg = await store.get_agent_config(agent_id)
        assert cfg.version == 1
        assert cfg.input() == load_agent_file(PROMPTS_DIR / f"{agent_id}.yaml")
    with pytest.raises(NotFound):  # the PTE agent is hardcoded, never seeded
        await store.get_agent_config("pte-interview")


async def test_seed_twice_changes_nothing(store: SQLStore) -> None:
    await seed(store)
    before = await snapshot(store)
    report = await seed(store)
    assert report == SeedReport(kept_agents=report.kept_agents, kept_routes=report.kept_routes)
    assert not report.changed
    assert sorted(report.kept_agents) == SEED_AGENTS
    assert sorted(report.kept_routes) == sorted(ROUTES)
    assert await snapshot(store) == before
    for agent_id in SEED_AGENTS:
        assert len(await store.list_versions(agent_id)) == 1


async def test_seed_keeps_an_edited_agent(store: SQLStore) -> None:
    await seed(store)
    edited = await store.update_agent_config(
        "sales-agent-v1", {"prompt_config": {"instructions": "Operator's own prompt."}, "enabled": False}
    )
    assert edited.version == 2
    before = await snapshot(store)
    report = await seed(store)
    assert "sales-agent-v1" in report.kept_agents and not report.changed
    cfg = await store.get_agent_config("sales-agent-v1")
    assert (cfg.version, cfg.prompt_config.instructions, cfg.enabled) == (2, "Operator's own prompt.", False)
    assert await snapshot(store) == before


async def test_seed_keeps_a_preexisting_different_agent(store: SQLStore) -> None:
    own = load_agent_file(PROMPTS_DIR / "support-agent-v1.yaml").model_copy(
        update={"name": "Our support", "tools": [], "handoffs": []}
    )
    await store.create_agent_config(own)
    report = await seed(store)
    assert report.kept_agents == ["support-agent-v1"]
    assert sorted(report.created_agents) == [a for a in SEED_AGENTS if a != "support-agent-v1"]
    cfg = await store.get_agent_config("support-agent-v1")
    assert (cfg.version, cfg.name, cfg.handoffs) == (1, "Our support", [])


async def test_seed_keeps_existing_routes_and_default(store: SQLStore) -> None:
    mine = load_agent_file(PROMPTS_DIR / "interview-agent-v1.yaml").model_copy(update={"agent_id": "my-agent"})
    await store.create_agent_config(mine)
    await store.put_route(Route(purpose="sales", agent_id="my-agent"))
    await store.put_route(Route(purpose="help", agent_id="my-agent", is_default=True))
    report = await seed(store)
    assert report.kept_routes == ["sales"]
    assert report.skipped_default == "default"
    assert sorted(report.created_routes) == ["interview", "onboarding", "support"]
    routes = {r.purpose: r for r in await store.list_routes()}
    assert routes["sales"].agent_id == "my-agent"
    assert "default" not in routes
    assert [p for p, r in routes.items() if r.is_default] == ["help"]
    # and the next run is a no-op
    before = await snapshot(store)
    again = await seed(store)
    assert not again.changed and again.skipped_default == "default"
    assert await snapshot(store) == before


async def test_seed_creates_default_when_table_has_routes_but_no_default(store: SQLStore) -> None:
    await store.create_agent_config(
        load_agent_file(PROMPTS_DIR / "interview-agent-v1.yaml").model_copy(update={"agent_id": "my-agent"})
    )
    await store.put_route(Route(purpose="help", agent_id="my-agent"))
    report = await seed(store)
    assert "default" in report.created_routes
    assert (await store.get_route("default")).is_default


# ----------------------------------------------------------------- bad files


async def _assert_untouched(store: SQLStore) -> None:
    assert await snapshot(store) == (await store.config_epoch(), {}, [])


async def test_invalid_field_names_file_and_field(prompts: Path, store: SQLStore) -> None:
    path = prompts / "sales-agent-v1.yaml"
    path.write_text(path.read_text().replace("minimum: 1\n", "minimum: one\n", 1))
    with pytest.raises(ConfigFileError) as err:
        await seed(store, prompts)
    msg = str(err.value)
    assert "sales-agent-v1.yaml" in msg and "schema_config" in msg and "team_size" in msg
    await _assert_untouched(store)


async def test_undeclared_template_variable_is_reported(prompts: Path) -> None:
    path = prompts / "support-agent-v1.yaml"
    path.write_text(path.read_text().replace("{followup_window}", "{follow_up}", 1))
    with pytest.raises(ConfigFileError) as err:
        load_seed_agents(prompts)
    assert str(err.value).endswith(
        "support-agent-v1.yaml: invalid agent config: prompt_config.instructions: uses undeclared "
        "variable(s) follow_up; declare them under prompt_config.variables"
    ), err.value


async def test_yaml_syntax_error_names_line(prompts: Path) -> None:
    (prompts / "onboarding-agent-v1.yaml").write_text("agent_id: [unclosed\nname: x\n")
    with pytest.raises(ConfigFileError, match=r"onboarding-agent-v1\.yaml: invalid YAML at line \d+"):
        load_seed_agents(prompts)


async def test_unknown_key_and_wrong_top_level(prompts: Path) -> None:
    path = prompts / "interview-agent-v1.yaml"
    path.write_text(path.read_text() + "colour: blue\n")
    with pytest.raises(ConfigFileError, match=r"interview-agent-v1\.yaml: .*colour"):
        load_seed_agents(prompts)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigFileError, match="expected a mapping"):
        load_seed_agents(prompts)


async def test_agent_id_must_match_file_name(prompts: Path) -> None:
    shutil.copy(prompts / "sales-agent-v1.yaml", prompts / "sales-agent-v2.yaml")
    with pytest.raises(ConfigFileError, match=r"sales-agent-v2\.yaml: agent_id"):
        load_seed_agents(prompts)


@pytest.mark.parametrize(
    ("routes_yaml", "match"),
    [
        ("routes:\n  - purpose: a\n    agent_id: sales-agent-v1\n  - purpose: a\n    agent_id: sales-agent-v1\n",
         "listed twice"),
        ("routes:\n  - {purpose: a, agent_id: sales-agent-v1, is_default: true}\n"
         "  - {purpose: b, agent_id: sales-agent-v1, is_default: true}\n", "more than one default"),
        ("routes:\n  - {purpose: 'Bad Purpose', agent_id: sales-agent-v1}\n", r"routes\[0\]\.purpose"),
        ("routes:\n  - {purpose: a, agent: sales-agent-v1}\n", r"routes\[0\]"),
        ("routes:\n  - {purpose: a, agent_id: sales-agent-v1, is_default: 'yes'}\n",
         r"invalid route: routes\[0\]\.is_default: Input should be a JSON boolean$"),  # no "Value error, "
        ("- purpose: a\n", "single key 'routes'"),
    ],
)
async def test_bad_routes_file(prompts: Path, routes_yaml: str, match: str) -> None:
    (prompts / "routes.yaml").write_text(routes_yaml)
    with pytest.raises(ConfigFileError, match=match) as err:
        load_routes(prompts)
    assert "routes.yaml" in str(err.value)


async def test_route_to_unknown_agent_writes_nothing(prompts: Path, store: SQLStore) -> None:
    (prompts / "routes.yaml").write_text("routes:\n  - {purpose: x, agent_id: nobody-here}\n")
    with pytest.raises(ConfigFileError, match="nobody-here"):
        await seed(store, prompts)
    await _assert_untouched(store)


async def test_missing_prompts_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="not found"):
        load_seed_agents(tmp_path / "nope")


def test_report_summary() -> None:
    r = SeedReport(created_agents=["a"], kept_routes=["x", "y"], skipped_default="default")
    text = r.summary()
    assert "agents created 1 (a)" in text and "kept 2 (x, y)" in text and "skipped" in text
    assert str(r) == text
