"""Staged rollout: a stable share of hosts acts on a rule, the rest dry-run it (issue 22 §3)."""

from __future__ import annotations

from memhp.controller.alert import Alert
from memhp.controller.fleet import rollout
from tests.helpers.controller import journal

HOSTS = [f"node-{i:05d}.dc{i % 7}.example" for i in range(10_000)]


def test_five_percent_of_ten_thousand_hosts_act_and_ten_percent_keeps_them_all():
    at5 = {h for h in HOSTS if rollout.selected(h, "shrink-movable", 5)}
    at10 = {h for h in HOSTS if rollout.selected(h, "shrink-movable", 10)}
    assert 450 <= len(at5) <= 550, len(at5)  # 5% +- 0.5%
    assert 950 <= len(at10) <= 1050, len(at10)
    assert at5 <= at10  # raising the share only adds hosts
    assert all(rollout.selected(h, "shrink-movable", 100) for h in HOSTS[:100])
    assert not any(rollout.selected(h, "shrink-movable", 0) for h in HOSTS)


def test_the_share_is_stable_and_differs_between_rules():
    again = {h for h in HOSTS if rollout.selected(h, "shrink-movable", 5)}
    assert again == {h for h in HOSTS if rollout.bucket(h, "shrink-movable") < 5}
    other = {h for h in HOSTS if rollout.selected(h, "grow-kernel", 5)}
    assert len(again & other) < 100  # not the same canaries for every rule (about 25 expected)


RULES = """\
- name: shrink-movable
  alertname: MemoryPressure
  action: offline
  count: 1
  zone: movable
  rollout: 5%
"""


def _host(inside: bool) -> str:
    return next(h for h in HOSTS if rollout.selected(h, "shrink-movable", 5) == inside)


def alert(fp: str = "f1") -> Alert:
    return Alert("MemoryPressure", "firing", {"alertname": "MemoryPressure"}, fingerprint=fp, starts_at="2024-01-01")


def test_a_host_outside_the_share_journals_would_act_and_counts_it(tree, fleet_engine):
    e = fleet_engine(RULES, {"host": _host(inside=False)})
    out = e.handle(alert())
    assert out.status == "dry_run"
    assert [tree.state(i) for i in range(8, 12)] == ["online"] * 4  # nothing written
    (d,) = journal(e, "dry_run")
    assert d.rule == "shrink-movable" and d.plan and any("rollout" in n for n in d.notes)
    assert not journal(e, "action_start")
    m = e.metrics.registry.get_sample_value
    assert m("memhp_controller_would_act_total", {"rule": "shrink-movable", "reason": "rollout"}) == 1
    assert m("memhp_controller_guard_refusals_total", {"guard": "rollout"}) == 1
    assert m("memhp_controller_rollout_selected", {"rule": "shrink-movable"}) == 0


def test_a_host_inside_the_share_acts(tree, fleet_engine):
    e = fleet_engine(RULES, {"host": _host(inside=True)})
    assert e.handle(alert()).status == "done"
    assert [tree.state(i) for i in range(8, 12)].count("offline") == 1
    assert len(journal(e, "action_start")) == 1
    assert e.metrics.registry.get_sample_value("memhp_controller_rollout_selected", {"rule": "shrink-movable"}) == 1
