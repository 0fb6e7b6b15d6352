"""Prompt rendering: declared variables only, defaults, required → MissingVariables,
untrusted values inserted literally."""

from __future__ import annotations

import pytest

from app.agents.context import SessionContext
from app.agents.factory import AgentFactory, MissingVariables, render_prompt, render_template

from .conftest import MakeConfig


def test_values_defaults_and_unknowns(config: MakeConfig) -> None:
    cfg = config(
        instructions="Hello {name}, plan {plan}.{note}",
        greeting="Hi {name}!",
        variables={
            "name": {"required": True},
            "plan": {"default": "basic"},
            "note": {},
        },
    )
    p = render_prompt(cfg, {"name": "Ada", "extra": "ignored", "note": 5})
    assert p.instructions == "Hello Ada, plan basic."
    assert p.greeting == "Hi Ada!"


def test_missing_required_names_all(config: MakeConfig) -> None:
    cfg = config(
        instructions="{a} {b} {c}",
        variables={"a": {"required": True}, "b": {"required": True}, "c": {"default": "x"}},
    )
    with pytest.raises(MissingVariables) as ei:
        render_prompt(cfg, {})
    assert ei.value.names == ("a", "b")
    assert isinstance(ei.value, ValueError)


def test_required_with_default_is_satisfied(config: MakeConfig) -> None:
    cfg = config(instructions="{a}", variables={"a": {"required": True, "default": "d"}})
    assert render_prompt(cfg, {}).instructions == "d"


@pytest.mark.parametrize(
    "value",
    ["{name}", "{0}", "{name.__class__}", "{{}}", "%s %(x)s", "}{", "{name!r:>10}"],
)
def test_values_are_inserted_literally(config: MakeConfig, value: str) -> None:
    cfg = config(instructions="A {name} Z {{literal}}", variables={"name": {}})
    assert render_prompt(cfg, {"name": value}).instructions == f"A {value} Z {{literal}}"


def test_oversized_value_counts_as_missing(config: MakeConfig) -> None:
    cfg = config(instructions="{a}", variables={"a": {"required": True}})
    with pytest.raises(MissingVariables):
        render_prompt(cfg, {"a": "x" * 1025})


def test_render_template_refuses_non_plain_fields() -> None:
    with pytest.raises(ValueError):
        render_template("{a.b}", {"a": "x"})
    with pytest.raises(ValueError):
        render_template("{a}", {})


def test_factory_raises_before_building(factory: AgentFactory, config: MakeConfig, ctx: SessionContext) -> None:
    cfg = config(instructions="Hi {who}", variables={"who": {"required": True}})
    with pytest.raises(MissingVariables) as ei:
        factory.create_agent(cfg, ctx)
    assert ei.value.names == ("who",)
    assert ei.value.agent_id == cfg.agent_id
