"""``memhp report`` against a synthetic fleet: wall time, peak RSS of the
report process and Prometheus' query time.

    python -m bench.report_fleet --hosts 1000 --hours 72
    python -m bench.report_fleet --hosts 10000 --tsdb /var/tmp/fleet10k   # keep (and reuse) the TSDB
    python -m bench.report_fleet --hosts 2500 --runs 2 --baseline-python /path/to/old/.venv/bin/python
    python -m bench.report_fleet --backtest --hosts 1000   # memhp-controller backtest, 30 days of ALERTS

The fleet is tests/report/fleet.py's (2 NUMA nodes per host, the recording
rules' series written directly, 5-minute samples), turned into TSDB blocks
with ``promtool tsdb create-blocks-from openmetrics`` and served by a real
Prometheus with its default limits (``--query.max-samples`` 50M).  The
report runs as the real command line; its peak RSS is the child's
``ru_maxrss`` (os.wait4), not this process's.  With ``--baseline-python``
an earlier memhp (another venv) runs alternately against the same
Prometheus, so both rows come from one run.  Results: docs/performance.md.
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

from tests.helpers.prometheus import start_prometheus
from tests.report.fleet import RANGE_HOURS, build_fleet_tsdb

INTERVAL = 300


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--hours", type=int, default=RANGE_HOURS, help=f"reviewed range (the history is {RANGE_HOURS} h)")
    ap.add_argument("--tsdb", type=Path, help="directory for the TSDB, reused when it already holds one")
    ap.add_argument("--runs", type=int, default=1, help="report runs (the first warms Prometheus' caches)")
    ap.add_argument(
        "--baseline-python",
        type=Path,
        help="also run the report with this interpreter (a venv of an earlier memhp), alternately with "
        "this tree's, against the same Prometheus: the reference of the same run",
    )
    ap.add_argument("--batch-hosts", type=int, help="passed to memhp report (default: its own)")
    ap.add_argument(
        "--interval",
        type=int,
        default=INTERVAL,
        help=f"seconds between samples of the history, also the report's --step (default {INTERVAL})",
    )
    ap.add_argument(
        "--history-hours",
        type=float,
        help="write only the last hours of the history (the same series and rows per host; for memory "
        "against fleet size, where writing 72 h for 10,000 hosts takes most of an hour); --hours at most this",
    )
    ap.add_argument(
        "--backtest",
        action="store_true",
        help="instead: memhp-controller backtest over 30 days of ALERTS and state (bench/backtest_fleet.py)",
    )
    args = ap.parse_args()
    if args.backtest:
        from bench.backtest_fleet import run as run_backtest

        return run_backtest(args.hosts, args.tsdb, args.runs)
    if not 1 <= args.hosts <= 100_000 or not 1 <= args.hours <= RANGE_HOURS:
        ap.error(f"--hosts 1..100000, --hours 1..{RANGE_HOURS}")
    work = args.tsdb or Path(tempfile.mkdtemp(prefix="memhp-report-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    meta = work / "bench.json"
    if meta.exists() and json.loads(meta.read_text()).get("key") == [args.hosts, args.history_hours, args.interval]:
        end = json.loads(meta.read_text())["end"]
        print(f"reusing the TSDB in {work} ({args.hosts} hosts)")
    else:
        end = int(time.time()) // args.interval * args.interval - 600
        t0 = time.monotonic()
        build_fleet_tsdb(work, args.hosts, end, args.interval, args.history_hours)
        meta.write_text(
            json.dumps({"hosts": args.hosts, "end": end, "key": [args.hosts, args.history_hours, args.interval]})
        )
        print(
            f"generated {args.hosts} hosts x {args.history_hours or RANGE_HOURS} h in {time.monotonic() - t0:.0f} s ({work})"
        )
    prom = start_prometheus(work / "prometheus", [], tsdb_path=work / "tsdb", retention="400d", ready_timeout=900)
    try:
        pythons = [("this tree", Path(sys.executable))]
        if args.baseline_python:
            pythons.append(("baseline", args.baseline_python))
        for run in range(args.runs):
            for label, python in pythons:
                extra = ["--batch-hosts", str(args.batch_hosts)] if args.batch_hosts and label == "this tree" else []
                if _run_report(
                    python, label, prom.url, work / f"report-{label.replace(' ', '-')}-{run}", end, args, run, extra
                ):
                    return 1
    finally:
        prom.stop()
    return 0


def _run_report(python: Path, label: str, url: str, out: Path, end: int, args, run: int, extra: list[str]) -> int:
    cmd = [
        str(python),
        "-m",
        "memhp.cli",
        "report",
        "--prometheus",
        url,
        "--range",
        f"{args.hours}h",
        "--end",
        str(end),
        "--step",
        f"{args.interval}s",
        "--out",
        str(out),
        "--timeout",
        "600s",
        *extra,
    ]
    t0 = time.monotonic()
    # cwd: not this tree, so that a baseline interpreter imports its own memhp
    p = subprocess.Popen(cmd, cwd=out.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode() if p.stderr else ""
    if status != 0:
        print(err, file=sys.stderr)
        return 1
    m = json.loads((out / "report.json").read_text())["meta"]
    html = (out / "report.html").stat().st_size
    print(
        f"[{label}] hosts {args.hosts}  nodes {2 * args.hosts}  range {args.hours} h  run {run + 1}: "
        f"wall {wall:.1f} s  peak RSS {usage.ru_maxrss / 1024:.0f} MiB  "
        f"Prometheus {m['prometheus_requests']} requests, {m['prometheus_seconds']:.1f} s  "
        f"report.html {html / 1024:.0f} KiB  user+sys {usage.ru_utime + usage.ru_stime:.1f} s  "
        f"fleet curves: {m.get('fleet_curves_source', 'raw series (before the rules)')}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
