"""Journal records through msgspec: the same bytes on disk, the same lines read back."""

from __future__ import annotations

import json

import pytest

from memhp.controller.journal import Journal
from memhp.controller.records import (
    ActionStart,
    InvalidRecord,
    Refusal,
    StateBlock,
    parse_line,
    parse_record,
    plan_steps,
)
from memhp.controller.vocab import Action


def line_of(rec) -> bytes:
    return json.dumps(rec.to_json(), separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")


def test_a_record_is_written_with_the_keys_in_the_order_journals_always_had():
    rec = ActionStart(
        ts=1.5,
        pid=7,
        action_id="a1",
        rule="r",
        action=Action.OFFLINE,
        fingerprint="f",
        starts_at="s",
        source="webhook",
        plan=plan_steps([{"block": 3, "ops": ["offline"]}]),
        notes=("n",),
    )
    assert line_of(rec) == (
        b'{"ts":1.5,"pid":7,"type":"action_start","action_id":"a1","rule":"r","action":"offline",'
        b'"fingerprint":"f","starts_at":"s","resolved":false,"source":"webhook",'
        b'"plan":[{"block":3,"ops":["offline"]}],"notes":["n"]}'
    )
    assert parse_line(line_of(rec)) == rec


def test_text_json_allows_and_msgspec_refuses_still_reads_back(tmp_path):
    """A lone surrogate (valid JSON from an alert sender) is journalled as an escape that msgspec's
    decoder refuses: the line must still read back, as it always did."""
    j = Journal(str(tmp_path / "j.jsonl")).open()
    written = j.append(Refusal(guard="g", detail="a\ud800b", fingerprint="\udfff"))
    (back,) = j.read_all()
    assert back == written and back.detail == "a\ud800b"
    assert j.corrupt_lines == 0


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"state_block","block":1,"quarantined_until":1e400}',  # inf
        b'{"type":"state_block","block":1,"quarantined_until":NaN}',
        b'{"type":"state_block","block":true}',
        b'{"type":"state_block","block":1,"ts":-1}',
        b'{"type":"state_block"}',
        b'{"type":"nope","block":1}',
        b'{"block":1}',
        b"[1]",
    ],
)
def test_invalid_lines_are_invalid_records(line):
    with pytest.raises(ValueError):  # InvalidRecord, or not JSON
        parse_line(line)


def test_unknown_keys_are_ignored_and_dicts_convert_too():
    rec = parse_line(b'{"type":"state_block","block":1,"newer_field":[1]}')
    assert rec == StateBlock(block=1)
    assert parse_record({"type": "state_block", "block": 1, "at": {}}) == rec
    with pytest.raises(InvalidRecord):
        parse_record({"type": "state_block", "block": 1.0})
