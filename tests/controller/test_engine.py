"""The engine as an AlertSink: queue, worker, dedup, idempotency, robustness."""

from __future__ import annotations

import os
import threading

import pytest

from memhp.controller.alert import Alert, SinkFull, SinkUnavailable
from tests.helpers.controller import standard_layout
from tests.helpers.wait import wait_until

RULES = """\
- name: grow
  alertname: HotAddedMemoryOffline
  matchers: ['severity=~"warning|page"']
  action: online-new
  count: 2
- name: grow-on-resolve
  alertname: CapacityLow
  action: online
  count: 1
  zone: kernel
  on_resolved: true
"""


def alert(
    name="HotAddedMemoryOffline",
    fp="f1",
    starts="2024-01-01T00:00:00.000Z",
    status="firing",
    source="webhook",
    **labels,
):
    return Alert(
        name, status, {"alertname": name, "severity": "page", **labels}, fingerprint=fp, starts_at=starts, source=source
    )


def actions(engine):
    return [r for r in engine.journal.read_all() if r.type == "action_start"]


def test_submitted_alert_acts_through_the_worker(tree, make_engine):
    standard_layout(tree)  # offline 12-15
    e = make_engine(rules=RULES, start=True)
    e.submit([alert()])
    assert e.wait_idle(30)
    assert [tree.state(i) for i in (12, 13, 14)] == ["online", "online", "offline"]
    (a,) = actions(e)
    assert (a.rule, a.fingerprint, a.starts_at, a.source) == (
        "grow",
        "f1",
        "2024-01-01T00:00:00.000Z",
        "webhook",
    )


def test_same_occurrence_never_acts_twice_even_across_restarts(tree, make_engine):
    standard_layout(tree)
    e = make_engine(rules=RULES, start=True)
    e.submit([alert(), alert()])  # a batch with a repeat
    assert e.wait_idle(30)
    e.submit([alert()])  # Alertmanager's repeat_interval
    assert e.wait_idle(30)
    assert len(actions(e)) == 1
    e.close()
    e2 = make_engine(rules=RULES, start=True)
    e2.submit([alert()])
    assert e2.wait_idle(30)
    assert e2.handle(alert()).status == "duplicate"  # also when handed over directly
    assert len(actions(e2)) == 1
    e2.submit([alert(starts="2024-01-02T00:00:00.000Z")])  # a new occurrence of the same alert acts
    assert e2.wait_idle(30)
    assert len(actions(e2)) == 2
    assert e2.metrics.alerts_deduplicated._value.get() >= 1


def test_resolved_alerts_act_only_for_on_resolved_rules(tree, make_engine):
    standard_layout(tree)
    e = make_engine(rules=RULES)
    assert e.handle(alert(status="resolved")) is None  # "grow" acts on firing only
    assert e.handle(alert(name="CapacityLow", fp="c")) is None  # firing: the resolved rule does not match
    out = e.handle(alert(name="CapacityLow", fp="c", status="resolved"))
    assert out.status == "done" and out.results[0].op == "online_kernel"


def test_label_matchers_select_rules(tree, make_engine):
    standard_layout(tree)
    e = make_engine(rules=RULES)
    assert e.handle(Alert("HotAddedMemoryOffline", "firing", {"severity": "info"}, fingerprint="x")) is None
    assert e.handle(alert(fp="y")).status == "done"


def test_garbage_never_crashes_the_loop(tree, make_engine):
    standard_layout(tree)
    e = make_engine(rules=RULES, start=True)
    garbage = [
        None,
        "alert",
        Alert(123, "firing", {}),
        Alert("HotAddedMemoryOffline", "exploded", {}),
        Alert("HotAddedMemoryOffline", "firing", {"a": 1}),
        Alert("HotAddedMemoryOffline", "firing", None),
    ]
    e.submit(garbage)  # must not raise
    e.submit([alert()])
    assert e.wait_idle(30)
    assert len(actions(e)) == 1
    assert e.metrics.registry.get_sample_value(
        "memhp_controller_internal_errors_total", {"where": "invalid_alert"}
    ) == len(garbage)


def test_an_exception_while_handling_is_counted_and_the_worker_goes_on(tree, make_engine, monkeypatch):
    standard_layout(tree)
    e = make_engine(rules=RULES, start=True)
    real = e.executor.execute
    calls = []

    def flaky(req, origin):
        calls.append(origin.fingerprint)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(req, origin)

    monkeypatch.setattr(e.executor, "execute", flaky)
    e.submit([alert(fp="a")])
    e.submit([alert(fp="b")])
    assert e.wait_idle(30)
    assert calls == ["a", "b"] and len(actions(e)) == 1
    assert e.metrics.registry.get_sample_value("memhp_controller_internal_errors_total", {"where": "worker"}) == 1


def test_full_queue_raises_sinkfull_and_enqueues_nothing(tree, tmp_path, make_engine):
    standard_layout(tree)
    fifo = tree.make_state_fifo(12)  # the first action blocks in its write
    e = make_engine(
        rules=RULES.replace("count: 2", "count: 1"),
        retry="attempts: 1\nattempt_timeout: 20s",
        controller="queue_size: 2",
        start=True,
    )
    e.submit([alert(fp="busy")])
    wait_until(lambda: any(r.type == "attempt_start" for r in e.journal.read_all()), 10, desc="worker blocked")
    e.submit([alert(fp="q1"), alert(fp="q2")])
    with pytest.raises(SinkFull):
        e.submit([alert(fp="q3")])
    assert e.metrics.queue_depth._value.get() == 2
    # unblock the writer: a reader on the FIFO lets the child's open+write complete
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert e.wait_idle(60)
    finally:
        os.close(fd)


def test_submit_after_close_is_unavailable(tree, make_engine):
    e = make_engine(rules=RULES, start=True)
    e.close()
    with pytest.raises(SinkUnavailable):
        e.submit([alert()])


def test_submit_does_not_block_on_actions(tree, make_engine):
    standard_layout(tree)
    fifo = tree.make_state_fifo(12)
    e = make_engine(rules=RULES, retry="attempts: 1\nattempt_timeout: 20s", start=True)
    e.submit([alert(fp="slow")])
    wait_until(lambda: any(r.type == "attempt_start" for r in e.journal.read_all()), 10, desc="worker blocked")
    done = threading.Event()
    threading.Thread(target=lambda: (e.submit([alert(fp="other")]), done.set()), daemon=True).start()
    assert done.wait(2), "submit blocked behind a running action"
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert e.wait_idle(60)
    finally:
        os.close(fd)


def test_a_dry_run_plan_is_logged_at_info_with_why_auto_chose_its_zone(tree, make_engine, caplog):
    # Issue 21: a dry-run plan is what the operator asked for, not a warning; and `auto` says why.
    standard_layout(tree)  # offline 12-15
    e = make_engine(rules=RULES, dry_run=True, start=True)
    with caplog.at_level("INFO", logger="memhp.controller"):
        e.submit([alert()])
        assert e.wait_idle(30)
    (rec,) = [r for r in caplog.records if r.getMessage().startswith("dry-run: rule grow")]
    assert rec.levelname == "INFO"
    msg = rec.getMessage()
    assert "memory12:" in msg and "auto chose" in msg and "ceiling" in msg, msg
    assert [tree.state(i) for i in (12, 13)] == ["offline", "offline"]
