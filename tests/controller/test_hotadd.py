"""The event path (issue 23) on a fixture tree: coalescing, address order, zones by the
ratio, guards, another writer winning, failures, and the journal's once-per-addition.

The kernel's side (uevents, real onlining, kill -9 mid-burst) is in
tests/vm/test_event_path_vm.py."""

from __future__ import annotations

import errno
import threading

import pytest

from memhp.controller.hotadd import AddedBlocks, HotAdd, event_rule
from memhp.controller.sources.uevents import UeventSource
from tests.controller.sysfs_tree import ZoneSpec, errno_writer
from tests.helpers.controller import standard_layout
from tests.helpers.wait import wait_until

EVENT_RULE = """\
- name: hot-added
  event: memory-added
  action: online
  zone: {zone}
"""
GUARDS = "max_blocks_per_hour: 1000"


def hot(engine, start: bool = False) -> HotAdd:
    rule = event_rule(engine.cfg)
    assert rule is not None
    h = HotAdd(engine.cfg, rule, engine.paths, engine.executor, engine.guards, engine.metrics, engine.stop_event)
    return h.start() if start else h


def count(engine, result: str) -> float:
    return (
        engine.metrics.registry.get_sample_value("memhp_controller_memory_added_blocks_total", {"result": result}) or 0
    )


def starts(engine) -> list:
    return [r for r in engine.journal.read_all() if r.type == "action_start"]


def test_coalesced_burst_onlined_in_address_order_through_the_journal(tree, make_engine):
    standard_layout(tree, offline=0)
    e = make_engine(rules=EVENT_RULE.format(zone="auto"), guards=GUARDS, controller="event_settle: 100ms")
    h = hot(e, start=True)
    for b in (15, 13, 12, 14):
        tree.add_block(b, "offline", "Movable Normal")
    for b in (15, 13, 12, 14):  # a burst, its uevents out of order
        h.blocks.added(b, None)
    wait_until(lambda: count(e, "onlined") == 4, 30, desc="4 blocks onlined")
    assert [tree.state(b) for b in (12, 13, 14, 15)] == ["online"] * 4
    recs = starts(e)
    assert [(r.rule, r.source, r.plan[0].block) for r in recs] == [("hot-added", "event", b) for b in (12, 13, 14, 15)]
    assert all(r.fingerprint == f"memory-added:memory{r.plan[0].block}" for r in recs)
    assert len({r.starts_at for r in recs}) == 4  # one occurrence per block


def test_auto_goes_to_a_kernel_zone_at_the_ratio_and_movable_is_refused(tree, make_engine):
    standard_layout(tree, normal=4, movable=12, offline=2)  # Movable:Normal 3:1, ratio 301%
    tree.set_zoneinfo(
        [ZoneSpec(0, "Normal", 4 * tree.pages_per_block), ZoneSpec(0, "Movable", 12 * tree.pages_per_block)]
    )
    e = make_engine(rules=EVENT_RULE.format(zone="auto"), guards=GUARDS)
    h = hot(e)
    h.handle_batch([(16, None)])
    assert (tree.state(16), tree.zones(16)) == ("online", "Normal")
    e2 = make_engine(rules=EVENT_RULE.format(zone="movable"), guards=GUARDS)
    h2 = hot(e2)
    h2.handle_batch([(17, None)])
    assert tree.state(17) == "offline"
    assert count(e2, "refused") == 1
    (refusal,) = [r for r in e2.journal.read_all() if r.type == "refusal" and r.rule == "hot-added"]
    assert refusal.guard == "ratio"


def test_another_writer_winning_is_success_and_writes_nothing(tree, make_engine):
    standard_layout(tree, offline=1)
    tree.set_block(12, "online", "Movable")  # a udev rule was faster
    e = make_engine(rules=EVENT_RULE.format(zone="auto"), guards=GUARDS)
    hot(e).handle_batch([(12, 0.0)])
    assert count(e, "already_online") == 1
    assert starts(e) == []


