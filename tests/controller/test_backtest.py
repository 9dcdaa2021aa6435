"""The backtest's decisions (issue 22 §4) on events and node states given here:
every guard the past can decide, the rollout and the fleet budget, in time
order.  The queries that build events and states from Prometheus are checked
against real servers in test_backtest_reality.py and tests/report/test_backtest_report.py."""

from __future__ import annotations

import textwrap

import pytest

from memhp.controller.backtest.model import Event, HostState, NodeState
from memhp.controller.backtest.simulate import Simulator
from memhp.controller.backtest.summary import Tally, fleet_summary
from memhp.controller.config import load_config_text
from memhp.controller.fleet.rollout import selected

GiB = 1 << 30
MiB = 1 << 20


def policy(rules: str, guards: str = "", fleet: str = ""):
    text = textwrap.dedent(guards) + textwrap.dedent(fleet) + "rules:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    return load_config_text(text)


def state(movable_blocks: int = 8, offline_blocks: int = 4, avail: float = 8 * GiB) -> HostState:
    s = HostState(mem_available=avail, block_size=128 * MiB, auto_movable_ratio=3.01)
    s.nodes[0] = NodeState(
        hot_unpluggable=movable_blocks * 128 * MiB,
        offline=offline_blocks * 128 * MiB,
        kernel_online=8 * GiB,
        movable_accounted=movable_blocks * 128 * MiB,
        kernel_accounted=8 * GiB,
    )
    return s


def ev(at: float, host: str = "h1", alert: str = "A", **labels: str) -> Event:
    lb = tuple(sorted({"alertname": alert, "instance": host, **labels}.items()))
    return Event(at, at, host, alert, lb)


SHED = """
- name: shed
  alertname: A
  action: offline
  count: 1
"""


def run(cfg, events, st=None, duration: float = 30.0):
    sim = Simulator(cfg, duration)
    return sim, list(sim.run(events, lambda e: st if st is not None else state()))


def test_cooldown_and_hourly_cap_refuse_as_the_guards_do():
    cfg = policy(SHED, guards="guards:\n  cooldown: 10m\n  max_blocks_per_hour: 2\n")
    _, ds = run(cfg, [ev(0), ev(60), ev(700), ev(1400), ev(4000)])
    assert [(d.outcome, d.guard) for d in ds] == [
        ("act", ""),
        ("refused", "cooldown"),
        ("act", ""),
        ("refused", "max_blocks_per_hour"),  # 2 blocks in the hour since 0 and 700
        ("act", ""),  # the block of t=0 left the sliding hour
    ]


def test_plan_refusals_from_node_state():
    cfg = policy(SHED)
    _, ds = run(cfg, [ev(0)], state(movable_blocks=0))
    assert (ds[0].outcome, ds[0].guard) == ("refused", "empty_target")
    _, ds = run(cfg, [ev(0)], state(avail=600 * MiB))  # reserve 512M: less than one block above it
    assert (ds[0].outcome, ds[0].guard) == ("refused", "reserve")
    sim = Simulator(cfg)
    assert [d.guard for d in sim.run([ev(0)], lambda e: None)] == ["state_unknown"]


def test_online_to_movable_refused_above_the_ratio():
    cfg = policy("- {name: grow, alertname: A, action: online, count: 2, zone: movable}\n")
    _, ds = run(cfg, [ev(0)], state(movable_blocks=8 * 8 * 3))  # 24 GiB movable over 8 GiB kernel: 3:1
    assert (ds[0].outcome, ds[0].guard) == ("refused", "ratio")
    _, ds = run(cfg, [ev(0)], state(movable_blocks=8))
    assert (ds[0].outcome, ds[0].blocks) == ("act", 2)


def test_rules_match_labels_and_resolution_and_node_label():
    cfg = policy(
        """
        - {name: crit, alertname: A, action: offline, count: 1, matchers: ['severity="critical"'], node_label: node}
        - {name: back, alertname: A, action: online, count: 1, on_resolved: true}
        """
    )
    sim, ds = run(
        cfg,
        [
            ev(0, severity="warning"),
            ev(1, "h2", severity="critical", node="0"),
            ev(2, "h3", severity="critical"),
            Event(3, 3, "h1", "A", (("alertname", "A"),), resolved=True),
        ],
    )
    assert [(d.host, d.rule, d.outcome, d.guard) for d in ds] == [
        ("h2", "crit", "act", ""),
        ("h3", "crit", "refused", "node_label"),
        ("h1", "back", "act", ""),
    ]


