"""Every query ``memhp report`` sends, and the figures made from the answers.

Prometheus does the reduction: per node, one number per figure comes back
(``*_over_time`` of the recording rules of ``alerts/memhp.rules.yaml``, time
above a line from a subquery); fleet curves come back as a handful of series
(``quantile``/``sum``/``count`` by time); events as exact per-bar counts.  The
only per-node time series fetched are those of the few nodes drawn.  Nothing
kept here grows with the number of samples; the per-node rows (a few hundred
bytes each) are the only thing that grows with the fleet.

Every query that reads many series is sized from the probe's counts so that
it stays under the server's sample limit (``--query-max-samples``); range
queries are split by time, subqueries into consecutive windows, and a chunk
the server still refuses is halved (promapi.py).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from memhp.promapi import Prometheus, ReportError, SampleLimitError, format_duration

from . import thresholds
from .overtime import Combine, OverTime
from .thresholds import KERNEL_ZONES

# Recording rules this report reads (alerts/memhp.rules.yaml).
R_STATE = "instance_node:memhp_blocks_bytes:sum_by_state"
R_ZONE = "instance_node:memhp_online_bytes:sum_by_zone"
R_RATIO = "instance_node:memhp_movable_kernel_ratio:ratio"
R_HOT = "instance_node:memhp_hot_unpluggable_bytes:sum"
R_I_STATE = "instance:memhp_blocks_bytes:sum_by_state"
R_I_HOT = "instance:memhp_hot_unpluggable_bytes:sum"
R_I_MOV = "instance:memhp_node_movable_accounted_bytes:sum"
R_I_KER = "instance:memhp_node_kernel_accounted_bytes:sum"

SAMPLE_SHARE = 0.5  # a query is sized to use at most this share of the server's sample limit
SHOWN_NODES = 10  # nodes drawn on the "worst nodes" ratio chart
# seconds before the range also searched for nodes above the warning line (> any lookback delta)
CANDIDATE_MARGIN = 3600
BATCH_CHARS = 60_000  # instance names per time-above query, in characters (the query is POSTed when long)
# The series that make a host a host of the report (any one of them).
HOST_METRICS = (
    R_STATE,
    "memhp_block_size_bytes",
    "memhp_offline_failures_total",
    "memhp_controller_actions_total",
    "memhp_controller_quarantined_blocks",
)
SCALE = 1 << 16  # packs two step counts of one subquery window (at most SCALE - 1 steps) in one float


def sel(metric: str, selector: str, *extra: str) -> str:
    matchers = [m for m in (*extra, selector) if m]
    return f"{metric}{{{','.join(matchers)}}}" if matchers else metric


def event_bucket(range_s: float, step: float) -> float:
    """Bar width of the event charts: about 72 bars over the range, whole hours
    (or days) when the range allows, never below the step."""
    for b in (300, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800):
        if range_s / b <= 96 and b >= step:
            return b
    return max(step, range_s / 96)


def events(metric: str, by: str, selector: str, bucket: float, extra: str = "") -> str:
    """Events per bar (t - bucket, t] of a counter, exactly: the increase over
    the bar when the counter grew; after a reset (a decrease) the new value;
    for a series not there one bar earlier (memhp's counters appear with their
    first event) its value.  Not ``increase()``: it extrapolates, and a counter
    that starts at 0 loses part of its first events (12% in the test history)."""
    x = f"sum by ({by}) ({sel(metric, selector, *([extra] if extra else []))})"
    before = f"sum by ({by}) ({sel(metric, selector, *([extra] if extra else []))} offset {format_duration(bucket)})"
    return f"(({x} - {before}) >= 0) or {x}"


@dataclass
class Collected:
    start: float
    end: float
    step: float
    bucket: float
    bucket_start: float
    max_samples: int
    instances_count: int = 0
    nodes_count: int = 0
    nodes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # on the step grid
    bars: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # on the bar grid, by label
    shown: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # ratio of the drawn nodes
    blocks: dict[str, list[dict]] = field(default_factory=dict)  # failed blocks of listed hosts
    fleet_curves_source: str = ""  # "recording rules" or "raw series" (Collector._node_curves)

    @property
    def grid(self) -> np.ndarray:
        n = int((self.end - self.start) // self.step) + 1
        return self.start + np.arange(n) * self.step

    @property
    def bar_grid(self) -> np.ndarray:
        n = int(round((self.end - self.bucket_start) / self.bucket))
        return self.bucket_start + self.bucket * np.arange(1, n + 1)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def probe(prom: Prometheus, selector: str, start: float, end: float, step: float) -> tuple[int, int]:
    """Fail early, and clearly, when the selector matches nothing or the range
    holds no data; else (instances, nodes) in the range.  Only counts and
    metric names come back, never a list of series (unless the server refuses
    the count over the whole range: then the keys of each shorter window)."""
    prom.buildinfo()
    window = format_duration(end - start)
    shown = "{" + selector + "}" if selector else "(no selector)"
    any_memhp = sel("", selector, '__name__=~"memhp_.+|.+:memhp_.+"')
    if not prom.metric_names(any_memhp):
        raise ReportError(
            f"no memhp series match the selector {shown} in Prometheus at {prom.url}: check the "
            f"label matchers (the recording rules keep only instance, node, zone, state, reason, "
            f"action and result) and that Prometheus scrapes memhp-exporter"
        )
    over_time = OverTime(prom, start, end, step)

    def count(by: str, metric: str) -> int:
        expr = _count_by(by, sel(metric, selector))
        try:
            return prom.count(expr(window), end)
        except SampleLimitError:
            return len(over_time.query(expr, "last"))

    nodes = count("instance, node", R_RATIO) or count("instance, node", R_STATE)
    if not nodes:
        raw = count("instance", "memhp_blocks_bytes")
        span = f"between {_iso(start)} and {_iso(end)}"
        if raw:
            raise ReportError(
                f"memhp_blocks_bytes has data {span} but the recording rule {R_STATE} has none: load "
                f"alerts/memhp.rules.yaml into Prometheus (or backfill it: promtool tsdb "
                f"create-blocks-from rules), and select only labels the rules keep"
            )
        names = prom.metric_names(any_memhp)
        raise ReportError(
            f"no data {span} (--range {window}): the selector {shown} matches {len(names)} memhp metric(s), "
            f"but none has samples in that range; pick another --end/--range"
        )
    instances = count("instance", R_STATE)
    return instances, nodes


class Collector:
    def __init__(
        self,
        prom: Prometheus,
        selector: str,
        start: float,
        end: float,
        step: float,
        max_samples: int,
        instances: int,
        nodes: int,
    ) -> None:
        self.prom, self.selector = prom, selector
        self.window = format_duration(end - start)
        bucket = event_bucket(end - start, step)
        b_start = end - math.ceil((end - start) / bucket - 1e-9) * bucket
        self.budget = max(1, int(max_samples * SAMPLE_SHARE))
        self.over_time = OverTime(prom, start, end, step)
        self.c = Collected(start, end, step, bucket, b_start, max_samples, instances, nodes)

    def s(self, metric: str, *extra: str) -> str:
        return sel(metric, self.selector, *extra)

    # -- batches of hosts: what is collected per node and per host never holds the whole fleet

    def instance_batches(self, per_batch: int) -> Iterator[list[str]]:
        """The hosts in the range, in name order, ``per_batch`` (and at most BATCH_CHARS of names)
        at a time.  Any series a host row reads makes it a host, as the fleet-wide queries did."""
        c = self.c
        names = self.prom.label_values("instance", [self.s(m) for m in HOST_METRICS], c.start, c.end)
        batch: list[str] = []
        size = 0
        for name in sorted(names):
            if batch and (len(batch) >= per_batch or size + len(name) > BATCH_CHARS):
                yield batch
                batch, size = [], 0
            batch.append(name)
            size += len(name) + 1
        if batch:
            yield batch

    def batch(self, names: list[str]) -> Collector:
        """A collector of the same period for these hosts only: its node and host rows are one
        batch's (the bars it counts are added to this collector's with ``add_bars``)."""
        c = self.c
        match = f'instance=~"{_promql_re("|".join(re.escape(n) for n in names))}"'
        nodes = max(1, -(-c.nodes_count * len(names) // max(c.instances_count, 1)))
        part = Collector(
            self.prom,
            ",".join(m for m in (self.selector, match) if m),
            c.start,
            c.end,
            c.step,
            c.max_samples,
            len(names),
            nodes,
        )
        return part

    def add_bars(self, bars: dict[str, dict[str, np.ndarray]]) -> None:
        for name, by_label in bars.items():
            mine = self.c.bars.setdefault(name, {})
            for label, arr in by_label.items():
                mine[label] = mine[label] + arr if label in mine else arr

    # -- per node and per host: one number per figure

    def _instant(self, expr: str) -> list[dict]:
        return self.prom.instant(expr, self.c.end)

    def node_figures(self) -> None:
        w, s = self.window, self.s
        rows = self.c.nodes

        def row(m: dict) -> dict[str, Any]:
            key = (m.get("instance", ""), m.get("node", ""))
            r = rows.get(key)
            if r is None:
                r = rows[key] = {"instance": key[0], "node": key[1]}
            return r

        def put(expr: str, name: str, by: str | None = None) -> None:
            store(self._instant(expr), name, by)

        def put_over(combine: Combine, expr: Callable[[str], str], name: str, by: str | None = None) -> None:
            store(self.over_time.query(expr, combine), name, by)

        def store(answer: list[dict], name: str, by: str | None) -> None:
            for e in answer:
                v = float(e["value"][1])
                r = row(e["metric"])
                if by is None:
                    r[name] = v
                else:
                    r.setdefault(name, {})[e["metric"].get(by, "")] = v

        fns: tuple[tuple[Combine, str], ...] = (("max", "peak"), ("min", "min"), ("last", "current"))
        for fn, what in fns:
            put_over(fn, _over_time(fn, s(R_RATIO)), f"ratio_{what}")
            put_over(fn, _over_time(fn, s(R_HOT)), f"hot_{what}")
        put_over("last", _over_time("last", s(R_STATE)), "state", by="state")
        not_online = s(R_STATE, 'state=~"offline|going-offline"')
        put_over("max", _over_time("max", not_online), "state_peak", by="state")
        put_over("last", _over_time("last", s(R_ZONE)), "zone", by="zone")
        # raw per-node gauges (one series per node, not per block)
        # boot memory in ZONE_DMA/ZONE_DMA32 (reason="boot_dma") is on every x86 host: not a finding
        unoff = s("memhp_blocks_unofflinable", 'reason="other"')
        put_over("max", lambda w: f"max by (instance, node) (max_over_time({unoff}[{w}]))", "unofflinable_peak")
        put_over("last", lambda w: f"max by (instance, node) (last_over_time({unoff}[{w}]))", "unofflinable_current")
        self._time_above()
        # blocks whose offlining failed in the range, by node (where memhp_block_info tells the node)
        f = self._failed_blocks()
        info = f"max by (instance, block, node) (last_over_time({s('memhp_block_info')}[{w}]))"
        joined = f"({f} * on (instance, block) group_left (node) {info})"
        put(f"count by (instance, node, reason) ({joined})", "failed_blocks_by_reason", by="reason")
        put(f"count by (instance, node) (max by (instance, node, block) ({joined}))", "failed_blocks")

    def _failed_blocks(self) -> str:
        """(instance, block, reason) of the blocks whose failure counter grew in
        the range, or appeared in it."""
        peak = (
            f"max by (instance, block, reason) (max_over_time({self.s('memhp_block_offline_failures_total')}"
            f"[{self.window}]))"
        )
        before = (
            f"max by (instance, block, reason) ({self.s('memhp_block_offline_failures_total')} offset {self.window})"
        )
        return f"((({peak} - {before}) > 0) or ({peak} > 0 unless {before}))"

    def _time_above(self) -> None:
        """Steps of the report's grid at which the ratio was above the warning
        and above the critical line, per node, from one subquery:
        ``sum_over_time(((ratio > bool warning) + SCALE * (ratio > bool critical))[w:step])``
        (the two counts packed in one number: a subquery is the costliest
        query of the report, and this reads the samples once, not twice).

        Only the hosts with a node whose ratio went above the warning line are asked (a
        node that never did has 0 steps above either line): in a fleet most
        hosts are not, and this query is most of Prometheus' time.  They are
        asked by batches of instance names; each batch is evaluated in
        consecutive windows small enough for the sample limit (a subquery
        holds both selectors' points of every node in its window at once)."""
        c = self.c
        r = self.s(R_RATIO)
        # the subquery's first step looks back before the range start: ask a wider range here, and
        # a node is a candidate if it went above the line in any window (a superset is harmless)
        wide = OverTime(self.prom, c.start - CANDIDATE_MARGIN, c.end, c.step)
        above = wide.query(lambda w: f"max_over_time({r}[{w}]) > {thresholds.LINES.warning:g}", "max")
        nodes_of: dict[str, int] = defaultdict(int)
        for e in above:
            nodes_of[e["metric"].get("instance", "")] += 1
        batch: list[str] = []
        size = 0
        for inst in sorted(nodes_of):
            if batch and size + len(inst) > BATCH_CHARS:
                self._time_above_of(batch, sum(nodes_of[i] for i in batch))
                batch, size = [], 0
            batch.append(inst)
            size += len(inst) + 1
        if batch:
            self._time_above_of(batch, sum(nodes_of[i] for i in batch))

    def _time_above_of(self, instances: list[str], candidates: int) -> None:
        c = self.c
        match = f'instance=~"{_promql_re("|".join(re.escape(i) for i in instances))}"'
        r = self.s(R_RATIO, match)
        # every node of these hosts is read, not only the candidates: two per host is a fair guess
        nodes = max(candidates, 2 * len(instances))
        total_steps = int((c.end - c.start) // c.step)
        per = max(1, min(total_steps, self.budget // max(2 * nodes, 1), SCALE - 1))
        k = 0
        lines = thresholds.LINES
        inner = f"(({r} > bool {lines.warning:g}) + {SCALE} * ({r} > bool {lines.critical:g}))"
        while k < total_steps:
            n = min(per, total_steps - k)
            at = c.end - k * c.step
            rng = f"{int(n * c.step * 1000) - 1}ms"  # (at - n steps, at]: windows do not overlap
            expr = f"sum_over_time({inner}[{rng}:{format_duration(c.step)}])"
            try:
                res = self.prom.instant(expr, at)
            except SampleLimitError:
                if per > 1:
                    per = max(1, per // 2)
                    continue
                raise
            for e in res:
                m = e["metric"]
                key = (m.get("instance", ""), m.get("node", ""))
                row = c.nodes.setdefault(key, {"instance": key[0], "node": key[1]})
                v = int(round(float(e["value"][1])))
                row["steps_above_warning"] = row.get("steps_above_warning", 0.0) + v % SCALE
                row["steps_above_critical"] = row.get("steps_above_critical", 0.0) + v // SCALE
            k += n

    def instance_figures(self) -> None:
        s = self.s
        rows = self.c.instances

        def store(answer: list[dict], name: str) -> None:
            for e in answer:
                inst = e["metric"].get("instance", "")
                rows.setdefault(inst, {"instance": inst})[name] = float(e["value"][1])

        def put_over(combine: Combine, expr: Callable[[str], str], name: str) -> None:
            store(self.over_time.query(expr, combine), name)

        size, quarantined = s("memhp_block_size_bytes"), s("memhp_controller_quarantined_blocks")
        put_over("last", lambda w: f"max by (instance) (last_over_time({size}[{w}]))", "block_size")
        put_over("max", lambda w: f"max by (instance) (max_over_time({quarantined}[{w}]))", "quarantined_peak")
        put_over("last", lambda w: f"max by (instance) (last_over_time({quarantined}[{w}]))", "quarantined_current")
        store(
            self._instant(f"count by (instance) (max by (instance, block) ({self._failed_blocks()}))"), "failed_blocks"
        )

    def _recent_count(self, metric: str) -> int:
        """Series of ``metric`` in the last hour of the range: the size of a
        query, cheaply (an estimate: a chunk that is still too big is halved)."""
        return self.prom.count(f"last_over_time({self.s(metric)}[1h])", self.c.end)

    # -- events: exact counts per bar, reduced while they stream in

    def event_figures(self) -> None:
        c = self.c
        grid = c.bar_grid
        specs: list[tuple[str, str, str, Callable[[dict], str], Callable[[dict], tuple]]] = [
            (
                "failures",
                "memhp_offline_failures_total",
                "instance, reason",
                lambda m: m.get("reason", "?"),
                lambda m: ("offline_failures_by_reason", m.get("reason", "")),
            ),
            (
                "actions",
                "memhp_controller_actions_total",
                "instance, action, result, errno",
                lambda m: f"{m.get('action', '?')} {m.get('result', '?')}",
                lambda m: ("actions", (m.get("action", ""), m.get("result", ""), m.get("errno", ""))),
            ),
        ]
        for name, metric, by, bar_label, inst_key in specs:
            outputs = max(1, self._recent_count(metric))  # about this many series come back
            bars: dict[str, np.ndarray] = {}
            expr = events(metric, by, self.selector, c.bucket)
            for chunk in self.prom.range_chunks(
                expr,
                grid[0],
                grid[-1],
                c.bucket,
                inputs=outputs * 2,
                outputs=outputs,
                max_samples=self.budget,
            ):
                for series in chunk:
                    m = series["metric"]
                    arr = bars.setdefault(bar_label(m), np.zeros(len(grid)))
                    total = 0.0
                    for t, v in series["values"]:
                        fv = float(v)
                        if math.isnan(fv):
                            continue
                        i = int(round((float(t) - grid[0]) / c.bucket))
                        if 0 <= i < len(grid):
                            arr[i] += fv
                            total += fv
                    if total:
                        inst = m.get("instance", "")
                        field_name, key = inst_key(m)
                        r = c.instances.setdefault(inst, {"instance": inst})
                        d = r.setdefault(field_name, {})
                        d[key] = d.get(key, 0.0) + total
            c.bars[name] = bars

    # -- fleet curves on the step grid

    def fleet_curves(self) -> None:
        c, s = self.c, self.s
        if self.selector:  # the cluster: rules cannot be filtered by instance: sum the instance: rules instead
            fleet_state, fleet_hot = f"sum by (state) ({s(R_I_STATE)})", f"sum({s(R_I_HOT)})"
            fleet_ratio = f"sum({s(R_I_MOV)}) / (sum({s(R_I_KER)}) > 0)"
            per_instance = max(c.instances_count, 1) * 3
        else:
            fleet_state = "cluster:memhp_blocks_bytes:sum_by_state"
            fleet_hot = "cluster:memhp_hot_unpluggable_bytes:sum"
            fleet_ratio = "cluster:memhp_movable_kernel_ratio:ratio"
            per_instance = 3
        queries: list[tuple[str, str, int, Callable[[dict], str]]] = [
            *self._node_curves(),
            (fleet_state, "state", per_instance, lambda m: m.get("state", "")),
            (fleet_hot, "hot", per_instance, lambda m: ""),
            (fleet_ratio, "ratio_fleet", per_instance, lambda m: ""),
        ]
        grid = c.grid
        for expr, name, inputs, label in queries:
            for chunk in self.prom.range_chunks(
                expr, c.start, c.end, c.step, inputs=inputs, outputs=8, max_samples=self.budget
            ):
                for series in chunk:
                    key = name + (":" + label(series["metric"]) if label(series["metric"]) else "")
                    arr = c.curves.get(key)
                    if arr is None:
                        arr = c.curves[key] = np.full(len(grid), math.nan)
                    _fill(arr, grid, c.step, series["values"])
        # kernel zones together
        kernel = [c.curves[k] for k in c.curves if k.startswith("zone:") and k[5:] in KERNEL_ZONES]
        if kernel:
            c.curves["zone:kernel"] = sum_keeping_gaps(kernel)
        # count() of nothing is no answer: 0 where there were ratios, a gap where there were none
        above = c.curves.get("nodes_above_warning", np.full(len(grid), math.nan))
        seen = np.isfinite(c.curves["ratio_max"]) if "ratio_max" in c.curves else np.zeros(len(grid), bool)
        c.curves["nodes_above_warning"] = np.where(seen, np.nan_to_num(above), math.nan)

    def _node_curves(self) -> list[tuple[str, str, int, Callable[[dict], str]]]:
        """The curves that reduce every node's series at each step: from the recording rules of
        alerts/memhp.rules.yaml (``fleet_curve_rules``) when they cover the whole range and the
        report is about the whole fleet, else from the raw per-node series (5-7 s per curve at
        20,000 nodes).  ``c.fleet_curves_source`` says which, for report.json."""
        c, s = self.c, self.s
        warning = f"{thresholds.LINES.warning:g}"
        if not self.selector and self._rules_cover_range():
            c.fleet_curves_source = "recording rules"
            q = "cluster:memhp_movable_kernel_ratio:quantile"
            return [
                (f'{q}{{quantile="0.5"}}', "ratio_p50", 1, lambda m: ""),
                (f'{q}{{quantile="0.9"}}', "ratio_p90", 1, lambda m: ""),
                ("cluster:memhp_movable_kernel_ratio:max", "ratio_max", 1, lambda m: ""),
                (
                    f'cluster:memhp_movable_kernel_ratio_above:count{{threshold="{warning}"}}',
                    "nodes_above_warning",
                    1,
                    lambda m: "",
                ),
                ("cluster:memhp_online_bytes:sum_by_zone", "zone", 8, lambda m: m.get("zone", "")),
            ]
        c.fleet_curves_source = "raw series"
        nodes = max(c.nodes_count, 1)
        zone_series = max(1, self._recent_count(R_ZONE))
        return [
            (f"quantile(0.5, {s(R_RATIO)})", "ratio_p50", nodes, lambda m: ""),
            (f"quantile(0.9, {s(R_RATIO)})", "ratio_p90", nodes, lambda m: ""),
            (f"max({s(R_RATIO)})", "ratio_max", nodes, lambda m: ""),
            (f"count({s(R_RATIO)} > {warning})", "nodes_above_warning", nodes, lambda m: ""),
            (f"sum by (zone) ({s(R_ZONE)})", "zone", zone_series, lambda m: m.get("zone", "")),
        ]

    def _rules_cover_range(self) -> bool:
        """Every fleet-curve rule has a sample near the start and at the end of the range: rules
        loaded during the range would leave the curves' first part empty, which the raw series
        would have filled."""
        c = self.c
        warning = f"{thresholds.LINES.warning:g}"
        names = (
            'cluster:memhp_movable_kernel_ratio:quantile{quantile="0.9"}',
            "cluster:memhp_movable_kernel_ratio:max",
            f'cluster:memhp_movable_kernel_ratio_above:count{{threshold="{warning}"}}',
            "cluster:memhp_online_bytes:sum_by_zone",
        )
        for at in (c.start + c.step, c.end):
            expr = " and ".join(f"(count(last_over_time({n}[{format_duration(2 * c.step)}])) > 0)" for n in names)
            if not self.prom.instant(expr, at):
                return False
        return True

    # -- only for what is drawn or listed

    def shown_ratio(self, keys: list[tuple[str, str]]) -> None:
        c = self.c
        keys = keys[:SHOWN_NODES]
        if not keys:
            return
        insts = "|".join(re.escape(i) for i in sorted({k[0] for k in keys}))
        want = set(keys)
        grid = c.grid
        for chunk in self.prom.range_chunks(
            self.s(R_RATIO, f'instance=~"{_promql_re(insts)}"'),
            c.start,
            c.end,
            c.step,
            inputs=len(keys) * 4,
            outputs=len(keys) * 4,
            max_samples=self.budget,
        ):
            for series in chunk:
                m = series["metric"]
                key = (m.get("instance", ""), m.get("node", ""))
                if key in want:
                    arr = c.shown.get(key)
                    if arr is None:
                        arr = c.shown[key] = np.full(len(grid), math.nan)
                    _fill(arr, grid, c.step, series["values"])

    def listed_blocks(self, instances: Iterable[str]) -> None:
        """Per-block detail (block, node, zone, reasons, failures, still online)
        of ``instances``: the hosts listed in the report that had blocks fail to
        offline (their rows are in the row store, not in this collector)."""
        c = self.c
        insts = sorted(set(instances))
        if not insts:
            return
        match = f'instance=~"{_promql_re("|".join(re.escape(i) for i in insts))}"'
        w = self.window
        per_block: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        grid = c.bar_grid
        expr = events("memhp_block_offline_failures_total", "instance, block, reason", self.selector, c.bucket, match)
        for chunk in self.prom.range_chunks(
            expr, grid[0], grid[-1], c.bucket, inputs=2000, outputs=2000, max_samples=self.budget
        ):
            for series in chunk:
                m = series["metric"]
                n = sum(float(v) for _, v in series["values"] if not math.isnan(float(v)))
                if n > 0:
                    d = per_block[(m.get("instance", ""), m.get("block", ""))]
                    d[m.get("reason", "")] = d.get(m.get("reason", ""), 0.0) + n
        failing = f"({self._failed_blocks()})"
        info = {
            (e["metric"].get("instance", ""), e["metric"].get("block", "")): e["metric"]
            for e in self._instant(
                f"max by (instance, block, node, zone, valid_zones) "
                f"(last_over_time({self.s('memhp_block_info', match)}[{w}])) and on (instance, block) {failing}"
            )
        }
        # The exporter exports a block one by one only while it is worth a look (a failing block
        # while it stays online), so only a sample at the end says "still online"; absent = unknown.
        state_online = self.s("memhp_block_state", match, 'state="online"')
        online = {
            (e["metric"].get("instance", ""), e["metric"].get("block", "")): float(e["value"][1])
            for e in self._instant(
                f"max by (instance, block) (last_over_time({state_online}[5m])) and on (instance, block) {failing}"
            )
        }
        for (inst, block), reasons in per_block.items():
            meta = info.get((inst, block), {})
            c.blocks.setdefault(inst, []).append(
                {
                    "block": block,
                    "node": meta.get("node"),
                    "zone": meta.get("zone"),
                    "valid_zones": meta.get("valid_zones"),
                    "failures": int(round(sum(reasons.values()))),
                    "reasons": {k: int(round(v)) for k, v in sorted(reasons.items())},
                    "still_online": None if (inst, block) not in online else online[(inst, block)] >= 1,
                }
            )
        for blocks in c.blocks.values():
            blocks.sort(key=lambda b: (int(b["block"]), b["block"]) if b["block"].isdigit() else (1 << 62, b["block"]))


def sum_keeping_gaps(curves: list[np.ndarray]) -> np.ndarray:
    """Point by point sum; where none of the curves has a value the sum has
    none either (a gap, not 0: before data exists nothing is known)."""
    stack = np.vstack(curves)
    return np.where(np.isfinite(stack).any(axis=0), np.nansum(stack, axis=0), math.nan)


def _count_by(by: str, selector: str) -> Callable[[str], str]:
    return lambda w: f"count by ({by}) (last_over_time({selector}[{w}]))"


def _over_time(fn: str, selector: str) -> Callable[[str], str]:
    return lambda w: f"{fn}_over_time({selector}[{w}])"


def _promql_re(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _fill(arr: np.ndarray, grid: np.ndarray, step: float, values: list) -> None:
    for t, v in values:
        i = int(round((float(t) - grid[0]) / step))
        if 0 <= i < len(arr):
            try:
                arr[i] = float(v)
            except (TypeError, ValueError):
                pass
