"""What a sender controls is bounded: journal growth, memory, CPU per request, node labels."""

from __future__ import annotations

import os

import pytest

from memhp.controller.alert import Alert, SinkFull
from memhp.controller.config import RetryConfig
from memhp.controller.records import MAX_ID
from memhp.controller.vocab import AttemptResult, Status
from tests.helpers.controller import standard_layout

RULES = """\
- name: shrink
  alertname: TooMuchMemory
  action: offline
  count: 1
  cooldown: 0s
- name: per-node
  alertname: NodeTooMuchMemory
  action: offline
  count: 1
  node_label: node
  cooldown: 0s
"""


def alert(fp: str, name: str = "TooMuchMemory", starts: str = "2026-01-01T00:00:00.000Z", **labels) -> Alert:
    return Alert(name, "firing", {"alertname": name, **labels}, fingerprint=fp, starts_at=starts)


def test_refusal_flood_with_huge_fingerprints_bounds_journal_and_memory(tree, tmp_path, make_engine):
    standard_layout(tree)
    (tmp_path / "pause").touch()  # every action is refused by the pause guard
    e = make_engine(rules=RULES)
    size0 = os.path.getsize(e.journal.path)
    for i in range(2000):
        out = e.handle(alert(f"{i:05d}" + "f" * 65000))
        assert out.status == Status.REFUSED and out.guard == "paused"
    grew = os.path.getsize(e.journal.path) - size0
    assert grew < 4096, f"2000 refusals grew the journal by {grew} bytes"
    assert e.metrics.guard_refusals.labels("paused")._value.get() == 2000
    assert e.metrics.refusals_unjournalled._value.get() == 1999
    assert len(e.guards._last_refusal) == 1
    (rec,) = [r for r in e.journal.read_all() if r.type == "refusal"]
    assert len(rec.fingerprint) <= MAX_ID and len(rec.starts_at) <= MAX_ID


def test_long_fingerprints_stay_distinct_and_bounded(tree, make_engine):
    standard_layout(tree)
    e = make_engine(rules=RULES)
    a, b = alert("x" * 10000 + "a"), alert("x" * 10000 + "b")
    assert e.handle(a).status == Status.DONE
    assert e.handle(b).status == Status.DONE  # a shared prefix is not the same occurrence
    assert e.handle(a).status == Status.DUPLICATE
    assert all(len(k[0]) <= MAX_ID for k in e.guards.state.acted)


def test_submit_checks_capacity_first_and_stops_at_the_queue_size(tree, make_engine, monkeypatch):
    """8,000 matching alerts used 23 s of CPU in a quadratic loop, then got 429 anyway."""
    standard_layout(tree)
    e = make_engine(rules=RULES, controller="queue_size: 16")
    e._accepting = True  # accepting, but no worker: the queue only fills
    examined = []
    real_match = e.match
    monkeypatch.setattr(e, "match", lambda a: examined.append(a) or real_match(a))
    with pytest.raises(SinkFull):
        e.submit([alert(f"f{i}") for i in range(8000)])
    assert len(examined) <= 17  # stops as soon as the batch cannot fit
    e.submit([alert(f"g{i}") for i in range(16)])  # fits exactly
    examined.clear()
    with pytest.raises(SinkFull):
        e.submit([alert("h")])
    assert examined == []  # a full queue costs the sender nothing
    # duplicates within one batch are dropped in one pass
    e2_dups = [alert("same") for _ in range(8000)]
    e._queue = type(e._queue)()
    e._pending.clear()
    e.submit(e2_dups)
    assert e._queue.qsize() == 1


@pytest.mark.parametrize("label", ["𝟎", "٠", "²", "0" * 50, "-1", " 0", "0x0", ""])
def test_node_label_must_be_ascii_digits(tree, make_engine, label):
    standard_layout(tree)
    e = make_engine(rules=RULES)
    before = [tree.state(i) for i in range(12)]
    out = e.handle(alert("n", name="NodeTooMuchMemory", node=label))
    assert out.status == Status.REFUSED and out.guard == "node_label"
    assert [tree.state(i) for i in range(12)] == before


def test_ascii_node_label_acts_on_that_node(tree, make_engine):
    standard_layout(tree)
    e = make_engine(rules=RULES)
    assert e.handle(alert("n", name="NodeTooMuchMemory", node="0")).status == Status.DONE


def test_a_failure_after_the_write_still_journals_the_outcome(tree, tmp_path):
    """attempt_timeout .inf used to fork the writer (the block was written), then die in OverflowError,
    leaving only action_start and attempt_start in the journal."""
    from memhp.controller.actuator import ActionContext, Actuator
    from memhp.controller.journal import Journal
    from memhp.controller.metrics import ControllerMetrics
    from tests.controller.sysfs_tree import kernel_writer

    tree.add_block(5, "online", "Movable")
    retry = RetryConfig(attempts=1, attempt_timeout=float("inf"), kill_grace=0.5, total_timeout=1e300)
    j = Journal(str(tmp_path / "j.jsonl")).open()
    act = Actuator(tree.paths, retry, j, ControllerMetrics(), writer=kernel_writer)
    res = act.change(5, "offline", ActionContext("a1", "r", "offline"))
    kinds = [r.type for r in j.read_all()]
    assert kinds == ["attempt_start", "attempt_end", "block_result"]
    end = next(r for r in j.read_all() if r.type == "attempt_end")
    assert end.result in (AttemptResult.OK, AttemptResult.ERROR)
    assert res.state_after == tree.state(5)  # the record says what the block really is
