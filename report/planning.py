"""The queries behind the capacity plan: auto-movable headroom, each node's
MOVABLE:KERNEL trend, the kernel memory the exporter accounts, and the
previous period's fleet figures.

Every query is a reduction done by Prometheus: one number per node (like
collect.py's ``*_over_time`` figures) or a handful of fleet curves; nothing
here asks host by host.  The answers go into the Collected's rows and curves
under new keys; the figures are made in forecast.py, recommend.py and
period.py.
"""

from __future__ import annotations

import math

import numpy as np

from . import thresholds
from .collect import R_RATIO, Collected, Collector, events
from .overtime import Combine, OverTime
from .promapi import Prometheus, SampleLimitError, format_duration

# Raw exporter gauge (docs/metrics.md): no recording rule keeps it, so it is read as scraped.
HEADROOM = "memhp_node_auto_movable_headroom_bytes"
R_KERNEL_ACCOUNTED = "instance_node:memhp_node_kernel_accounted_bytes:sum"
# the accounted kernel memory is read over the last hour of the range: it changes only when
# memory is onlined to a kernel zone, and a node gone before that keeps its zone figures
KERNEL_LOOKBACK = 3600.0


def _by_node(answer: list[dict]) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for e in answer:
        v = float(e["value"][1])
        if math.isfinite(v):
            out[(e["metric"].get("instance", ""), e["metric"].get("node", ""))] = v
    return out


def _store(c: Collected, values: dict[tuple[str, str], float], name: str) -> None:
    """Into the rows of nodes the report already knows (a series of a node
    without a ratio makes no row of its own)."""
    for key, v in values.items():
        row = c.nodes.get(key)
        if row is not None:
            row[name] = v


def node_plan_figures(col: Collector) -> None:
    """Per node: auto-movable headroom at the end and at its lowest, the
    slope of MOVABLE:KERNEL over the range (fitted on its two halves), and the
    kernel memory the exporter accounts at the end."""
    c, s = col.c, col.s
    head = s(HEADROOM)
    combines: tuple[tuple[Combine, str], ...] = (("last", "headroom_current"), ("min", "headroom_min"))
    for combine, name in combines:

        def expr(w: str, fn: str = combine) -> str:
            return f"max by (instance, node) ({fn}_over_time({head}[{w}]))"

        _store(c, _by_node(col.over_time.query(expr, combine)), name)
    _store(c, _half_means_slope(col), "ratio_slope")
    lookback = format_duration(min(KERNEL_LOOKBACK, c.end - c.start))
    kernel = f"last_over_time({s(R_KERNEL_ACCOUNTED)}[{lookback}])"
    _store(c, _by_node(col.prom.instant(kernel, c.end)), "kernel_accounted")


def _half_means_slope(col: Collector) -> dict[tuple[str, str], float]:
    """Per node, the MOVABLE:KERNEL slope (per second) fitted on the range's
    two halves: (mean of the second half − mean of the first) / half the
    range; a least-squares fit on two groups, exact for a straight line.
    Not ``deriv()``: sums and counts over consecutive windows add up, so a
    server that refuses the whole range (OverTime splits it) gives the same
    figure to the last bit."""
    c = col.c
    ratio = col.s(R_RATIO)
    mid = c.start + (c.end - c.start) / 2
    means = []
    for lo, hi in ((c.start, mid), (mid, c.end)):
        half = OverTime(col.prom, lo, hi, c.step)
        sums = _by_node(half.query(lambda w: f"sum_over_time({ratio}[{w}])", "sum"))
        counts = _by_node(half.query(lambda w: f"count_over_time({ratio}[{w}])", "sum"))
        means.append({k: sums[k] / n for k, n in counts.items() if n > 0 and k in sums})
    first, second = means
    return {k: (second[k] - first[k]) / (mid - c.start) for k in second.keys() & first.keys()}


def _fill(arr: np.ndarray, grid: np.ndarray, step: float, values: list) -> None:
    for t, v in values:
        i = int(round((float(t) - grid[0]) / step))
        if 0 <= i < len(arr):
            arr[i] = float(v)


def headroom_curve(col: Collector) -> None:
    """The fleet's auto-movable headroom on the step grid (one summed series)."""
    c = col.c
    grid = c.grid
    expr = f"sum(max by (instance, node) ({col.s(HEADROOM)}))"
    for chunk in col.prom.range_chunks(
        expr, c.start, c.end, c.step, inputs=max(c.nodes_count, 1), outputs=1, max_samples=col.budget
    ):
        for series in chunk:
            arr = c.curves.get("headroom")
            if arr is None:
                arr = c.curves["headroom"] = np.full(len(grid), math.nan)
            _fill(arr, grid, c.step, series["values"])


def previous_period(col: Collector) -> tuple[Collected, dict[str, float | None]]:
    """The period of the same length before the reviewed one: its fleet
    curves (the same reductions as the reviewed period's), its headroom, the
    nodes that went above each line, and its event totals (in ``counts``)."""
    c = col.c
    length = c.end - c.start
    prev = Collector(
        col.prom, col.selector, c.start - length, c.start, c.step, c.max_samples, c.instances_count, c.nodes_count
    )
    prev.fleet_curves()
    headroom_curve(prev)
    return prev.c, _period_counts(prev)


def _period_counts(prev: Collector) -> dict[str, float | None]:
    c, prom = prev.c, prev.prom
    lines = thresholds.LINES
    ratio = prev.s(R_RATIO)
    try:
        above = prev.over_time.query(lambda w: f"max_over_time({ratio}[{w}]) > {lines.warning:g}", "max")
        peaks = [float(e["value"][1]) for e in above]
        nodes_warning: float | None = sum(1 for p in peaks if p > lines.warning)
        nodes_critical: float | None = sum(1 for p in peaks if p > lines.critical)
    except SampleLimitError:
        nodes_warning = nodes_critical = None
    window = c.end - c.start
    failures = _total(prom, events("memhp_offline_failures_total", "instance, reason", prev.selector, window), c.end)
    failed = _total(
        prom,
        events(
            "memhp_controller_actions_total",
            "instance, action, result, errno",
            prev.selector,
            window,
            'result="failed"',
        ),
        c.end,
    )
    return {
        "nodes_above_warning_in_period": nodes_warning,
        "nodes_above_critical_in_period": nodes_critical,
        "offline_failures": failures,
        "failed_actions": failed,
    }


def _total(prom: Prometheus, expr: str, at: float) -> float:
    """The sum of an events() expression over the whole window: one number."""
    res = prom.instant(f"sum({expr})", at)
    return float(res[0]["value"][1]) if res else 0.0
