"""Journal history: bad lines quarantined, old journals still load, rotation keeps what the guards need."""

from __future__ import annotations

import json
import os
import resource

from memhp.controller.alert import Alert
from memhp.controller.journal import Journal
from memhp.controller.records import StateActed
from memhp.controller.vocab import Status
from tests.helpers.controller import standard_layout

RULES = """\
- name: shrink
  alertname: TooMuchMemory
  action: offline
  count: 1
  cooldown: 0s
"""


def alert(fp: str, starts: str = "2026-01-01T00:00:00.000Z", status: str = "firing") -> Alert:
    return Alert("TooMuchMemory", status, {"alertname": "TooMuchMemory"}, fingerprint=fp, starts_at=starts)


def test_valid_json_with_wrong_types_is_quarantined_counted_and_start_up_goes_on(tree, tmp_path, make_engine, clock):
    standard_layout(tree)
    journal = tmp_path / "journal.jsonl"
    good = {"ts": clock(), "pid": 1, "type": "action_start", "action_id": "a1", "rule": "shrink", "action": "offline"}
    good.update(fingerprint="seen", starts_at="2026-01-01T00:00:00.000Z")
    bad = [
        {**good, "ts": "yesterday"},
        {**good, "action_id": ["a", "list"]},
        {"ts": 1, "pid": 1, "type": "block_result", "action_id": "x", "block": "11", "op": "offline", "result": "ok"},
        {"ts": 1, "pid": 1, "type": "quarantine", "block": 3, "until": 1e400},
        {"ts": 1, "pid": 1, "type": "no_such_kind"},
        [1, 2, 3],
        "a string",
    ]
    lines = [json.dumps(good)] + [json.dumps(b) for b in bad] + ["{" * 100000, "x" * 70000]
    journal.write_text("\n".join(lines) + "\n")
    e = make_engine(rules=RULES)  # no traceback: starts
    assert e.metrics.journal_invalid_records._value.get() == len(bad) + 2
    assert e.guards.already_acted(("seen", "2026-01-01T00:00:00.000Z", False))
    assert e.guards.quarantined() == frozenset()
    raw = journal.read_text().splitlines()
    assert raw[: len(lines)] == lines  # kept in the file, untouched
    assert e.handle(alert("new")).status == Status.DONE


def test_journals_from_before_the_resolved_field_still_load(tree, tmp_path, make_engine, clock):
    standard_layout(tree)
    journal = tmp_path / "journal.jsonl"
    old = {"ts": clock(), "pid": 1, "type": "action_start", "action_id": "a1", "rule": "r", "action": "offline"}
    journal.write_text(json.dumps({**old, "fingerprint": "f", "starts_at": "2026-01-01T00:00:00.000Z/resolved"}) + "\n")
    e = make_engine(rules=RULES.replace("cooldown: 0s", "cooldown: 0s\n  on_resolved: true"))
    assert e.guards.already_acted(("f", "2026-01-01T00:00:00.000Z", True))
    assert e.handle(alert("f", status="resolved")).status == Status.DUPLICATE
    (rec,) = [r for r in e.journal.read_all() if r.type == "action_start"]
    assert rec.starts_at == "2026-01-01T00:00:00.000Z" and rec.resolved


def test_rotation_by_size_keeps_idempotency_cooldown_hourly_cap_and_quarantine(tree, tmp_path, make_engine, clock):
    standard_layout(tree, movable=40)
    journal = tmp_path / "journal.jsonl"
    ctl = "journal_max_size: 64K\njournal_keep: 2"
    guards = "max_blocks_per_hour: 30\nmax_blocks_per_action: 8"
    e = make_engine(rules=RULES, controller=ctl, guards=guards)
    e.guards.state.quarantined_until[3] = clock() + 3600  # as if journalled: carried by the rotation
    e.guards.state.last_action["other-rule"] = clock()
    for i in range(25):
        assert e.handle(alert(f"fp{i}")).status == Status.DONE
        clock.advance(1)
        for _ in range(40):  # refusals of other rules fill the journal: rotation by size
            e.guards.refuse("paused", "p" * 900, rule=f"r{_}", action=e.cfg.rules[0].action, source="manual")
    assert e.metrics.journal_rotations._value.get() >= 2
    assert os.path.getsize(journal) <= 2 * 64 * 1024
    assert os.path.exists(f"{journal}.1") and not os.path.exists(f"{journal}.3")
    e.close()
    e2 = make_engine(rules=RULES, controller=ctl, guards=guards)  # restart on the rotated journal
    for i in range(25):
        assert e2.guards.already_acted((f"fp{i}", "2026-01-01T00:00:00.000Z", False)), i
        assert e2.handle(alert(f"fp{i}")).status == Status.DUPLICATE
    assert e2.guards.hourly_budget() == 5
    assert 3 in e2.guards.quarantined()
    assert "other-rule" in e2.guards.state.last_action
    out = e2.handle(alert("fp-new"))
    assert out.status == Status.DONE
    assert e2.handle(alert("fp-new2")).status == Status.DONE
    assert e2.handle(alert("fp-new3")).status == Status.DONE
    assert e2.handle(alert("fp-new4")).status == Status.DONE
    assert e2.handle(alert("fp-new5")).status == Status.DONE
    last = e2.handle(alert("fp-new6"))
    assert last.status == Status.REFUSED and last.guard == "max_blocks_per_hour"


def test_rotation_by_age(tree, tmp_path, make_engine, clock):
    standard_layout(tree)
    e = make_engine(rules=RULES, controller="journal_max_age: 1h")
    assert e.handle(alert("a")).status == Status.DONE
    clock.advance(7200)
    assert e.handle(alert("b")).status == Status.DONE
    assert e.metrics.journal_rotations._value.get() == 1
    first = next(iter(e.journal.read_all()))
    assert first.type == "rotated"
    assert any(isinstance(r, StateActed) and r.fingerprint == "a" for r in e.journal.read_all())


def test_start_up_reads_a_huge_legacy_journal_streamed_then_rotates(tree, tmp_path, make_engine):
    """133 MiB of history took 21.8 s and 1.2 GiB RSS: now it is streamed once, then rotated away."""
    standard_layout(tree)
    journal = tmp_path / "journal.jsonl"
    line = json.dumps(
        {
            "ts": 1.0,
            "pid": 1,
            "type": "refusal",
            "guard": "paused",
            "rule": "x",
            "action": "offline",
            "detail": "d" * 400,
        }
    )
    with open(journal, "w") as f:
        for _ in range(40_000):  # ~20 MiB
            f.write(line + "\n")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    e = make_engine(rules=RULES, controller="journal_max_size: 1M")
    grew_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grew_kib < 64 * 1024, f"start-up grew the peak RSS by {grew_kib} KiB"
    assert os.path.getsize(journal) < 1 << 20
    assert os.path.getsize(f"{journal}.1") > 19 << 20  # the history is kept, rotated
    assert e.handle(alert("x")).status == Status.DONE


def test_every_record_written_reads_back(tmp_path):
    from memhp.controller.journal import JournalError
    from memhp.controller.records import Quarantine

    j = Journal(str(tmp_path / "j.jsonl")).open()
    try:
        j.append(Quarantine(block="7", until=1.0))  # type: ignore[arg-type]
    except JournalError as err:
        assert "invalid record" in str(err)
    else:
        raise AssertionError("an invalid record was journalled")
    assert os.path.getsize(j.path) == 0
