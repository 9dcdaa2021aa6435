"""Every guard, proven to refuse, counted in metrics and journalled."""

from __future__ import annotations

import errno
import hashlib
import os

from memhp.controller.alert import Alert
from memhp.controller.guards import Occurrence
from memhp.controller.policy import Request
from tests.controller.sysfs_tree import errno_writer
from tests.helpers.controller import standard_layout


def refusals(engine, guard):
    return engine.metrics.registry.get_sample_value("memhp_controller_guard_refusals_total", {"guard": guard}) or 0


def journal(engine, type_=None):
    return [r for r in engine.journal.read_all() if type_ is None or r.type == type_]


def tree_digest(tree) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(tree.root)):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            h.update(p.encode() + b"\0" + open(p, "rb").read())
    return h.hexdigest()


def alert(name="MemoryPressure", fp="f1", starts="2024-01-01T00:00:00.000Z", status="firing", **labels):
    return Alert(name, status, {"alertname": name, **labels}, fingerprint=fp, starts_at=starts)


def test_pause_file_refuses_and_changes_nothing(tree, tmp_path, make_engine):
    standard_layout(tree)
    e = make_engine()
    (tmp_path / "pause").touch()
    out = e.run_manual(Request("offline", count=1))
    assert (out.status, out.guard) == ("refused", "paused")
    assert tree.state(11) == "online"
    assert refusals(e, "paused") == 1 and e.metrics.paused._value.get() == 1
    (r,) = journal(e, "refusal")
    assert r.guard == "paused" and r.rule == "act"
    (tmp_path / "pause").unlink()
    assert e.run_manual(Request("offline", count=1)).status == "done"


def test_dry_run_changes_nothing_and_journals_the_plan(tree, make_engine):
    standard_layout(tree)
    before = tree_digest(tree)
    e = make_engine(dry_run=True)
    out = e.run_manual(Request("offline", count=2))
    assert out.status == "dry_run" and out.plan.blocks == [11, 10]
    assert tree_digest(tree) == before
    (d,) = journal(e, "dry_run")
    assert d.to_json()["plan"] == [{"block": 11, "ops": ["offline"]}, {"block": 10, "ops": ["offline"]}]
    assert not journal(e, "attempt_start") and not journal(e, "action_start")
    assert refusals(e, "dry_run") == 1 and e.metrics.dry_run._value.get() == 1


def test_dry_run_from_the_config_file(tree, make_engine):
    standard_layout(tree)
    before = tree_digest(tree)
    e = make_engine(
        guards="dry_run: true",
        rules="""\
        - name: r
          alertname: MemoryPressure
          action: online-new
          count: 2
        """,
    )
    assert e.handle(alert()).status == "dry_run"
    assert tree_digest(tree) == before
    # a dry-run does not consume the occurrence: the same alert acts once dry-run is off
    assert not e.guards.already_acted(Occurrence("f1", "2024-01-01T00:00:00.000Z", False))


def test_an_occurrence_that_acted_is_remembered_by_name(tree, make_engine):
    standard_layout(tree)
    e = make_engine(
        rules="""\
        - name: r
          alertname: MemoryPressure
          action: online-new
          count: 1
        """,
    )
    assert e.handle(alert(fp="f9")).status == "done"
    (acted,) = e.guards.state.acted
    assert (acted.fingerprint, acted.starts_at, acted.resolved) == ("f9", "2024-01-01T00:00:00.000Z", False)
    assert e.guards.already_acted(Occurrence("f9", "2024-01-01T00:00:00.000Z", False))
    assert not e.guards.already_acted(acted._replace(resolved=True))  # the resolution is another occurrence


def test_cooldown_per_rule(tree, make_engine, clock):
    standard_layout(tree)
    e = make_engine(
        rules="""\
        - name: shrink
          alertname: MemoryPressure
          action: offline
          count: 1
          cooldown: 10m
        """
    )
    assert e.handle(alert(fp="a")).status == "done"
    out = e.handle(alert(fp="b"))
    assert (out.status, out.guard) == ("refused", "cooldown")
    assert tree.state(10) == "online"
    clock.advance(601)
    assert e.handle(alert(fp="b")).status == "done" and tree.state(10) == "offline"


def test_per_action_cap(tree, make_engine):
    standard_layout(tree)
    e = make_engine(guards="max_blocks_per_action: 2")
    out = e.run_manual(Request("offline", count=3, max_blocks=2))
    assert (out.status, out.guard) == ("refused", "max_blocks_per_action")
    out = e.run_manual(Request("online", blocks=(12, 13, 14), max_blocks=2))
    assert out.guard == "max_blocks_per_action"
    assert refusals(e, "max_blocks_per_action") == 2


