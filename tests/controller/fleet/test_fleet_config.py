"""Cross-field checks of the fleet section: errors at load time (and in check-config)."""

from __future__ import annotations

import pytest

from memhp.controller.config import ConfigError, load_config_text

RULE = """
rules:
  - name: shrink
    alertname: MemoryPressure
    action: offline
    count: 1
"""


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "p.yaml")
    return "\n".join(e.value.problems)


BUDGET = """
fleet:
  budget:
    etcd: {endpoints: ["http://127.0.0.1:2379"]}
    max_concurrent: 3
    max_actions_per_hour: 10
"""


def test_a_rules_budget_within_the_fleets():
    text = BUDGET + RULE + "    budget: {max_concurrent: 4, max_actions_per_hour: 11}\n"
    p = problems(text)
    assert "rules[0].budget.max_concurrent: 4 exceeds fleet.budget.max_concurrent (3)" in p
    assert "rules[0].budget.max_actions_per_hour: 11 exceeds fleet.budget.max_actions_per_hour (10)" in p
    load_config_text(BUDGET + RULE + "    budget: {max_concurrent: 2}\n")


def test_a_rules_budget_or_gate_needs_the_fleets():
    p = problems(RULE + "    budget: {max_concurrent: 1}\n    gate: [{name: x, expr: up == 0}]\n")
    assert "rules[0].budget: needs fleet.budget" in p and "rules[0].gate: needs fleet.gate" in p


def test_a_bearer_token_never_goes_over_http():
    p = problems("fleet:\n  gate: {prometheus: 'http://prom:9090', bearer_token_file: /t}\n")
    assert "fleet.gate.bearer_token_file: a bearer token is sent over https only" in p
    load_config_text("fleet:\n  gate: {prometheus: 'https://prom:9090', bearer_token_file: /t}\n")


def test_etcd_credentials_go_together():
    text = BUDGET.replace(
        'etcd: {endpoints: ["http://127.0.0.1:2379"]}', "etcd: {endpoints: ['http://e:2379'], username: u}"
    )
    assert "username and password_file go together" in problems(text)
