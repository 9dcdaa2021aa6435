"""The property that matters most: an alert occurrence is acted on at most once, whatever fails in between.

A child process handles a fixed list of alert occurrences through a real
Engine and journal (on a real 1 MiB tmpfs) against a fixture tree.  The
test kills it with SIGKILL at random moments, fills the disk under it and
frees it again, restarts it, and finally lets one run finish.  Then, from the
journal (rotated files included) and the fixture tree's writes:

* every occurrence has exactly one ``action_start`` (never two: at most once;
  and the last clean run leaves none unhandled);
* no sysfs write happened without its ``attempt_start`` journalled first;
* blocks offlined == writes that changed a block, and never more than the
  occurrences (each asks for one block);
* every line of every journal file is a valid record.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from memhp.controller.config import load_config
from memhp.controller.journal import Journal
from tests.controller.adversarial.tmpfs import fill, small_tmpfs
from tests.helpers.controller import policy_text, standard_layout

REPO = Path(__file__).resolve().parents[3]
N_OCCURRENCES = 24
RULES = """\
- name: shrink
  alertname: TooMuchMemory
  action: offline
  count: 1
  cooldown: 0s
"""

CHILD = r"""
import os, sys, time
from memhp.controller.alert import Alert
from memhp.controller.config import load_config
from memhp.controller.engine import Engine
from memhp.exporter.kernel.paths import Paths
from tests.controller.sysfs_tree import kernel_writer

root, policy, writes, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def logging_writer(path, data):
    with open(writes, "a") as f:  # before the write: a write never goes unseen
        f.write(f"{path} {data.decode()}\n")
    time.sleep(0.01)
    kernel_writer(path, data)

cfg = load_config(policy)
paths = Paths(sysfs=os.path.join(root, "sys"), procfs=os.path.join(root, "proc"))
e = Engine(cfg, paths, writer=logging_writer)
while True:
    try:
        e.open()
        break
    except OSError:  # the disk is full right now: try again
        time.sleep(0.05)
for i in range(n):
    a = Alert("TooMuchMemory", "firing", {"alertname": "TooMuchMemory"}, fingerprint=f"occ{i:03d}",
              starts_at="2026-01-01T00:00:00.000Z")
    try:
        e.handle(a)
    except OSError:
        pass
e.close()
print("finished", flush=True)
"""


def run_child(args: list[str], kill_after: float | None) -> bool:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    if kill_after is not None:
        try:
            proc.wait(kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    return b"finished" in out


def journal_records(path: str) -> list[dict]:
    recs = []
    files = sorted((p for p in os.listdir(os.path.dirname(path)) if p.startswith(os.path.basename(path))), reverse=True)
    for name in files:
        if name.endswith((".lock", ".rotating")):
            continue
        data = Path(os.path.dirname(path), name).read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{name} ends with a fragment"
        for line in data.splitlines():
            if line.strip():
                recs.append(json.loads(line))  # a glued or torn line fails here
    j = Journal(path)
    assert all(j._parse(json.dumps(r).encode(), count=True) is not None for r in recs)
    return recs


def test_an_occurrence_is_acted_on_at_most_once_whatever_fails(tree, tmp_path):
    standard_layout(tree, movable=N_OCCURRENCES + 8)
    rnd = random.Random(int(os.environ.get("MEMHP_TEST_SEED", "11")))
    writes = tmp_path / "writes.log"
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        journal = disk / "journal.jsonl"
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            policy_text(
                tmp_path,
                RULES,
                guards="max_blocks_per_hour: 1000\nmax_blocks_per_action: 8",
                controller=f"journal: {journal}\njournal_max_size: 64K",
            )
        )
        load_config(str(policy))
        args = [str(tree.root), str(policy), str(writes), str(N_OCCURRENCES)]
        for rnd_i in range(14):
            filler = None
            if rnd_i % 3 == 1:  # a disk that fills, then frees while the child runs
                filler = fill(disk)
                threading.Timer(rnd.uniform(0.05, 0.6), os.unlink, args=(filler,)).start()
            run_child(args, kill_after=rnd.uniform(0.05, 1.2))
            if filler is not None:
                deadline = time.monotonic() + 5
                while os.path.exists(filler) and time.monotonic() < deadline:
                    time.sleep(0.05)
        assert run_child(args, kill_after=None), "the last clean run did not finish"
        recs = journal_records(str(journal))

    starts = [r for r in recs if r["type"] == "action_start"]
    per_occ: dict[str, int] = {}
    for r in starts:
        per_occ[r["fingerprint"]] = per_occ.get(r["fingerprint"], 0) + 1
    twice = {k: v for k, v in per_occ.items() if v > 1}
    assert not twice, f"occurrences acted on more than once: {twice}"
    # The journal keeps the state_acted records of rotated-away action_starts; count both.
    acted = set(per_occ) | {r["fingerprint"] for r in recs if r["type"] == "state_acted"}
    assert acted == {f"occ{i:03d}" for i in range(N_OCCURRENCES)}
    n_writes = len(writes.read_text().splitlines()) if writes.exists() else 0
    offline = [i for i in range(8, 8 + N_OCCURRENCES + 8) if tree.state(i) == "offline"]
    assert len(offline) <= N_OCCURRENCES and len(offline) <= n_writes
    attempt_starts = {(r["action_id"], r["block"], r["attempt"]) for r in recs if r["type"] == "attempt_start"}
    rotated_away = any(r["type"] == "rotated" for r in recs)
    if not rotated_away:
        assert n_writes <= len(attempt_starts)
    print(
        f"at-most-once: {len(starts)} action_start, {n_writes} writes, {len(offline)} offlined, "
        f"{sum(r['type'] == 'reconcile' for r in recs)} reconciled, "
        f"{sum(r['type'] == 'reconcile_action' for r in recs)} actions interrupted"
    )