def test_pause_applies(tree, make_engine, tmp_path):
    standard_layout(tree, offline=2)
    e = make_engine(rules=EVENT_RULE.format(zone="auto"), guards=GUARDS)
    (tmp_path / "pause").write_text("")
    hot(e).handle_batch([(12, None)])
    assert tree.state(12) == "offline" and count(e, "refused") == 1


def test_failure_is_retried_within_bounds_then_reported(tree, make_engine):
    standard_layout(tree, offline=1)
    e = make_engine(rules=EVENT_RULE.format(zone="auto"), guards=GUARDS, writer=errno_writer(errno.EBUSY))
    hot(e).handle_batch([(12, None)])
    assert tree.state(12) == "offline" and count(e, "failed") == 1
    ends = [r for r in e.journal.read_all() if r.type == "attempt_end" and r.block == 12]
    assert len(ends) == 3 and all(r.errno_name == "EBUSY" for r in ends)  # retry.attempts


def test_once_per_addition_across_restarts_and_again_after_a_re_add(tree, make_engine):
    standard_layout(tree, offline=2)
    e = make_engine(rules=EVENT_RULE.format(zone="auto"), guards=GUARDS, controller="event_settle: 0s")
    h = hot(e)
    h.rescan("start")  # what the source asks for when it starts listening: both offline blocks
    _, due = h.blocks.wait(threading.Event(), 0.0)
    assert [b for b, _ in due] == [12, 13]
    h.handle_batch(due)
    assert [tree.state(b) for b in (12, 13)] == ["online", "online"]
    e.close()
    # An operator offlines 12 by hand; a restarted controller must not take it as new.
    tree.set_block(12, "offline", "Movable Normal")
    e2 = make_engine(rules=EVENT_RULE.format(zone="auto"), guards=GUARDS, controller="event_settle: 0s")
    h2 = hot(e2)
    h2.rescan("start")
    assert len(h2.blocks) == 0
    h2.handle_batch([(12, None)])  # even a uevent for it: the journal has this addition
    assert tree.state(12) == "offline" and count(e2, "duplicate") == 1
    # Removed and added again: a new directory, a new occurrence.  (kernfs numbers inodes
    # cyclically; the old directory is kept aside so this file system cannot reuse its inode.)
    tree.block_dir(12).rename(tree.root / "removed-memory12")
    (tree.node_dir / "node0" / "memory12").unlink()
    tree.add_block(12, "offline", "Movable Normal")
    h2.handle_batch([(12, None)])
    assert tree.state(12) == "online" and count(e2, "onlined") == 1


def test_added_blocks_coalesce_until_settled():
    t = [100.0]
    q = AddedBlocks(0.5, clock=lambda: t[0])
    stop = threading.Event()
    q.added(7, 100.0)
    q.added(3, 100.1)
    assert q.wait(stop, 0.0) == ("", [])
    t[0] = 100.55
    assert q.wait(stop, 0.0) == ("", [(7, 100.0)])
    q.added(5, 100.2)
    q.removed(3)
    t[0] = 101.0
    assert q.wait(stop, 0.0) == ("", [(5, 100.2)])
    q.rescan("overrun")
    assert q.wait(stop, 0.0) == ("overrun", [])


class _Sink:
    def __init__(self) -> None:
        self.calls: list = []

    def added(self, block, at):
        self.calls.append(("add", block))

    def removed(self, block):
        self.calls.append(("remove", block))

    def rescan(self, why):
        self.calls.append(("rescan", why))


