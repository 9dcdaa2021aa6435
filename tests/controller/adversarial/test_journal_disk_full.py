"""A full disk during a journal append: whole or rolled back, the action refused, nothing done twice.

A real tmpfs of 1 MiB is mounted under tmp_path, filled to ENOSPC with a
filler file, and freed again by deleting it.
"""

from __future__ import annotations

import json
import os

from memhp.controller.alert import Alert
from memhp.controller.journal import Journal, JournalError
from memhp.controller.records import Quarantine, Refusal
from memhp.controller.vocab import Action, Status
from tests.controller.adversarial.tmpfs import fill, free, small_tmpfs
from tests.controller.sysfs_tree import kernel_writer
from tests.helpers.controller import standard_layout

RULES = """\
- name: shrink
  alertname: TooMuchMemory
  action: offline
  count: 1
"""


def alert(fp: str = "fp1", starts: str = "2026-01-01T00:00:00.000Z") -> Alert:
    return Alert("TooMuchMemory", "firing", {"alertname": "TooMuchMemory"}, fingerprint=fp, starts_at=starts)


def fill_all(disk, journal) -> str:
    """Fill the disk, and the journal's last page too (tmpfs allocates by page) with records of
    another process, so that the next record cannot fit at all."""
    filler = fill(disk)
    other = Journal(str(journal)).open()
    try:
        while True:
            other.append(Refusal(guard="other", action=Action.OFFLINE, source="manual"))
    except JournalError:
        pass
    finally:
        other.close()
    return filler


def lines_all_valid(path: str) -> list[dict]:
    data = open(path, "rb").read()
    assert data == b"" or data.endswith(b"\n"), "the journal ends with a fragment"
    return [json.loads(line) for line in data.splitlines()]  # raises on a glued or torn line


def test_a_failed_append_is_rolled_back_and_the_next_one_is_readable(tmp_path):
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        j = Journal(str(disk / "journal.jsonl")).open()
        for b in range(3):
            j.append(Quarantine(block=b, until=1.0))
        before = os.path.getsize(j.path)
        filler = fill(disk)
        # Larger than what is left of the journal's last page: tmpfs takes part of it, then ENOSPC.
        big = Refusal(guard="paused", detail="x" * 6000, action=Action.OFFLINE)
        try:
            j.append(big)
        except JournalError:
            pass
        else:
            raise AssertionError("an append to a full disk reported success")
        assert os.path.getsize(j.path) == before, "the partial record was not rolled back"
        free(filler)
        j.append(Quarantine(block=9, until=1.0))
        recs = lines_all_valid(j.path)
        assert [r.get("block") for r in recs] == [0, 1, 2, 9]
        assert [r.block for r in j.read_all()] == [0, 1, 2, 9] and j.corrupt_lines == 0
        j.close()


def test_full_disk_refuses_the_action_and_after_restart_it_acts_once(tree, tmp_path, make_engine):
    standard_layout(tree)  # 8-11 online Movable
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        journal = disk / "journal.jsonl"
        e = make_engine(rules=RULES, controller=f"journal: {journal}")
        filler = fill(disk)
        out = e.handle(alert())
        assert out is not None and out.status == Status.REFUSED and out.guard == "journal"
        assert [tree.state(i) for i in range(8, 12)] == ["online"] * 4  # nothing written
        assert e.metrics.journal_append_failures._value.get() >= 1
        free(filler)
        e.close()
        e2 = make_engine(rules=RULES, controller=f"journal: {journal}")  # restart
        assert e2.handle(alert()).status == Status.DONE
        assert e2.handle(alert()).status == Status.DUPLICATE
        assert [tree.state(i) for i in range(8, 12)].count("offline") == 1
        recs = lines_all_valid(str(journal))
        assert [r["type"] for r in recs].count("action_start") == 1


def test_disk_fills_between_the_write_and_its_record_the_outcome_is_reconciled(tree, tmp_path, make_engine):
    """The writer child fills the disk right before its sysfs write: attempt_end and action_end cannot
    be journalled.  After the disk frees, the next start reconciles the write; the occurrence never acts
    again."""
    standard_layout(tree)
    writes = tmp_path / "writes.log"
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        journal = disk / "journal.jsonl"

        def filling_writer(path: str, data: bytes) -> None:
            fill_all(disk, journal)  # something else fills the disk
            with open(writes, "a") as f:
                f.write(f"{path} {data.decode()}\n")
            kernel_writer(path, data)

        e = make_engine(rules=RULES, controller=f"journal: {journal}", writer=filling_writer)
        out = e.handle(alert())
        assert out is not None and out.status in (Status.FAILED, Status.PARTIAL)
        assert "journal unwritable" in out.detail
        free(str(disk / "filler"))
        e.close()
        e2 = make_engine(rules=RULES, controller=f"journal: {journal}", writer=kernel_writer)
        assert [r.outcome for r in e2.reconciled] == ["completed"]
        assert e2.handle(alert()).status == Status.DUPLICATE
        recs = lines_all_valid(str(journal))
        kinds = [r["type"] for r in recs]
        assert kinds.count("action_start") == 1 and kinds.count("reconcile_action") == 1
        assert "attempt_end" not in kinds and kinds.count("reconcile") == 1
        assert len(writes.read_text().splitlines()) == 1
        assert [tree.state(i) for i in range(8, 12)].count("offline") == 1
        # The change counts toward the hourly cap after the restart.
        assert e2.guards.state.changes_since(0) == 1


def test_start_up_on_a_full_disk_starts_refuses_then_reconciles_once_it_frees(tree, tmp_path, make_engine, clock):
    """A full disk at start (reconcile and rotation cannot write) must not crash-loop the controller."""
    standard_layout(tree)
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        journal = disk / "journal.jsonl"
        now = clock()
        journal.write_text(
            json.dumps(
                {
                    "ts": now,
                    "pid": 1,
                    "type": "action_start",
                    "action_id": "A",
                    "rule": "shrink",
                    "action": "offline",
                    "fingerprint": "old",
                    "starts_at": "s",
                }
            )
            + "\n"
            + json.dumps(
                {
                    "ts": now,
                    "pid": 1,
                    "type": "attempt_start",
                    "action_id": "A",
                    "rule": "shrink",
                    "action": "offline",
                    "block": 11,
                    "op": "offline",
                    "attempt": 1,
                    "state_before": "online",
                }
            )
            + "\n"
        )
        tree.set_block(11, "offline", "Movable Normal")  # the interrupted write went through
        filler = fill_all(disk, journal)
        e = make_engine(rules=RULES, controller=f"journal: {journal}")  # starts: no exception
        assert e.reconciled == []
        out = e.handle(alert())
        assert out.status == Status.REFUSED and out.guard == "journal"
        free(filler)
        assert e.handle(alert()).status == Status.DONE
        kinds = [r["type"] for r in lines_all_valid(str(journal))]
        assert kinds.count("reconcile") == 1 and kinds.count("reconcile_action") == 1
        assert e.guards.state.changes_since(0) == 2  # the reconciled write and the new one
