"""The journal: one fsynced line per record, nothing lost to kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from memhp.controller.journal import Journal, unfinished_actions, unfinished_attempts
from memhp.controller.records import (
    ActionEnd,
    ActionStart,
    AttemptEnd,
    AttemptStart,
    Quarantine,
    Reconcile,
    Refusal,
)
from memhp.controller.vocab import Action, AttemptResult, Outcome, Status
from tests.helpers.wait import wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_append_and_read_back(tmp_path):
    j = Journal(str(tmp_path / "sub" / "j.jsonl")).open()
    a = j.append(Quarantine(block=1, until=5.0))
    j.append(Quarantine(block=2, until=6.0))
    assert a.pid == os.getpid() and a.ts > 0
    assert [r.block for r in j.read_all()] == [1, 2]
    assert os.stat(j.path).st_mode & 0o777 == 0o640
    j.close()


def test_each_record_is_one_line_and_file_is_append_only(tmp_path):
    p = tmp_path / "j.jsonl"
    j = Journal(str(p)).open()
    j.append(Refusal(guard="g", detail="multi\nline", action=Action.OFFLINE))
    j.close()
    j2 = Journal(str(p)).open()  # reopening appends, never truncates
    j2.append(Quarantine(block=1, until=1.0))
    lines = p.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert json.loads(lines[0])["detail"] == "multi\nline"


def test_torn_last_line_is_skipped_and_fenced(tmp_path):
    p = tmp_path / "j.jsonl"
    p.write_bytes(b'{"type":"quarantine","ts":1,"block":1,"until":2}\n{"type":"quarantine","bl')  # power loss
    j = Journal(str(p)).open()
    j.append(Quarantine(block=3, until=4.0))
    recs = j.read_new()
    assert [r.block for r in recs] == [1, 3] and j.corrupt_lines == 1


def test_read_new_sees_other_writers_incrementally(tmp_path):
    p = str(tmp_path / "j.jsonl")
    mine, other = Journal(p).open(), Journal(p).open()
    mine.append(Quarantine(block=1, until=1.0))
    assert [r.block for r in mine.read_new()] == [1]
    other.append(Quarantine(block=2, until=1.0))
    other.append(Quarantine(block=3, until=1.0))
    assert [r.block for r in mine.read_new()] == [2, 3]
    assert mine.read_new() == []


def test_unfinished_attempts_and_actions():
    att = {"action_id": "A", "block": 1, "op": "offline"}
    recs = [
        ActionStart(action_id="A"),
        AttemptStart(**att, attempt=1),
        AttemptEnd(**att, attempt=1, result=AttemptResult.OK),
        AttemptStart(**att, attempt=2),
        ActionStart(action_id="B"),
        ActionEnd(action_id="B", result=Status.DONE),
    ]
    (u,) = unfinished_attempts(recs)
    assert u.attempt == 2
    assert [a.action_id for a in unfinished_actions(recs)] == ["A"]
    recs.append(Reconcile(**att, attempt=2, outcome=Outcome.COMPLETED))
    assert unfinished_attempts(recs) == []


_WRITER = """
import sys
from memhp.controller.journal import Journal
from memhp.controller.records import Refusal
j = Journal(sys.argv[2]).open()
i = 0
while True:
    j.append(Refusal(guard=str(i), detail="x" * (i % 977)))
    i += 1
    if i == 50:
        open(sys.argv[2] + ".ready", "w").close()
"""


def test_kill_9_while_appending_loses_and_tears_nothing(tmp_path):
    p = tmp_path / "j.jsonl"
    for _ in range(3):  # kill at three different moments
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, REPO, str(p)])
        try:
            wait_until(lambda: os.path.exists(str(p) + ".ready"), 30, desc="writer running")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        os.unlink(str(p) + ".ready")
    data = p.read_bytes()
    assert data.endswith(b"\n")  # no torn record
    recs = [json.loads(line) for line in data.splitlines()]
    # three runs, each a gapless sequence from 0
    runs, expect = 0, 0
    for r in recs:
        i = int(r["guard"])
        if i == 0:
            runs += 1
            expect = 0
        assert i == expect and r["detail"] == "x" * (i % 977)
        expect += 1
    assert runs == 3


def test_action_lock_excludes_a_second_holder(tmp_path):
    import pytest

    from memhp.controller.journal import JournalError

    j1 = Journal(str(tmp_path / "j.jsonl")).open()
    j2 = Journal(str(tmp_path / "j.jsonl")).open()
    with j1.action_lock(1):
        with pytest.raises(JournalError, match="another controller process"):
            with j2.action_lock(0.2):
                pass
    with j2.action_lock(0.2):
        pass