def test_uevent_source_listens_and_rescans_first(make_engine):
    """The real netlink monitor (kernel source) on this machine: it starts, asks for a
    rescan before any event, and maps memory uevents to the sink."""
    e = make_engine()
    sink = _Sink()
    src = UeventSource(sink, e.metrics, clock=lambda: 1.0, poll_timeout=0.1).start()
    try:
        wait_until(lambda: ("rescan", "start") in sink.calls, 30, desc="the first rescan")
        assert e.metrics.registry.get_sample_value("memhp_controller_event_source_up") == 1
    finally:
        src.stop()
    src._handle("add", "memory42")
    src._handle("remove", "memory42")
    src._handle("add", "cpu3")
    assert sink.calls[-2:] == [("add", 42), ("remove", 42)]


def test_a_block_not_yet_linked_to_its_node_waits_instead_of_being_refused(tree, make_engine):
    """The add uevent precedes the node link; valid_zones is not read before it (a kernel
    oops on Debian 6.1), so the block is looked at again rather than planned or refused."""
    standard_layout(tree, offline=0)
    e = make_engine(rules=EVENT_RULE.format(zone="auto"), guards=GUARDS, controller="event_settle: 0s")
    tree.add_block(12, "offline", "Movable Normal")
    link = tree.block_dir(12) / "node0"
    link.unlink()
    h = hot(e, start=True)
    h.blocks.added(12, None)
    wait_until(lambda: h._not_ready.get(12, 0) >= 3, 30, desc="several looks at the unlinked block")
    assert tree.state(12) == "offline" and count(e, "refused") == 0
    link.symlink_to("../../node/node0")
    wait_until(lambda: count(e, "onlined") == 1, 30, desc="memory12 onlined once linked")
    assert tree.state(12) == "online"


def test_deploy_example_event_rule_is_off_and_loads_once_uncommented():
    from pathlib import Path

    from memhp.controller.config import load_config_text

    text = (Path(__file__).resolve().parents[2] / "deploy/systemd/controller.yml").read_text()
    assert event_rule(load_config_text(text)) is None  # off by default
    on = text.replace("  # - name: online-hot-added", "  - name: online-hot-added")
    for key in ("event: memory-added", "action: online", "zone: auto"):
        on = on.replace(f"  #   {key}\n", f"    {key}\n")
    rule = event_rule(load_config_text(on))
    assert rule is not None and (rule.name, rule.zone) == ("online-hot-added", "auto")


@pytest.mark.parametrize("killed", ["mid-write", "before-the-write"])
def test_a_write_interrupted_before_it_took_is_done_once_after_the_restart(tree, make_engine, killed):
    """kill -9 mid-write (reconciled not_applied) or between the action's start and its write
    (the action reconciled): the block is still offline, and the restarted event path onlines
    it under an occurrence of its own, once."""
    from memhp.controller.records import ActionStart, Reconcile, ReconcileAction
    from memhp.controller.vocab import Op, Outcome

    standard_layout(tree, offline=1)
    e = make_engine(rules=EVENT_RULE.format(zone="auto"), guards=GUARDS, controller="event_settle: 0s")
    occ = hot(e)._occurrence(12)
    e.journal.append(
        ActionStart(action_id="a1", rule="hot-added", fingerprint=occ[0], starts_at=occ[1], source="event")
    )
    if killed == "before-the-write":
        e.journal.append(ReconcileAction(action_id="a1", rule="hot-added", fingerprint=occ[0], starts_at=occ[1]))
    else:
        e.journal.append(
            Reconcile(
                action_id="a1",
                rule="hot-added",
                block=12,
                op=Op.ONLINE_MOVABLE,
                attempt=1,
                fingerprint=occ[0],
                starts_at=occ[1],
                outcome=Outcome.NOT_APPLIED,
            )
        )
    e.close()
    e2 = make_engine(rules=EVENT_RULE.format(zone="auto"), guards=GUARDS, controller="event_settle: 0s")
    h = hot(e2)
    h.rescan("start")
    _, due = h.blocks.wait(threading.Event(), 0.0)
    assert [b for b, _ in due] == [12]
    h.handle_batch(due)
    assert tree.state(12) == "online" and count(e2, "onlined") == 1
    h.rescan("again")  # done now: not a third time
    assert len(h.blocks) == 0
