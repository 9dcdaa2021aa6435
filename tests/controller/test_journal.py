"""The journal: one fsynced line per record, nothing lost to kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from memhp.controller.journal import Journal, unfinished_actions, unfinished_attempts
from tests.helpers.wait import wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_append_and_read_back(tmp_path):
    j = Journal(str(tmp_path / "sub" / "j.jsonl")).open()
    a = j.append({"type": "x", "n": 1})
    j.append({"type": "y", "n": 2})
    assert a["pid"] == os.getpid() and a["ts"] > 0
    assert [r["n"] for r in j.read_all()] == [1, 2]
    assert os.stat(j.path).st_mode & 0o777 == 0o640
    j.close()


def test_each_record_is_one_line_and_file_is_append_only(tmp_path):
    p = tmp_path / "j.jsonl"
    j = Journal(str(p)).open()
    j.append({"type": "x", "text": "multi\nline"})
    j.close()
    j2 = Journal(str(p)).open()  # reopening appends, never truncates
    j2.append({"type": "y"})
    lines = p.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert json.loads(lines[0])["text"] == "multi\nline"


def test_torn_last_line_is_skipped_and_fenced(tmp_path):
    p = tmp_path / "j.jsonl"
    p.write_bytes(b'{"type":"a","n":1}\n{"type":"b","n"')  # power loss mid-line
    j = Journal(str(p)).open()
    j.append({"type": "c", "n": 3})
    recs = list(j.read_all())
    assert [r["type"] for r in recs] == ["a", "c"] and j.corrupt_lines == 1


def test_read_new_sees_other_writers_incrementally(tmp_path):
    p = str(tmp_path / "j.jsonl")
    mine, other = Journal(p).open(), Journal(p).open()
    mine.append({"type": "a"})
    assert [r["type"] for r in mine.read_new()] == ["a"]
    other.append({"type": "b"})
    other.append({"type": "c"})
    assert [r["type"] for r in mine.read_new()] == ["b", "c"]
    assert mine.read_new() == []


def test_unfinished_attempts_and_actions():
    recs = [
        {"type": "action_start", "action_id": "A"},
        {"type": "attempt_start", "action_id": "A", "block": 1, "op": "offline", "attempt": 1},
        {"type": "attempt_end", "action_id": "A", "block": 1, "op": "offline", "attempt": 1},
        {"type": "attempt_start", "action_id": "A", "block": 1, "op": "offline", "attempt": 2},
        {"type": "action_start", "action_id": "B"},
        {"type": "action_end", "action_id": "B"},
    ]
    (u,) = unfinished_attempts(recs)
    assert u["attempt"] == 2
    assert [a["action_id"] for a in unfinished_actions(recs)] == ["A"]
    recs.append({"type": "reconcile", "action_id": "A", "block": 1, "op": "offline", "attempt": 2})
    assert unfinished_attempts(recs) == []


_WRITER = """
import sys
from memhp.controller.journal import Journal
j = Journal(sys.argv[2]).open()
i = 0
while True:
    j.append({"type": "seq", "i": i, "pad": "x" * (i % 977)})
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
        if r["i"] == 0:
            runs += 1
            expect = 0
        assert r["i"] == expect and r["pad"] == "x" * (r["i"] % 977)
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