def test_hourly_cap_is_a_sliding_window_that_survives_restart(tree, make_engine, clock):
    standard_layout(tree)
    e = make_engine(guards="max_blocks_per_hour: 3")
    assert e.run_manual(Request("offline", count=2)).status == "done"  # 11, 10
    out = e.run_manual(Request("offline", count=2))
    assert (out.status, out.guard) == ("refused", "max_blocks_per_hour")
    assert "1 left of 3" in out.detail
    e.close()
    e2 = make_engine(guards="max_blocks_per_hour: 3")  # rebuilt from the journal
    assert e2.run_manual(Request("offline", count=2)).guard == "max_blocks_per_hour"
    assert e2.run_manual(Request("offline", count=1)).status == "done"  # the last one of the hour
    clock.advance(1800)
    assert e2.run_manual(Request("online", count=1)).guard == "max_blocks_per_hour"
    clock.advance(1801)  # the first two changes are now more than an hour old
    assert e2.run_manual(Request("online", count=2)).status == "done"


def test_block_quarantined_after_repeated_failures_until_it_expires(tree, make_engine, clock):
    standard_layout(tree)
    guards = """\
        quarantine:
          after_failures: 2
          duration: 10m
        """
    e = make_engine(guards=guards, retry="attempts: 2", writer=errno_writer(errno.EBUSY))
    for _ in range(2):
        out = e.run_manual(Request("offline", blocks=(11,)))
        assert out.status == "failed" and out.results[0].attempts == 2
    assert e.guards.quarantined() == {11}
    assert e.metrics.quarantined_blocks._value.get() == 1
    (q,) = journal(e, "quarantine")
    assert q.block == 11 and q.until == clock() + 600
    out = e.run_manual(Request("offline", blocks=(11,)))
    assert (out.status, out.guard) == ("refused", "quarantine")
    # exactly 2 actions x 2 attempts were made, none after quarantine
    assert len(journal(e, "attempt_start")) == 4
    e.close()
    e2 = make_engine(guards=guards, retry="attempts: 2")  # quarantine survives restart
    assert e2.run_manual(Request("offline", blocks=(11,))).guard == "quarantine"
    p = e2.run_manual(Request("offline", count=1))  # planned targets skip it
    assert p.status == "done" and p.plan.blocks == [10]
    clock.advance(601)
    assert e2.run_manual(Request("offline", blocks=(11,))).status == "done"


def test_success_resets_the_failure_count(tree, make_engine):
    standard_layout(tree)
    e = make_engine(guards="quarantine: {after_failures: 2}", retry="attempts: 1", writer=errno_writer(errno.EBUSY))
    assert e.run_manual(Request("offline", blocks=(11,))).status == "failed"
    tree.set_block(11, "offline", "Movable Normal")  # someone else succeeded
    assert e.run_manual(Request("offline", blocks=(11,))).status == "done"  # "already": a success
    tree.set_block(11, "online", "Movable")
    assert e.run_manual(Request("offline", blocks=(11,))).status == "failed"
    assert e.guards.quarantined() == frozenset()


def test_empty_target_is_an_error_not_a_no_op(tree, make_engine):
    standard_layout(tree, offline=0)
    e = make_engine()
    out = e.run_manual(Request("online", count=1))
    assert (out.status, out.guard) == ("refused", "empty_target")
    assert refusals(e, "empty_target") == 1


def test_node_label_missing_refuses_instead_of_acting_everywhere(tree, make_engine):
    standard_layout(tree)
    e = make_engine(
        rules="""\
        - name: per-node
          alertname: MemoryPressure
          action: offline
          count: 1
          node_label: node
        """
    )
    assert e.handle(alert(fp="x")).guard == "node_label"
    assert e.handle(alert(fp="y", node="zero")).guard == "node_label"
    assert tree.state(11) == "online"
    assert e.handle(alert(fp="z", node="0")).status == "done"


def test_reserve_and_ratio_refusals_are_counted(tree, make_engine):
    standard_layout(tree, normal=2, movable=6, offline=2)
    tree.set_meminfo(mem_available=300 << 20)
    e = make_engine()
    assert e.run_manual(Request("offline", count=1, min_available=256 << 20)).guard == "reserve"
    assert e.run_manual(Request("online", count=1, zone="movable")).guard == "ratio"
    assert refusals(e, "reserve") == 1 and refusals(e, "ratio") == 1
    assert {r.guard for r in journal(e, "refusal")} == {"reserve", "ratio"}


def test_refusal_journalled_once_per_occurrence_but_counted_each_time(tree, tmp_path, make_engine):
    standard_layout(tree)
    e = make_engine(
        rules="""\
        - name: r
          alertname: MemoryPressure
          action: offline
          count: 1
        """
    )
    (tmp_path / "pause").touch()
    for _ in range(3):
        assert e.handle(alert()).guard == "paused"
    assert refusals(e, "paused") == 3 and len(journal(e, "refusal")) == 1
