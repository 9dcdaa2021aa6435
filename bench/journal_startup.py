#!/usr/bin/env python3
"""Controller start-up against journal history: time and peak RSS of ``Engine.open()``.

    .venv/bin/python -m bench.journal_startup [--sizes 16,64,133] [--max-size 16M]

For each size, a journal of that many MiB of records (refusals and complete
actions, as a long-running controller leaves without rotation) is written,
then a fresh process opens an Engine on it twice: the first start streams the
whole legacy file once and rotates it; the second reads only the rotated-in
file.  Issue 11 measured 21.8 s and 1.2 GiB RSS for 133 MiB before rotation
and streaming existed.  Targets: the second start is independent of the
history (< 1 s, < 64 MiB RSS); the first start's RSS does not grow with the
size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import resource, sys, time
t0 = time.monotonic()
from memhp.controller.config import load_config
from memhp.controller.engine import Engine
from memhp.exporter.kernel.paths import Paths
cfg = load_config(sys.argv[1])
t1 = time.monotonic()
e = Engine(cfg, Paths(sysfs=sys.argv[2], procfs=sys.argv[2])).open()
t2 = time.monotonic()
e.close()
print(t2 - t1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_history(path: Path, mib: int) -> int:
    now = time.time()
    recs = []
    for i in range(50):
        aid = f"{i:016x}"
        recs.append(
            {
                "ts": now,
                "pid": 1,
                "type": "action_start",
                "rule": "r",
                "action": "offline",
                "fingerprint": f"{i:016x}",
                "starts_at": "2026-01-01T00:00:00.000Z",
                "source": "webhook",
                "action_id": aid,
                "plan": [{"block": i, "ops": ["offline"]}],
                "notes": [],
            }
        )
        recs.append(
            {
                "ts": now,
                "pid": 1,
                "type": "action_end",
                "action_id": aid,
                "rule": "r",
                "action": "offline",
                "result": "done",
                "changed": [i],
                "failed": [],
                "stopped": "",
                "duration": 0.1,
            }
        )
    refusal = {
        "ts": now,
        "pid": 1,
        "type": "refusal",
        "guard": "paused",
        "detail": "pause file exists",
        "rule": "r",
        "action": "offline",
        "fingerprint": "f" * 64,
        "starts_at": "2026-01-01T00:00:00.000Z",
    }
    block = ("\n".join(json.dumps(r, separators=(",", ":")) for r in recs) + "\n").encode()
    ref = (json.dumps(refusal, separators=(",", ":")) + "\n").encode()
    target = mib << 20
    n = 0
    with open(path, "wb") as f:
        f.write(block)
        chunk = ref * 1000
        while f.tell() < target:
            f.write(chunk)
            n += 1000
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="16,64,133", help="history sizes in MiB")
    ap.add_argument("--max-size", default="16M", help="controller.journal_max_size")
    args = ap.parse_args(argv)
    print(
        f"{'history':>8} {'start 1 (s)':>12} {'RSS 1 (MiB)':>12} {'start 2 (s)':>12} {'RSS 2 (MiB)':>12} {'after (KiB)':>12}"
    )
    for mib in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
            dd = Path(d)
            journal = dd / "journal.jsonl"
            write_history(journal, mib)
            (dd / "sys/devices/system/memory").mkdir(parents=True)
            policy = dd / "policy.yaml"
            policy.write_text(
                f"controller: {{journal: {journal}, journal_max_size: {args.max_size}}}\nguards: {{pause_file: null}}\n"
            )
            out = []
            for _ in range(2):
                r = subprocess.run(
                    [sys.executable, "-c", CHILD, str(policy), str(dd / "sys")],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                secs, rss_kib = r.stdout.split()
                out.append((float(secs), int(rss_kib) / 1024))
            after = journal.stat().st_size >> 10
        print(f"{mib:>5}MiB {out[0][0]:>12.2f} {out[0][1]:>12.0f} {out[1][0]:>12.2f} {out[1][1]:>12.0f} {after:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