def test_fleet_budget_limits_concurrency_waits_and_refuses():
    fleet = """
    fleet:
      budget:
        etcd: {endpoints: ["http://127.0.0.1:2379"]}
        max_concurrent: 3
        wait: 60s
    """
    cfg = policy(SHED, fleet=fleet)
    events = [ev(0, f"h{i}") for i in range(10)]
    sim, ds = run(cfg, events, duration=30)
    acted = [d for d in ds if d.outcome == "act"]
    # 3 at 0, 3 at 30 (after waiting), 3 at 60 (waited exactly fleet.budget.wait); the 10th is refused
    assert sorted(d.at for d in acted) == [0, 0, 0, 30, 30, 30, 60, 60, 60]
    assert [d.guard for d in ds if d.outcome == "refused"] == ["budget"]
    assert sim.peak == 3
    tally = Tally(events=len(events))
    for d in ds:
        tally.add(d)
    for h in sorted(tally.hosts):
        tally.finish_host(tally.hosts.pop(h))
    s = fleet_summary(tally, sim, [], {})
    assert (s["actions"], s["refusals_by_guard"], s["peak_concurrent_actions"]) == (9, {"budget": 1}, 3)
    assert any("kernel refusals" in x for x in s["cannot_know"])


def test_rule_budget_per_hour():
    rules = SHED + "  budget: {max_actions_per_hour: 4}\n"
    fleet = "fleet:\n  budget: {etcd: {endpoints: ['http://127.0.0.1:2379']}, max_concurrent: 100}\n"
    cfg = policy(rules, fleet=fleet)
    _, ds = run(cfg, [ev(i * 60, f"h{i}") for i in range(6)] + [ev(3700, "h9")])
    assert [d.outcome for d in ds] == ["act"] * 4 + ["refused"] * 2 + ["act"]


def test_peak_without_a_budget_is_reported():
    sim, _ = run(policy(SHED), [ev(i, f"h{i}") for i in range(50)], duration=30)
    assert sim.peak == 30  # actions started at 0..29 all run at t=29; the one at 30 follows the first's end


def test_rollout_selects_only_its_hosts_and_the_rest_dry_run():
    cfg = policy(SHED + "  rollout: 10%\n")
    hosts = [f"node{i:05d}" for i in range(2000)]
    _, ds = run(cfg, [ev(0, h) for h in hosts])
    acting = {d.host for d in ds if d.outcome == "act"}
    assert acting == {h for h in hosts if selected(h, "shed", 10)}
    assert {d.guard for d in ds if d.outcome == "dry_run"} == {"rollout"}
    assert 150 <= len(acting) <= 250


def test_rollout_hash_is_stable_and_monotone():
    hosts = [f"host{i:05d}" for i in range(10_000)]
    five = {h for h in hosts if selected(h, "r", 5)}
    ten = {h for h in hosts if selected(h, "r", 10)}
    assert 450 <= len(five) <= 550
    assert five <= ten
    assert not any(selected(h, "r", 0) for h in hosts) and all(selected(h, "r", 100) for h in hosts)


@pytest.mark.parametrize("dry", [True])
def test_guards_dry_run_only_dry_runs(dry):
    cfg = policy(SHED, guards=f"guards:\n  dry_run: {str(dry).lower()}\n")
    _, ds = run(cfg, [ev(0), ev(1)])
    assert [(d.outcome, d.guard) for d in ds] == [("dry_run", "dry_run"), ("dry_run", "dry_run")]


def test_every_backtest_flag_is_documented():
    import argparse
    from pathlib import Path

    from memhp.controller.cli import get_parser

    sub = next(a for a in get_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {o for a in sub.choices["backtest"]._actions for o in a.option_strings if o.startswith("--")}
    doc = (Path(__file__).resolve().parents[2] / "docs" / "controller.md").read_text()
    section = doc[doc.index("## The `backtest` command") : doc.index("## Command line")]
    common = {"--help", "--config.file", "--path.sysfs", "--path.procfs", "--journal.path", "--dry-run"}
    common |= {"--log.level", "--log.format", "--version"}  # every command's (README, "Conventions")
    assert {f for f in flags - common if f"`{f}" not in section} == set()


@pytest.mark.parametrize(
    "args",
    [
        ["--host-label", 'instance"} or vector(1) #'],
        ["--assume.action-duration", "2d"],
        ["--step", "0s"],
        ["--range", "x"],
    ],
)
def test_bad_arguments_are_refused_before_any_query(args, capsys):
    from memhp.controller.cli import main

    assert main(["backtest", "--prometheus", "http://127.0.0.1:1", *args]) == 2
    err = capsys.readouterr().err
    assert "memhp-controller backtest:" in err and "Traceback" not in err


def test_budget_never_exceeds_max_concurrent_when_waits_run_out():
    fleet = """
    fleet:
      budget:
        etcd: {endpoints: ["http://127.0.0.1:2379"]}
        max_concurrent: 20
        wait: 5m
    """
    sim, ds = run(policy(SHED, fleet=fleet), [ev(0, f"h{i}") for i in range(250)], duration=30)
    assert sim.peak == 20
    acted = [d for d in ds if d.outcome == "act"]
    assert len(acted) == 220  # rounds at 0, 30, ..., 300: a slot within fleet.budget.wait
    assert all(sum(1 for d in acted if d.at <= t < d.at + 30) <= 20 for t in range(0, 400, 5))
