"""A one-host history for the capacity plan (trends, forecasts, headroom,
recommendations, the previous period, gaps), written as the recording
rules' series directly (as fleet.py does) and turned into a TSDB with
``promtool tsdb create-blocks-from openmetrics``.

Host ``web1``; data exist only for the DATA_HOURS before the end, one sample
every INTERVAL seconds (the hours are counted from the first sample):

* node 0: 16 GiB of kernel zones (DMA32 2 + Normal 14); online ZONE_MOVABLE
  grows steadily from 1.5:1 at h0 by 0.5 per day (2.75:1 at the end): above
  3:1 twelve hours after the end, above 4:1 sixty hours after.  8 GiB of
  ZONE_MOVABLE blocks stay offline.
* node 1: 8 GiB of kernel zones (DMA32 1 + Normal 7), 26 GiB of ZONE_MOVABLE
  online throughout: 3.25:1, above the warning line.  To return to 3:1:
  online 6 blocks of 128 MiB as kernel memory (26/3 − 8 = 0.67 GiB), or
  remove 2 GiB (16 blocks) of ZONE_MOVABLE.  Nothing is offline there.
* auto-movable headroom as the exporter computes it (the kernel's default
  auto_movable_ratio, 301%): 3.01 x kernel − ZONE_MOVABLE, never below 0.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tests.helpers.prometheus import PROMTOOL

GiB = 1 << 30
MiB = 1 << 20
BLOCK = 128 * MiB
HOUR = 3600
DATA_HOURS = 60
INTERVAL = 300
INSTANCE = "web1"
SLOPE_PER_DAY = 0.5
KERNEL = {"0": (2 * GiB, 14 * GiB), "1": (1 * GiB, 7 * GiB)}  # (DMA32, Normal)
OFFLINE = {"0": 8 * GiB, "1": 0.0}
AUTO_MOVABLE_RATIO = 3.01


def ratio(node: str, hours: np.ndarray) -> np.ndarray:
    """MOVABLE:KERNEL of a node, ``hours`` after the first sample."""
    if node == "0":
        return 1.5 + SLOPE_PER_DAY * hours / 24
    return np.full(hours.shape, 3.25)


def kernel(node: str) -> float:
    return float(sum(KERNEL[node]))


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in kv.items()) + "}"


def _num(v: float) -> str:
    return str(int(v)) if v == int(v) else repr(float(v))


def openmetrics(end: int) -> Iterator[str]:
    stamps = np.arange(end - DATA_HOURS * HOUR, end + 1, INTERVAL)
    hours = (stamps - stamps[0]) / HOUR
    ts = [f" {t}\n" for t in stamps.tolist()]

    def series(name: str, labels: str, values: np.ndarray | float) -> str:
        vals = np.broadcast_to(np.asarray(values, dtype=float), stamps.shape)
        return "".join(f"{name}{labels} {_num(v)}{t}" for v, t in zip(vals.tolist(), ts))

    movable = {n: ratio(n, hours) * kernel(n) for n in KERNEL}
    fams: dict[str, list[str]] = {}

    def add(name: str, labels: str, values: np.ndarray | float) -> None:
        fams.setdefault(name, []).append(series(name, labels, values))

    for n, (dma32, normal) in KERNEL.items():
        lb = {"instance": INSTANCE, "node": n}
        add("instance_node:memhp_blocks_bytes:sum_by_state", _labels(**lb, state="online"), movable[n] + kernel(n))
        if OFFLINE[n]:
            add("instance_node:memhp_blocks_bytes:sum_by_state", _labels(**lb, state="offline"), OFFLINE[n])
        add("instance_node:memhp_online_bytes:sum_by_zone", _labels(**lb, zone="DMA32"), float(dma32))
        add("instance_node:memhp_online_bytes:sum_by_zone", _labels(**lb, zone="Normal"), float(normal))
        add("instance_node:memhp_online_bytes:sum_by_zone", _labels(**lb, zone="Movable"), movable[n])
        add("instance_node:memhp_movable_kernel_ratio:ratio", _labels(**lb), ratio(n, hours))
        add("instance_node:memhp_hot_unpluggable_bytes:sum", _labels(**lb), movable[n])
        add("instance_node:memhp_node_kernel_accounted_bytes:sum", _labels(**lb), kernel(n))
        add("instance_node:memhp_node_movable_accounted_bytes:sum", _labels(**lb), movable[n])
        add("memhp_blocks_unofflinable", _labels(job="memhp", **lb), 0.0)
        headroom = np.maximum(0.0, AUTO_MOVABLE_RATIO * kernel(n) - movable[n])
        add("memhp_node_auto_movable_headroom_bytes", _labels(job="memhp", **lb), headroom)
    add("memhp_block_size_bytes", _labels(job="memhp", instance=INSTANCE), float(BLOCK))
    total_kernel = sum(kernel(n) for n in KERNEL)
    total_movable = sum(movable.values())
    online = total_movable + total_kernel
    add("cluster:memhp_blocks_bytes:sum_by_state", _labels(state="online"), online)
    add("cluster:memhp_blocks_bytes:sum_by_state", _labels(state="offline"), float(sum(OFFLINE.values())))
    add("cluster:memhp_hot_unpluggable_bytes:sum", "", total_movable)
    add("cluster:memhp_movable_kernel_ratio:ratio", "", total_movable / total_kernel)
    for name, chunks in fams.items():
        yield f"# TYPE {name} gauge\n"
        yield from chunks
    yield "# EOF\n"


def expected_fleet_ratio(hours: float) -> float:
    h = np.array([hours])
    movable = sum(float(ratio(n, h)[0]) * kernel(n) for n in KERNEL)
    return movable / sum(kernel(n) for n in KERNEL)


def build_plan_tsdb(workdir: Path, end: int) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    tsdb = workdir / "tsdb"
    om = workdir / "plan.om"
    with om.open("w") as f:
        for chunk in openmetrics(end):
            f.write(chunk)
    r = subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q", str(om), str(tsdb)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    om.unlink()
    if r.returncode != 0:
        raise RuntimeError(f"promtool create-blocks-from openmetrics failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
    return tsdb
