"""The backtest at fleet size: ``python -m bench.report_fleet --backtest --hosts N``.

A synthetic history of N hosts x 30 days, turned into TSDB blocks with
``promtool tsdb create-blocks-from openmetrics`` and served by a real
Prometheus with its default limits; then ``memhp-controller backtest
--range 30d --step 1m`` runs as the real command line, and its wall time and
peak RSS (the child's ``ru_maxrss``) are printed.

Per host i (2 NUMA nodes):

* ``ALERTS{alertname="MemhpMovableKernelRatioHigh", node="0"}`` fires every
  ``2 + i % 5`` days for ``20 + i % 40`` minutes (1-minute evaluations), at a
  minute that depends on i: about 10 occurrences per host;
* ``ALERTS{alertname="MemhpHotUnpluggableBelowFloor"}`` fires on every host at
  once on day 20 for 30 minutes (a fleet-wide incident: the budget's case);
* memhp's recording rules per node (hot-unpluggable, kernel-zone and
  accounted bytes) and MemAvailable, block size and auto_movable_ratio per
  host, sampled every 6 hours (Prometheus runs with
  ``--query.lookback-delta=6h``: the generated history stays small enough for
  promtool at thousands of hosts; the queries read the same series either way).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.helpers.prometheus import PROMTOOL, start_prometheus

REPO = Path(__file__).resolve().parents[1]
DAY = 86400
DAYS = 30
EVAL = 60
STATE_INTERVAL = 6 * 3600
GiB = 1 << 30
BLOCK = 128 << 20

POLICY = {
    "guards": {"max_blocks_per_hour": 8, "cooldown": "30m"},
    "fleet": {
        "budget": {
            "etcd": {"endpoints": ["http://127.0.0.1:2379"]},
            "max_concurrent": 20,
            "max_actions_per_hour": 2000,
            "wait": "5m",
        }
    },
    "rules": [
        {
            "name": "rebalance-high",
            "alertname": "MemhpMovableKernelRatioHigh",
            "action": "rebalance",
            "target_ratio": 3,
            "node_label": "node",
        },
        {
            "name": "floor",
            "alertname": "MemhpHotUnpluggableBelowFloor",
            "action": "online",
            "count": 2,
            "rollout": "25%",
        },
    ],
}


def host(i: int) -> str:
    return f"host{i:05d}"


def episodes(i: int, start: int) -> Iterator[tuple[int, int]]:
    """(first, last) evaluation times of host i's ratio alert."""
    every = (2 + i % 5) * DAY
    t = start + (i * 7919 % 1440) * 60
    while t < start + DAYS * DAY:
        yield t, t + (20 + i % 40) * 60
        t += every


def openmetrics(hosts: int, end: int, lo: int, hi: int) -> Iterator[str]:
    """The samples with lo <= t < hi (promtool reads its whole input once per 2-hour
    block it writes: one file per day keeps that linear in the days)."""
    start = end - DAYS * DAY
    yield "# TYPE ALERTS gauge\n"
    for i in range(hosts):
        lb = f'alertname="MemhpMovableKernelRatioHigh",alertstate="firing",instance="{host(i)}",node="0"'
        for a, b in episodes(i, start):
            yield "".join(f"ALERTS{{{lb}}} 1 {t}\n" for t in range(max(a, lo), min(b, end, hi - 1) + 1, EVAL))
    incident = start + 20 * DAY
    for i in range(hosts):
        lb = f'alertname="MemhpHotUnpluggableBelowFloor",alertstate="firing",instance="{host(i)}"'
        yield "".join(f"ALERTS{{{lb}}} 1 {t}\n" for t in range(max(incident, lo), min(incident + 1800 + 1, hi), EVAL))
    first = start - STATE_INTERVAL
    stamps = [t for t in range(first, end + 1, STATE_INTERVAL) if lo <= t < hi]
    per_node = {
        "instance_node:memhp_hot_unpluggable_bytes:sum": lambda i, n: (40 + 8 * (i % 4) + n) * GiB,
        "instance_node:memhp_node_movable_accounted_bytes:sum": lambda i, n: (40 + 8 * (i % 4) + n) * GiB,
        "instance_node:memhp_node_kernel_accounted_bytes:sum": lambda i, n: 16 * GiB,
        "instance_node:memhp_blocks_bytes:sum_by_state": lambda i, n: 4 * GiB,  # state="offline"
    }
    for name, value in per_node.items():
        yield f"# TYPE {name} gauge\n"
        extra = ',state="offline"' if name.endswith("sum_by_state") else ""
        for i in range(hosts):
            for n in (0, 1):
                lb = f'{{instance="{host(i)}",node="{n}"{extra}}}'
                v = value(i, n)
                yield "".join(f"{name}{lb} {v} {t}\n" for t in stamps)
    per_host = {
        "memhp_memory_available_bytes": lambda i: (2 if i % 50 == 0 else 48) * GiB,
        "memhp_block_size_bytes": lambda i: BLOCK,
        "memhp_auto_movable_max_ratio": lambda i: 3.01,
    }
    for name, hv in per_host.items():
        yield f"# TYPE {name} gauge\n"
        for i in range(hosts):
            v = hv(i)
            yield "".join(f'{name}{{instance="{host(i)}"}} {v} {t}\n' for t in stamps)
    yield "# EOF\n"


