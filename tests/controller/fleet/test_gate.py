"""The Prometheus gate against a real Prometheus (issue 22 §2): a check that returns series
refuses, an empty one allows, an unreachable, slow or non-vector answer refuses; each is
journalled and counted."""

from __future__ import annotations

import socket

import pytest

from memhp.controller.alert import Alert
from tests.helpers.controller import journal
from tests.helpers.wait import free_port

pytestmark = [pytest.mark.prometheus]

RULES = """\
- name: shrink
  alertname: MemoryPressure
  action: offline
  count: 1
  zone: movable
  gate:
    - name: too-many-failing
      expr: count(ALERTS{alertname="MemhpControllerActionsFailing", alertstate="firing"}) > 20
"""

# A stand-in for a fleet where the controllers' actions fail: one alert firing at once.
ALERT_RULES = """\
groups:
  - name: fleet
    interval: 1s
    rules:
      - alert: MemhpControllerActionsFailing
        expr: vector(1)
        labels: {severity: warning}
"""

FAILING = 'ALERTS{alertname="MemhpControllerActionsFailing", alertstate="firing"}'


@pytest.fixture
def prom(tmp_path, prometheus_factory):
    rules = tmp_path / "fleet-rules.yml"
    rules.write_text(ALERT_RULES)
    server = prometheus_factory([], [rules], evaluation_interval="1s")
    server.wait_for(lambda: server.query(FAILING), timeout=60, what="the alert firing")
    return server


def alert(fp: str = "f1") -> Alert:
    return Alert("MemoryPressure", "firing", {"alertname": "MemoryPressure"}, fingerprint=fp, starts_at="2024-01-01")


def _gate(url: str, *refuse_when: tuple[str, str]) -> dict:
    return {
        "host": "node-a",
        "gate": {"prometheus": url, "timeout": "2s", "refuse_when": [{"name": n, "expr": x} for n, x in refuse_when]},
    }


def sample(e, name: str, **labels: str) -> float | None:
    return e.metrics.registry.get_sample_value(name, labels)


def test_a_check_returning_series_refuses_naming_it(tree, prom, fleet_engine):
    e = fleet_engine(RULES, _gate(prom.url, ("any-failing", f"{FAILING} == 1")))
    out = e.handle(alert())
    assert (out.status, out.guard) == ("refused", "gate")
    assert [tree.state(i) for i in range(8, 12)] == ["online"] * 4
    (r,) = journal(e, "refusal")
    assert r.guard == "gate" and "any-failing returned 1 series" in r.detail
    assert "MemhpControllerActionsFailing" in r.detail
    assert sample(e, "memhp_controller_gate_checks_total", check="any-failing", result="refuse") == 1
    assert sample(e, "memhp_controller_guard_refusals_total", guard="gate") == 1


def test_empty_checks_allow_the_action(tree, prom, fleet_engine):
    # The fleet's check and the rule's own (more than 20 hosts failing: only one here) return nothing.
    e = fleet_engine(RULES, _gate(prom.url, ("any-paging", 'ALERTS{severity="page"}')))
    assert e.handle(alert()).status == "done"
    assert [tree.state(i) for i in range(8, 12)].count("offline") == 1
    assert sample(e, "memhp_controller_gate_checks_total", check="any-paging", result="pass") == 1
    assert sample(e, "memhp_controller_gate_checks_total", check="too-many-failing", result="pass") == 1


def test_a_scalar_answer_refuses(tree, prom, fleet_engine):
    e = fleet_engine(RULES, _gate(prom.url, ("not-a-vector", "scalar(vector(1))")))
    out = e.handle(alert())
    assert (out.status, out.guard) == ("refused", "gate_unavailable")
    (r,) = journal(e, "refusal")
    assert "not-a-vector" in r.detail and "scalar" in r.detail


def test_an_unreachable_prometheus_refuses(tree, fleet_engine):
    e = fleet_engine(RULES, _gate(f"http://127.0.0.1:{free_port()}"))
    out = e.handle(alert())
    assert (out.status, out.guard) == ("refused", "gate_unavailable")
    (r,) = journal(e, "refusal")
    assert r.guard == "gate_unavailable" and "too-many-failing" in r.detail
    assert sample(e, "memhp_controller_gate_checks_total", check="too-many-failing", result="error") == 1
    assert sample(e, "memhp_controller_guard_refusals_total", guard="gate_unavailable") == 1


def test_a_silent_prometheus_refuses_at_the_timeout(tree, fleet_engine):
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        e = fleet_engine(RULES, _gate(f"http://127.0.0.1:{listener.getsockname()[1]}"))
        out = e.handle(alert())
    assert (out.status, out.guard) == ("refused", "gate_unavailable")
    (r,) = journal(e, "refusal")
    assert "within 2s" in r.detail


def test_a_missing_ca_file_refuses_and_does_not_stop_the_controller(tree, tmp_path, fleet_engine):
    fleet = _gate(f"https://127.0.0.1:{free_port()}")
    fleet["gate"]["ca_file"] = str(tmp_path / "no-such-ca.pem")
    e = fleet_engine(RULES, fleet)
    out = e.handle(alert())
    assert (out.status, out.guard) == ("refused", "gate_unavailable")
    (r,) = journal(e, "refusal")
    assert "fleet.gate.ca_file" in r.detail
