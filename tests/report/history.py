"""A known memhp history for the capacity-report tests, written as OpenMetrics
with timestamps and turned into a real Prometheus TSDB:

1. ``promtool tsdb create-blocks-from openmetrics`` turns the raw series
   (what Prometheus would have scraped from three hosts' exporters and
   controllers) into blocks;
2. ``promtool tsdb create-blocks-from rules`` evaluates ``alerts/memhp.rules.yaml``
   over that history against a Prometheus serving those blocks, one dependency
   level at a time (a rule that reads another recording rule can only be
   backfilled once the rule it reads is in the TSDB), exactly as an operator
   backfills rules added after the fact.

Everything the tests assert is defined here, as plain numbers (``EXPECTED``).

The story, in hours from the start of the reviewed range (3 days):

* ``db1`` node 0: 16 GiB kernel zones (DMA32 2 + Normal 14), an 80 GiB Movable
  pool of which 32 GiB online.  At h28 24 GiB more is onlined movable (3.5:1),
  at h30 another 16 GiB (72 GiB, **4.5:1**).  At h44 the controller hands back
  20 GiB (3.25:1), but 4 blocks (600-603, 512 MiB) fail to offline: "unmovable
  page" (blocks 600 x3 and 601 x2) and "failure to isolate range" (602 x2,
  603 x1); blocks 600 and 601 are quarantined from h45 to h46.  At h47 another
  20 GiB is handed back (2:1).  So: 19 h above 3:1, 14 h above 4:1.
* ``db1`` node 1: 16 GiB kernel, 16 GiB Movable, one block with valid_zones
  ``none`` (cannot be offlined).
* ``db2`` node 0: 8 GiB kernel, 24 GiB Movable (exactly 3:1, not above); 2 GiB
  more onlined from h60 to h66 (3.25:1): 6 h above 3:1.  8 GiB stays offline.
* ``db3`` nodes 0 and 1: quiet (1.5:1 and 2:1).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.helpers.prometheus import PROMTOOL, start_prometheus

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "memhp.rules.yaml"

GiB = 1 << 30
MiB = 1 << 20
BLOCK = 128 * MiB
HOUR = 3600
RANGE_HOURS = 72
LEAD_HOURS = 1  # data before the reviewed range, so the range starts inside the history
INTERVAL = 60  # scrape and rule evaluation interval, seconds


def _steps(*points: tuple[float, float]) -> Callable[[float], float]:
    """A piecewise-constant function of the hour: ((from_hour, value), ...)."""
    pts = sorted(points)

    def f(h: float) -> float:
        v = pts[0][1]
        for start, value in pts:
            if h >= start:
                v = value
        return v

    return f


def _counter(events: list[tuple[float, float]]) -> Callable[[float], float]:
    """A counter from (hour, increment) events, 0 before the first."""
    ev = sorted(events)

    def f(h: float) -> float:
        return sum(n for at, n in ev if h >= at)

    return f


@dataclass
class NodeStory:
    instance: str
    node: str
    dma32: float
    normal: float
    movable_pool: float
    movable_online: Callable[[float], float]
    unofflinable: int = 0


NODES = [
    NodeStory(
        "db1",
        "0",
        2 * GiB,
        14 * GiB,
        80 * GiB,
        _steps((-99, 32 * GiB), (28, 56 * GiB), (30, 72 * GiB), (44, 52 * GiB), (47, 32 * GiB)),
    ),
    NodeStory("db1", "1", 2 * GiB, 14 * GiB, 16 * GiB, _steps((-99, 16 * GiB)), unofflinable=1),
    NodeStory("db2", "0", 1 * GiB, 7 * GiB, 32 * GiB, _steps((-99, 24 * GiB), (60, 26 * GiB), (66, 24 * GiB))),
    NodeStory("db3", "0", 2 * GiB, 30 * GiB, 48 * GiB, _steps((-99, 48 * GiB))),
    NodeStory("db3", "1", 2 * GiB, 30 * GiB, 64 * GiB, _steps((-99, 64 * GiB))),
]

# Offline failures the kernel logged on db1 (block, reason, hour of each failure).
BLOCK_FAILURES = [
    ("600", "unmovable page", [44.0, 44.1, 44.2]),
    ("601", "unmovable page", [44.0, 44.1]),
    ("602", "failure to isolate range", [44.0, 44.1]),
    ("603", "failure to isolate range", [44.0]),
]

# Controller actions: (instance, action, result, errno, [(hour, count), ...]).
ACTIONS = [
    ("db1", "online", "ok", "", [(28, 192), (30, 128)]),
    ("db1", "offline", "ok", "", [(44, 160), (47, 160)]),
    ("db1", "offline", "failed", "EBUSY", [(44.5, 4)]),
    ("db2", "online", "ok", "", [(60, 16)]),
    ("db2", "offline", "ok", "", [(66, 16)]),
]
QUARANTINED = {"db1": _steps((-99, 0), (45, 2), (46, 0)), "db2": _steps((-99, 0))}

# What the report must find (the tests compare against these).
EXPECTED = {
    ("db1", "0"): {
        "peak_ratio": 4.5,
        "current_ratio": 2.0,
        "hours_above_warning": 19,
        "hours_above_critical": 14,
        "hot_unpluggable": (72 * GiB, 32 * GiB, 32 * GiB),
        "failed_offline_bytes": 4 * BLOCK,
        "failed_offline_bytes_by_reason": {"unmovable page": 2 * BLOCK, "failure to isolate range": 2 * BLOCK},
        "unofflinable_blocks": 0,
    },
    ("db1", "1"): {
        "peak_ratio": 1.0,
        "current_ratio": 1.0,
        "hours_above_warning": 0,
        "hours_above_critical": 0,
        "hot_unpluggable": (16 * GiB, 16 * GiB, 16 * GiB),
        "failed_offline_bytes": 0,
        "failed_offline_bytes_by_reason": {},
        "unofflinable_blocks": 1,
    },
    ("db2", "0"): {
        "peak_ratio": 3.25,
        "current_ratio": 3.0,
        "hours_above_warning": 6,
        "hours_above_critical": 0,
        "hot_unpluggable": (26 * GiB, 24 * GiB, 24 * GiB),
        "failed_offline_bytes": 0,
        "failed_offline_bytes_by_reason": {},
        "unofflinable_blocks": 0,
    },
    ("db3", "0"): {
        "peak_ratio": 1.5,
        "current_ratio": 1.5,
        "hours_above_warning": 0,
        "hours_above_critical": 0,
        "hot_unpluggable": (48 * GiB, 48 * GiB, 48 * GiB),
        "failed_offline_bytes": 0,
        "failed_offline_bytes_by_reason": {},
        "unofflinable_blocks": 0,
    },
    ("db3", "1"): {
        "peak_ratio": 2.0,
        "current_ratio": 2.0,
        "hours_above_warning": 0,
        "hours_above_critical": 0,
        "hot_unpluggable": (64 * GiB, 64 * GiB, 64 * GiB),
        "failed_offline_bytes": 0,
        "failed_offline_bytes_by_reason": {},
        "unofflinable_blocks": 0,
    },
}
EXPECTED_FAILURES = {"db1": {"unmovable page": 5, "failure to isolate range": 3}}
EXPECTED_ACTIONS = {
    ("db1", "online", "ok"): 320,
    ("db1", "offline", "ok"): 320,
    ("db1", "offline", "failed"): 4,
    ("db2", "online", "ok"): 16,
    ("db2", "offline", "ok"): 16,
}
EXPECTED_QUARANTINED = {"db1": (2, 0), "db2": (0, 0)}  # (peak, current)


def _labels(**kv: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in kv.items()) + "}"


def _fmt(v: float) -> str:
    return repr(float(v)) if v != int(v) else str(int(v))


def openmetrics(end: int) -> Iterator[str]:
    """The raw history as OpenMetrics lines, ending at ``end`` (Unix seconds,
    a multiple of INTERVAL); the reviewed range is the RANGE_HOURS before it."""
    range_start = end - RANGE_HOURS * HOUR
    first = range_start - LEAD_HOURS * HOUR
    stamps = list(range(first, end + 1, INTERVAL))

    def hour(ts: int) -> float:
        return (ts - range_start) / HOUR

    families: dict[tuple[str, str], list[tuple[str, Callable[[float], float]]]] = {}

    def add(family: str, kind: str, sample: str, labels: dict[str, str], f: Callable[[float], float]) -> None:
        families.setdefault((family, kind), []).append((sample + _labels(**labels), f))

    exp = {"job": "memhp"}
    ctl = {"job": "memhp-controller"}
    for n in NODES:
        base = {**exp, "instance": n.instance, "node": n.node}
        mo = n.movable_online
        add(
            "memhp_blocks_bytes",
            "gauge",
            "memhp_blocks_bytes",
            {**base, "zone": "DMA32", "state": "online"},
            lambda h, v=n.dma32: v,
        )
        add(
            "memhp_blocks_bytes",
            "gauge",
            "memhp_blocks_bytes",
            {**base, "zone": "Normal", "state": "online"},
            lambda h, v=n.normal: v,
        )
        add("memhp_blocks_bytes", "gauge", "memhp_blocks_bytes", {**base, "zone": "Movable", "state": "online"}, mo)
        if n.movable_pool > mo(-99) or any(n.movable_pool > mo(h) for h in range(0, RANGE_HOURS)):
            add(
                "memhp_blocks_bytes",
                "gauge",
                "memhp_blocks_bytes",
                {**base, "zone": "Movable", "state": "offline"},
                lambda h, p=n.movable_pool, mo=mo: p - mo(h),
            )
        add("memhp_node_movable_accounted_bytes", "gauge", "memhp_node_movable_accounted_bytes", base, mo)
        add(
            "memhp_node_kernel_accounted_bytes",
            "gauge",
            "memhp_node_kernel_accounted_bytes",
            base,
            lambda h, v=n.dma32 + n.normal: v,
        )
        add(
            "memhp_node_movable_kernel_ratio",
            "gauge",
            "memhp_node_movable_kernel_ratio",
            base,
            lambda h, mo=mo, k=n.dma32 + n.normal: mo(h) / k,
        )
        add("memhp_hot_unpluggable_bytes", "gauge", "memhp_hot_unpluggable_bytes", base, mo)
        unoff = "memhp_blocks_unofflinable"
        add(unoff, "gauge", unoff, {**base, "reason": "other"}, lambda h, v=n.unofflinable: v)
        # every node of an x86 host has its boot DMA block: never a finding
        add(unoff, "gauge", unoff, {**base, "reason": "boot_dma"}, lambda h: 1)
    for inst in sorted({n.instance for n in NODES}):
        add("memhp_block_size_bytes", "gauge", "memhp_block_size_bytes", {**exp, "instance": inst}, lambda h: BLOCK)
    by_reason: dict[str, list[tuple[float, float]]] = {}
    for block, reason, hours in BLOCK_FAILURES:
        lbl = {**exp, "instance": "db1", "block": block, "reason": reason}
        add(
            "memhp_block_offline_failures",
            "counter",
            "memhp_block_offline_failures_total",
            lbl,
            _counter([(h, 1) for h in hours]),
        )
        by_reason.setdefault(reason, []).extend((h, 1) for h in hours)
        add(
            "memhp_block_info",
            "gauge",
            "memhp_block_info",
            {
                **exp,
                "instance": "db1",
                "block": block,
                "node": "0",
                "zone": "Movable",
                "valid_zones": "Movable",
                "removable": "1",
            },
            lambda h: 1,
        )
        for state in ("online", "offline", "going-offline"):
            add(
                "memhp_block_state",
                "gauge",
                "memhp_block_state",
                {**exp, "instance": "db1", "block": block, "node": "0", "state": state},
                lambda h, s=state: 1 if s == "online" else 0,
            )
    for reason, events in sorted(by_reason.items()):
        add(
            "memhp_offline_failures",
            "counter",
            "memhp_offline_failures_total",
            {**exp, "instance": "db1", "reason": reason},
            _counter(events),
        )
    for inst, action, result, errno, events in ACTIONS:
        add(
            "memhp_controller_actions",
            "counter",
            "memhp_controller_actions_total",
            {**ctl, "instance": inst, "action": action, "result": result, "errno": errno},
            _counter(events),
        )
    for inst, f in QUARANTINED.items():
        add(
            "memhp_controller_quarantined_blocks",
            "gauge",
            "memhp_controller_quarantined_blocks",
            {**ctl, "instance": inst},
            f,
        )

    for (family, kind), series in families.items():
        yield f"# TYPE {family} {kind}"
        for name, f in series:
            for ts in stamps:
                yield f"{name} {_fmt(f(hour(ts)))} {ts}"
    yield "# EOF"


def rule_levels(rules_file: Path) -> list[list[dict]]:
    """The recording rules of ``rules_file`` grouped by dependency level: level
    0 reads only scraped series, level n reads rules of level < n."""
    rules = [r for g in yaml.safe_load(rules_file.read_text())["groups"] for r in g["rules"] if "record" in r]
    names = {r["record"] for r in rules}
    level: dict[str, int] = {}

    def lvl(rule: dict, seen: tuple[str, ...] = ()) -> int:
        name = rule["record"]
        if name not in level:
            deps = {m for m in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["expr"]) if m in names and m != name}
            level[name] = 1 + max(
                (lvl(next(r for r in rules if r["record"] == d), seen + (name,)) for d in deps if d not in seen),
                default=-1,
            )
        return level[name]

    out: list[list[dict]] = []
    for r in rules:
        n = lvl(r)
        while len(out) <= n:
            out.append([])
        out[n].append(r)
    return out


def _run(argv: list[str], what: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{what} failed ({r.returncode}): {' '.join(argv)}\n{r.stdout[-3000:]}{r.stderr[-3000:]}")


def build_tsdb(workdir: Path, end: int, rules_file: Path = RULES) -> Path:
    """Write the history, create TSDB blocks from it and backfill the
    recording rules over it.  Returns the TSDB directory (start Prometheus on
    it with a retention longer than RANGE_HOURS + LEAD_HOURS)."""
    workdir.mkdir(parents=True, exist_ok=True)
    tsdb = workdir / "tsdb"
    om = workdir / "history.om"
    with om.open("w") as f:
        for line in openmetrics(end):
            f.write(line + "\n")
    _run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q", str(om), str(tsdb)], "openmetrics backfill")
    om.unlink()
    first = end - (RANGE_HOURS + LEAD_HOURS) * HOUR
    for i, rules in enumerate(rule_levels(rules_file)):
        level_file = workdir / f"rules-level{i}.yaml"
        level_file.write_text(yaml.safe_dump({"groups": [{"name": f"memhp.rules.level{i}", "rules": rules}]}))
        out = workdir / f"rules-blocks-{i}"
        prom = start_prometheus(workdir / f"backfill-prometheus-{i}", [], tsdb_path=tsdb, retention="30d")
        try:
            _run(
                [
                    PROMTOOL,
                    "tsdb",
                    "create-blocks-from",
                    "rules",
                    "-q",
                    f"--url={prom.url}",
                    f"--start={first}",
                    f"--end={end}",
                    f"--eval-interval={INTERVAL}s",
                    f"--output-dir={out}",
                    str(level_file),
                ],
                f"rules backfill (level {i})",
            )
        finally:
            prom.stop()
        for block in out.iterdir():
            if block.is_dir():
                shutil.move(str(block), str(tsdb / block.name))
    return tsdb