def build(work: Path, hosts: int, end: int) -> Path:
    tsdb = work / "tsdb"
    om = work / "backtest.om"
    first = end - DAYS * DAY - STATE_INTERVAL
    for lo in range(first, end + 1, DAY):
        with om.open("w") as f:
            for chunk in openmetrics(hosts, end, lo, lo + DAY):
                f.write(chunk)
        r = subprocess.run(
            [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q", str(om), str(tsdb)],
            capture_output=True,
            text=True,
            timeout=7200,
            check=False,
        )
        if r.returncode != 0:
            raise RuntimeError(f"promtool create-blocks-from openmetrics failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
    om.unlink()
    return tsdb


def run(hosts: int, work: Path | None, runs: int = 1) -> int:
    work = work or Path(tempfile.mkdtemp(prefix="memhp-backtest-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    meta = work / "backtest-bench.yaml"
    saved = yaml.safe_load(meta.read_text()) if meta.exists() else None
    if saved and saved["hosts"] == hosts:
        end = saved["end"]
        print(f"reusing the TSDB in {work} ({hosts} hosts)")
    else:
        end = int(time.time()) // 3600 * 3600 - 2 * 3600
        t0 = time.monotonic()
        build(work, hosts, end)
        meta.write_text(yaml.safe_dump({"hosts": hosts, "end": end}))
        print(f"generated {hosts} hosts x {DAYS} days in {time.monotonic() - t0:.0f} s ({work})")
    policy = work / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY, sort_keys=False))
    prom = start_prometheus(
        work / "prometheus",
        [],
        tsdb_path=work / "tsdb",
        retention="400d",
        ready_timeout=900,
        extra_args=[f"--query.lookback-delta={STATE_INTERVAL}s"],
    )
    try:
        for n in range(runs):
            if _run_once(prom.url, policy, end, work / f"out-{n}", hosts, n) != 0:
                return 1
    finally:
        prom.stop()
    return 0


def _run_once(url: str, policy: Path, end: int, out: Path, hosts: int, n: int) -> int:
    cmd = [
        str(Path(sys.executable).parent / "memhp-controller"),
        "backtest",
        f"--prometheus={url}",
        "--range=30d",
        f"--end={end}",
        "--step=1m",
        f"--config.file={policy}",
        f"--out={out}",
        "--timeout=600s",
        "--json",
    ]
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with (out / "stdout.json").open("wb") as so, (out / "stderr.txt").open("wb") as se:  # never a full pipe
        p = subprocess.Popen(cmd, cwd=REPO, stdout=so, stderr=se)
        _, status, usage = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    if status != 0:
        print((out / "stderr.txt").read_text(), file=sys.stderr)
        return 1
    s = yaml.safe_load((out / "stdout.json").read_text())
    print(
        f"backtest hosts {hosts}  30 d at 1m  run {n + 1}: wall {wall:.1f} s  peak RSS "
        f"{usage.ru_maxrss / 1024:.0f} MiB  events {s['events']}  actions {s['actions']}  "
        f"dry-runs {s['dry_runs']}  refused {s['refused']} {s['refusals_by_guard']}  "
        f"peak concurrent {s['peak_concurrent_actions']}  Prometheus {s['meta']['prometheus_requests']} requests  "
        f"user+sys {usage.ru_utime + usage.ru_stime:.1f} s"
    )
    return 0
