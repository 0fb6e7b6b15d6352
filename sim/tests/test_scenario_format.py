"""The scenario format fails loudly: every problem is reported with its file and line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sim.harness import run_scenario
from sim.scenario import Scenario, ScenarioError, load_scenario, render_metadata
from sim.yamlsrc import loads_yaml

README = Path(__file__).resolve().parents[1] / "README.md"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def refused_at(tmp_path: Path, text: str, line: int, fragment: str) -> str:
    """Load `text` as a scenario file: refused, naming `line` and `fragment`; the message."""
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    message = str(err.value)
    assert f"{path}:{line}:" in message and fragment in message, message
    return message


def test_a_typo_is_reported_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
name: typo
sessions:
  - job_metadata: {purpose: support}
    turns:
      - user: hi
        expect:
          - message: {contians: hello}
""")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert f"{path}:7: sessions[0].turns[0].expect[0].message.contians: Extra inputs are not permitted" in str(err.value)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("name: x\nname: y\nsessions: [{}]\n", 2, "duplicate key 'name'"),
        ("name: x\nsessions:\n  - turns:\n      - {user: hi, expect: [{message: {regex: '('}}]}\n", 4, "invalid regex"),
        ("name: x\nsessions:\n  - turns:\n      - user: hi\n        llm: [{text: a, tool: b}]\n", 5, "text goes with tools"),
        ("name: x\nsessions:\n  - turns:\n      - user: hi\n        expect: [{message: {}, handoff: {to: a}}]\n", 5, "exactly one of"),
        ("name: x\nsessions:\n  - turns:\n      - user: hi\n        expect: [{any_order: [{any_order: [{message: {}}]}]}]\n", 5, "cannot be nested"),
        ("name: x\nconfig:\n  - {patch: {agent_id: a, body: {}}, delete: {agent_id: a}}\nsessions: [{}]\n", 3, "exactly one of"),
        ("name: x\nsessions: []\n", 2, "at least 1 item"),
        ("name: x\nsessions:\n  - route: {agent_id: a}\n    closes: maybe\n", 4, "closes"),
        ("name: x\nsessions:\n  - job_metadata: {generate: {repeat: a, json: {}}}\n", 3, "exactly one of"),
        ("name: x\nsessions: [{}\n", 3, "invalid YAML"),
        # endpoints, latency budgets
        ("name: x\nsessions:\n  - turns:\n      - user: hi\n        llm: [{endpoint: backup.sim, text: a}]\n",
         5, "sessions[0].turns[0].llm[0].endpoint: 'backup.sim' is not declared under endpoints"),
        ("name: x\nendpoints:\n  backup_sim: {}\nsessions: [{}]\n", 3, "endpoints.backup_sim: an endpoint is `default` or a host name"),
        ("name: x\nendpoints:\n  b.sim: {delay_ms: {chat: -1}}\nsessions: [{}]\n", 3, "endpoints.b.sim.delay_ms.chat"),
        ("name: x\nendpoints:\n  b.sim: {dwon: true}\nsessions: [{}]\n", 3, "endpoints.b.sim.dwon: Extra inputs"),
        ("name: x\nlatency_budget: {turn_p95_ms: 1200}\nsessions: [{}]\n", 1, "`latency_budget` needs `io: voice`"),
        ("name: x\nio: voice\nlatency_budget: {turn_p95_ms: 0}\nsessions: [{}]\n", 3, "latency_budget.turn_p95_ms"),
        ("name: x\nsessions:\n  - turns:\n      - user: hi\n        llm: [{text: a, usage: {prompt_tokens: 1}}]\n",
         5, "llm[0].usage.completion_tokens: Field required"),
        ("name: x\nsessions:\n  - record: {events: [{kind: x, contain: y}]}\n", 3, "record.events[0].contain"),
    ],
)
def test_invalid_scenarios_name_the_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    message = refused_at(tmp_path, text, line, fragment)
    assert "Value error" not in message  # worded by app.domain.field_errors


def test_line_map_points_at_keys_and_items() -> None:
    data, lines = loads_yaml("a:\n  - x: 1\n    y: [2, 3]\n  - 4\nb: c\n")
    assert data == {"a": [{"x": 1, "y": [2, 3]}, 4], "b": "c"}
    assert lines.line(("a", 0, "y")) == 3
    assert lines.line(("a", 1)) == 4
    assert lines.line(("b",)) == 5
    assert lines.line(("a", 0, "y", 7, "deeper")) == 3  # nearest known ancestor


def test_generated_metadata_has_the_exact_size() -> None:
    doc = Scenario.model_validate(
        {"name": "g", "sessions": [{"job_metadata": {"generate": {"json": {"purpose": "sales"}, "pad_to_bytes": 8192}}},
                                   {"job_metadata": {"generate": {"repeat": "[", "times": 3}}},
                                   {"job_metadata": {"purpose": "x"}},
                                   {"job_metadata": "raw"}]}
    )
    texts = [render_metadata(s.job_metadata) for s in doc.sessions]
    assert len(texts[0].encode()) == 8192 and json.loads(texts[0])["purpose"] == "sales"
    assert texts[1:] == ["[[[", '{"purpose": "x"}', "raw"]


def readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- example -->\s*```yaml\n(.*?)```", text, re.S)
    assert match, "sim/README.md must contain the complete example after <!-- example -->"
    return match.group(1)


async def test_the_readme_example_is_valid_and_passes(tmp_path: Path) -> None:
    path = write(tmp_path, readme_example())
    result = await run_scenario(load_scenario(path))
    assert result.passed, result.report()


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("name: x\nsessions:\n  - analysis:\n      replies: [{json: {}, text: a}]\n", 4,
         "sessions[0].analysis.replies[0]: an analysis reply is one of: json, text, error"),
        ("name: x\nsessions:\n  - analysis:\n      replies:\n        - {error: 200}\n", 5,
         "sessions[0].analysis.replies[0].error"),
        ("name: x\nsessions:\n  - analysis:\n      status: pending\n", 4, "sessions[0].analysis.status"),
        ("name: x\nsessions:\n  - analysis:\n      success: {passed: yes, reson: x}\n", 4,
         "sessions[0].analysis.success.reson: Extra inputs"),
        ("name: x\nsessions:\n  - analysis:\n      summary: {contians: x}\n", 4, "sessions[0].analysis.summary.contians"),
        ("name: x\nsessions:\n  - turns:\n      - user: hi\n        llm:\n          - text: a\n"
         "            usage: {prompt_tokens: 1, completion_tokens: 1, cached_tokens: 2}\n", 7,
         "usage: cached_tokens cannot exceed prompt_tokens"),
        ("name: x\nsessions:\n  - record:\n      usage: {cost: 1}\n", 4, "sessions[0].record.usage.cost: Extra inputs"),
        ("name: x\nsessions:\n  - record:\n      usage: {cost_usd: -1}\n", 4, "sessions[0].record.usage.cost_usd"),
    ],
)
def test_invalid_analysis_and_usage_expectations_name_the_line(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    refused_at(tmp_path, text, line, fragment)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("name: x\nconfig:\n  - resolve: {user_ids: [a]}\n    as: alice\nsessions: [{}]\n", 3,
         "resolve takes no via/as/expect_status"),
        ("name: x\nconfig:\n  - publish: {agent_id: a, version: 2}\n    via: store\n    as: bob\nsessions: [{}]\n", 3,
         "`as` and `expect_body_contains` are about an API request"),
        ("name: x\nconfig:\n  - create_key: {name: alice, role: owner}\nsessions: [{}]\n", 3,
         "config[0].create_key.role"),
        ("name: x\nconfig:\n  - audit: {expect: []}\nsessions: [{}]\n", 3, "config[0].audit.expect"),
        ("name: x\nconfig:\n  - audit:\n      expect:\n        - {type: agent.created}\nsessions: [{}]\n", 5,
         "config[0].audit.expect[0].actor: Field required"),
    ],
)
def test_invalid_key_and_audit_ops_name_the_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    refused_at(tmp_path, text, line, fragment)


async def test_named_keys_and_the_audit_order_are_checked(tmp_path: Path) -> None:
    """`as` makes the request with that key (its name is the actor; an unknown name fails
    the op), and `audit` wants its entries in the trail's order."""
    path = write(tmp_path, """\
name: keys and audit
config_via: api
config:
  - create_key: {name: alice, role: edit}
  - create_key: {name: bob, role: edit}
  - patch: {agent_id: support-agent-v1, body: {description: one}}
    as: alice
  - patch: {agent_id: support-agent-v1, body: {description: two}}
    as: bob
  - patch: {agent_id: support-agent-v1, body: {description: three}}
    as: ghost
  - put_route: {purpose: support, agent_id: support-agent-v1}
    as: alice
    expect_status: 403
    expect_body_contains: [publish, no-such-text]
  - audit:
      agent_id: support-agent-v1
      expect:
        - {type: agent.version_created, actor: alice}
        - {type: agent.version_created, actor: bob}
  - audit:
      agent_id: support-agent-v1
      expect:
        - {type: agent.version_created, actor: bob}
        - {type: agent.version_created, actor: alice}
  - create_key: {name: carol, role: read}
    expect_status: 409
sessions: [{}]
""")
    result = await run_scenario(load_scenario(path))
    failed = {f.loc: f for f in result.failures}
    assert set(failed) == {("config", 4, "as"), ("config", 5, "expect_body_contains"),
                           ("config", 7, "audit", "expect", 1), ("config", 8, "expect_status")}, result.report()
    assert "no-such-text" in failed[("config", 5, "expect_body_contains")].message
    trail = failed[("config", 7, "audit", "expect", 1)].context or ""
    assert "agent.version_created by alice" in trail and "key.created" not in trail  # filtered by agent
    assert "201" in (failed[("config", 8, "expect_status")].actual or "")
    assert not re.search(r"vp_[A-Za-z0-9_-]{8}", result.report()), result.report()  # secrets masked
