"""A synthetic fleet history for ``memhp report`` at scale: ``hosts`` hosts x 2
NUMA nodes over RANGE_HOURS, written as OpenMetrics with timestamps and
turned into a real Prometheus TSDB with ``promtool tsdb create-blocks-from
openmetrics`` (as history.py does for the 3-host story).

Unlike history.py, the recording rules' series are written directly (the
values alerts/memhp.rules.yaml would give; history.py's test checks the rules
themselves), together with the few raw series the report reads: so a large
fleet can be generated in minutes.  Every figure follows from the host's
index (``story``), so the tests can compute what the report must find.

Per host i (two nodes, 16 GiB of kernel zones each: DMA32 2 + Normal 14):

* node 0 holds ``BASE[i % 4]`` x 16 GiB of online ZONE_MOVABLE; node 1 the same
  with a fifth more (never above 3:1 on its own).
* every 10th host: node 0 rises to 3.5:1 from hour 10 for ``1 + (i // 10) % 12`` hours;
* every 40th host: node 0 rises to 4.5:1 from hour 30 for ``2 + (i // 40) % 6`` hours;
* every 50th host: node 1 is at 3.25:1 from hour 70 to the end;
* every 5th host: node 0 has 8 GiB of offline ZONE_MOVABLE blocks throughout;
* every 20th host: node 1 has one block the kernel cannot offline;
* every 25th host: two blocks of node 0 (1000, 1001) fail to offline at hour 40
  ("unmovable page" 3 times, "failure to isolate range" once), and the
  controller's offline of them ends failed (EBUSY) twice;
* every host with a ratio episode: the controller onlined its blocks (ok);
* every 100th host: the controller quarantines one block from hour 41 to 42;
* every node: the exporter's auto-movable headroom (3.01 x kernel − movable).

The fleet-curve rules (quantiles, max, count above 3:1, sum by zone) are
written as Prometheus would record them at the same timestamps, so a report
that reads them must equal one that reduces the raw series.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.helpers.prometheus import PROMTOOL

GiB = 1 << 30
MiB = 1 << 20
BLOCK = 128 * MiB
HOUR = 3600
RANGE_HOURS = 72
LEAD_HOURS = 1
KERNEL = 16 * GiB
DMA32, NORMAL = 2 * GiB, 14 * GiB
BASE = (1.0, 1.5, 2.0, 2.5)


def host_name(i: int) -> str:
    return f"host{i:05d}"


@dataclass(frozen=True)
class Episode:
    start_h: float
    end_h: float
    ratio: float


@dataclass(frozen=True)
class NodeStory:
    base: float
    episodes: tuple[Episode, ...]
    offline: float
    unofflinable: int

    def ratio(self, h: np.ndarray) -> np.ndarray:
        r = np.full(h.shape, self.base)
        for e in self.episodes:
            r[(h >= e.start_h) & (h < e.end_h)] = e.ratio
        return r

    def hours_above(self, line: float) -> float:
        return sum(min(e.end_h, RANGE_HOURS) - max(e.start_h, 0) for e in self.episodes if e.ratio > line) + (
            RANGE_HOURS if self.base > line else 0
        )

    def peak(self) -> float:
        return max([self.base, *(e.ratio for e in self.episodes)])

    def current(self) -> float:
        return self.ratio(np.array([RANGE_HOURS - 1e-6]))[0]


def story(i: int, node: int) -> NodeStory:
    base = BASE[i % 4] * (1.2 if node else 1.0)
    eps: list[Episode] = []
    if node == 0 and i % 10 == 0:
        eps.append(Episode(10, 10 + 1 + (i // 10) % 12, 3.5))
    if node == 0 and i % 40 == 0:
        eps.append(Episode(30, 30 + 2 + (i // 40) % 6, 4.5))
    if node == 1 and i % 50 == 0:
        eps.append(Episode(70, RANGE_HOURS + 1, 3.25))
    return NodeStory(
        base,
        tuple(eps),
        8 * GiB if node == 0 and i % 5 == 0 else 0.0,
        1 if node == 1 and i % 20 == 0 else 0,
    )


FAILURES = {"unmovable page": [40.0, 40.1, 40.2], "failure to isolate range": [40.0]}  # every 25th host
FAILED_BLOCKS = {"1000": "unmovable page", "1001": "failure to isolate range"}


def expected(hosts: int) -> dict:
    """The fleet figures the report must find."""
    nodes = [(i, n, story(i, n)) for i in range(hosts) for n in (0, 1)]
    failing = [i for i in range(hosts) if i % 25 == 0]
    return {
        "instances": hosts,
        "nodes": 2 * hosts,
        "nodes_above_critical_in_period": sum(1 for _, _, s in nodes if s.hours_above(4) > 0),
        "nodes_above_warning_in_period": sum(1 for _, _, s in nodes if s.hours_above(3) > 0),
        "nodes_above_warning_now": sum(1 for _, _, s in nodes if s.current() > 3),
        "offline_failures_by_reason": {r: len(t) * len(failing) for r, t in sorted(FAILURES.items())},
        "failed_offline_blocks": 2 * len(failing),
        "failed_actions": 2 * len(failing),
        "instances_with_quarantine": sum(1 for i in range(hosts) if i % 100 == 0),
        "unofflinable_blocks": sum(s.unofflinable for _, _, s in nodes),
        "offline_bytes_now": sum(s.offline for _, _, s in nodes),
        "hot_unpluggable_now": sum(s.current() * KERNEL for _, _, s in nodes),
        "nodes_offline_now": sum(1 for _, _, s in nodes if s.offline),
    }


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in kv.items()) + "}"


def openmetrics(hosts: int, end: int, interval: int, history_hours: float | None = None) -> Iterator[str]:
    """The history as OpenMetrics text chunks (one series per chunk); ``history_hours`` keeps only
    the last hours of it (bench: the same series and rows per host, written in a fraction of the time)."""
    w = _Writer(hosts, end, interval, history_hours)
    yield from w.node_rules()
    yield from w.instance_rules()
    yield from w.cluster_rules()
    yield from w.failing_hosts()
    yield from w.controller()
    yield "# EOF\n"


class _Writer:
    """The fleet's series on one time grid; the cluster: sums are gathered
    while the per-node series are written."""

    def __init__(self, hosts: int, end: int, interval: int, history_hours: float | None = None) -> None:
        range_start = end - RANGE_HOURS * HOUR
        first = range_start - LEAD_HOURS * HOUR if history_hours is None else end - history_hours * HOUR
        stamps = np.arange(first, end + 1, interval)
        self.hosts = hosts
        self.hours = (stamps - range_start) / HOUR
        self.ts_text = [f" {t}\n" for t in stamps.tolist()]
        self.n = len(stamps)
        self.cluster = {k: np.zeros(self.n) for k in ("online", "offline", "hot", "mov", "ker")}
        # events and per-block series: these hosts only
        self.failing = [i for i in range(hosts) if i % 25 == 0]

    def series(self, name: str, labels: str, values: np.ndarray | float) -> str:
        prefix = name + labels + " "
        if isinstance(values, float | int):
            v = _num(float(values))
            return "".join(prefix + v + t for t in self.ts_text)
        return "".join(prefix + _num(v) + t for v, t in zip(values.tolist(), self.ts_text))

    def node_values(self, i: int, node: int) -> dict[str, np.ndarray | float]:
        s = story(i, node)
        mov = s.ratio(self.hours) * KERNEL
        return {"mov": mov, "offline": s.offline, "online": mov + KERNEL, "unoff": float(s.unofflinable)}

    def nodes(self) -> Iterator[tuple[int, int, dict[str, str]]]:
        for i in range(self.hosts):
            for node in (0, 1):
                yield i, node, {"instance": host_name(i), "node": str(node)}

    def node_rules(self) -> Iterator[str]:
        cluster, series = self.cluster, self.series
        yield "# TYPE instance_node:memhp_blocks_bytes:sum_by_state gauge\n"
        for i, node, lb in self.nodes():
            v = self.node_values(i, node)
            cluster["online"] += v["online"]
            yield series("instance_node:memhp_blocks_bytes:sum_by_state", _labels(**lb, state="online"), v["online"])
            if v["offline"]:
                cluster["offline"] += float(v["offline"])
                yield series(
                    "instance_node:memhp_blocks_bytes:sum_by_state", _labels(**lb, state="offline"), v["offline"]
                )
        yield "# TYPE instance_node:memhp_online_bytes:sum_by_zone gauge\n"
        for i, node, lb in self.nodes():
            v = self.node_values(i, node)
            name = "instance_node:memhp_online_bytes:sum_by_zone"
            yield series(name, _labels(**lb, zone="DMA32"), float(DMA32))
            yield series(name, _labels(**lb, zone="Normal"), float(NORMAL))
            yield series(name, _labels(**lb, zone="Movable"), v["mov"])
        yield "# TYPE instance_node:memhp_movable_kernel_ratio:ratio gauge\n"
        ratios = np.empty((2 * self.hosts, self.n))
        for k, (i, node, lb) in enumerate(self.nodes()):
            ratios[k] = story(i, node).ratio(self.hours)
            yield series("instance_node:memhp_movable_kernel_ratio:ratio", _labels(**lb), ratios[k])
        # the fleet-curve rules (alerts/generate.py fleet_curve_rules), as Prometheus computes them:
        # quantile() interpolates linearly between ranks, as numpy's default does
        self.fleet_curves = {
            "p50": np.quantile(ratios, 0.5, axis=0),
            "p90": np.quantile(ratios, 0.9, axis=0),
            "max": ratios.max(axis=0),
            "above": (ratios > 3).sum(axis=0).astype(float),
        }
        del ratios
        yield "# TYPE instance_node:memhp_hot_unpluggable_bytes:sum gauge\n"
        for i, node, lb in self.nodes():
            v = self.node_values(i, node)
            cluster["hot"] += v["mov"]
            yield series("instance_node:memhp_hot_unpluggable_bytes:sum", _labels(**lb), v["mov"])
        # the exporter's headroom at the kernel's default auto_movable_ratio (301%)
        yield "# TYPE memhp_node_auto_movable_headroom_bytes gauge\n"
        for i, node, lb in self.nodes():
            headroom = np.maximum(0.0, 3.01 * KERNEL - self.node_values(i, node)["mov"])
            yield series("memhp_node_auto_movable_headroom_bytes", _labels(job="memhp", **lb), headroom)
        yield "# TYPE memhp_blocks_unofflinable gauge\n"
        for i, node, lb in self.nodes():
            unoff = self.node_values(i, node)["unoff"]
            yield series("memhp_blocks_unofflinable", _labels(job="memhp", reason="other", **lb), unoff)

    def instance_rules(self) -> Iterator[str]:
        """The instance: rules (what a --selector reads for the fleet curves)."""
        values = self.node_values
        per_inst: dict[str, Callable[[int], np.ndarray | float]] = {
            "instance:memhp_hot_unpluggable_bytes:sum": lambda i: values(i, 0)["mov"] + values(i, 1)["mov"],
            "instance:memhp_node_movable_accounted_bytes:sum": lambda i: values(i, 0)["mov"] + values(i, 1)["mov"],
            "instance:memhp_node_kernel_accounted_bytes:sum": lambda i: float(2 * KERNEL),
        }
        for name, f in per_inst.items():
            yield f"# TYPE {name} gauge\n"
            for i in range(self.hosts):
                yield self.series(name, _labels(instance=host_name(i)), f(i))
        yield "# TYPE instance:memhp_blocks_bytes:sum_by_state gauge\n"
        name = "instance:memhp_blocks_bytes:sum_by_state"
        for i in range(self.hosts):
            on = values(i, 0)["online"] + values(i, 1)["online"]
            yield self.series(name, _labels(instance=host_name(i), state="online"), on)
            off = float(values(i, 0)["offline"]) + float(values(i, 1)["offline"])
            if off:
                yield self.series(name, _labels(instance=host_name(i), state="offline"), off)
        yield "# TYPE memhp_block_size_bytes gauge\n"
        for i in range(self.hosts):
            yield self.series("memhp_block_size_bytes", _labels(job="memhp", instance=host_name(i)), float(BLOCK))

    def cluster_rules(self) -> Iterator[str]:
        cluster, series = self.cluster, self.series
        cluster["ker"] = np.full(self.n, float(2 * KERNEL * self.hosts))
        yield "# TYPE cluster:memhp_blocks_bytes:sum_by_state gauge\n"
        yield series("cluster:memhp_blocks_bytes:sum_by_state", _labels(state="online"), cluster["online"])
        if cluster["offline"].any():
            yield series("cluster:memhp_blocks_bytes:sum_by_state", _labels(state="offline"), cluster["offline"])
        yield "# TYPE cluster:memhp_hot_unpluggable_bytes:sum gauge\n"
        yield series("cluster:memhp_hot_unpluggable_bytes:sum", "", cluster["hot"])
        yield "# TYPE cluster:memhp_movable_kernel_ratio:ratio gauge\n"
        yield series("cluster:memhp_movable_kernel_ratio:ratio", "", cluster["hot"] / cluster["ker"])
        curves = self.fleet_curves
        q = "cluster:memhp_movable_kernel_ratio:quantile"
        yield f"# TYPE {q} gauge\n"
        yield series(q, _labels(quantile="0.5"), curves["p50"])
        yield series(q, _labels(quantile="0.9"), curves["p90"])
        yield "# TYPE cluster:memhp_movable_kernel_ratio:max gauge\n"
        yield series("cluster:memhp_movable_kernel_ratio:max", "", curves["max"])
        yield "# TYPE cluster:memhp_movable_kernel_ratio_above:count gauge\n"
        yield series("cluster:memhp_movable_kernel_ratio_above:count", _labels(threshold="3"), curves["above"])
        yield "# TYPE cluster:memhp_online_bytes:sum_by_zone gauge\n"
        name = "cluster:memhp_online_bytes:sum_by_zone"
        yield series(name, _labels(zone="DMA32"), float(DMA32 * 2 * self.hosts))
        yield series(name, _labels(zone="Normal"), float(NORMAL * 2 * self.hosts))
        yield series(name, _labels(zone="Movable"), cluster["hot"])

    def counter(self, events: list[tuple[float, float]]) -> np.ndarray:
        out = np.zeros(self.n)
        for at, k in events:
            out[self.hours >= at] += k
        return out

    def counter_series(self, name: str, labels: str, values: np.ndarray) -> str:
        keep = values > 0  # memhp's counters appear with their first event
        ts = [t for t, k in zip(self.ts_text, keep.tolist()) if k]
        return "".join(f"{name}{labels} {_num(v)}{t}" for v, t in zip(values[keep].tolist(), ts))

    def failing_hosts(self) -> Iterator[str]:
        yield "# TYPE memhp_offline_failures counter\n"
        for i in self.failing:
            for reason, at in sorted(FAILURES.items()):
                yield self.counter_series(
                    "memhp_offline_failures_total",
                    _labels(job="memhp", instance=host_name(i), reason=reason),
                    self.counter([(h, 1) for h in at]),
                )
        yield "# TYPE memhp_block_offline_failures counter\n"
        for i in self.failing:
            for block, reason in FAILED_BLOCKS.items():
                yield self.counter_series(
                    "memhp_block_offline_failures_total",
                    _labels(job="memhp", instance=host_name(i), block=block, reason=reason),
                    self.counter([(h, 1) for h in FAILURES[reason]]),
                )
        yield "# TYPE memhp_block_info gauge\n"
        for i in self.failing:
            for block in FAILED_BLOCKS:
                info = _labels(
                    job="memhp", instance=host_name(i), block=block, node="0", zone="Movable", valid_zones="Movable"
                )
                yield self.series("memhp_block_info", info, 1.0)
        yield "# TYPE memhp_block_state gauge\n"
        for i in self.failing:
            for block in FAILED_BLOCKS:
                yield self.series(
                    "memhp_block_state",
                    _labels(job="memhp", instance=host_name(i), block=block, node="0", state="online"),
                    1.0,
                )

    def controller(self) -> Iterator[str]:
        yield "# TYPE memhp_controller_actions counter\n"
        for i in range(self.hosts):
            ev = [(e.start_h, 8.0) for e in story(i, 0).episodes]
            if ev:
                yield self.counter_series(
                    "memhp_controller_actions_total",
                    _labels(job="memhp-controller", instance=host_name(i), action="online", result="ok", errno=""),
                    self.counter(ev),
                )
            if i % 25 == 0:
                yield self.counter_series(
                    "memhp_controller_actions_total",
                    _labels(
                        job="memhp-controller", instance=host_name(i), action="offline", result="failed", errno="EBUSY"
                    ),
                    self.counter([(40.5, 2)]),
                )
        yield "# TYPE memhp_controller_quarantined_blocks gauge\n"
        for i in range(0, self.hosts, 100):
            q = np.where((self.hours >= 41) & (self.hours < 42), 1.0, 0.0)
            yield self.series(
                "memhp_controller_quarantined_blocks", _labels(job="memhp-controller", instance=host_name(i)), q
            )


def _num(v: float) -> str:
    return str(int(v)) if v == int(v) else repr(v)


def build_fleet_tsdb(
    workdir: Path, hosts: int, end: int, interval: int = 300, history_hours: float | None = None
) -> Path:
    """Write the fleet's history and create TSDB blocks from it; returns the
    TSDB directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    tsdb = workdir / "tsdb"
    om = workdir / "fleet.om"
    with om.open("w") as f:
        for chunk in openmetrics(hosts, end, interval, history_hours):
            f.write(chunk)
    r = subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q", str(om), str(tsdb)],
        capture_output=True,
        text=True,
        timeout=7200,
    )
    om.unlink()
    if r.returncode != 0:
        raise RuntimeError(f"promtool create-blocks-from openmetrics failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
    return tsdb
