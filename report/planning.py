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
from collections.abc import Callable

import numpy as np

from memhp.promapi import Prometheus, SampleLimitError, format_duration

from . import thresholds
from .collect import R_I_HOT, R_I_KER, R_I_MOV, R_I_STATE, R_RATIO, Collected, Collector, events
from .overtime import OverTime

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
    """Per node: auto-movable headroom at the end, the
    slope of MOVABLE:KERNEL over the range (fitted on its two halves), and the
    kernel memory the exporter accounts at the end."""
    c, s = col.c, col.s
    head = s(HEADROOM)
    last = col.over_time.query(lambda w: f"max by (instance, node) (last_over_time({head}[{w}]))", "last")
    _store(c, _by_node(last), "headroom_current")
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
    # whole bytes: a sum of 20,000 fractional headrooms differs in its last digits with the order
    # Prometheus adds them in, which a --selector changes
    expr = f"round(sum(max by (instance, node) ({col.s(HEADROOM)})))"
    for chunk in col.prom.range_chunks(
        expr, c.start, c.end, c.step, inputs=max(c.nodes_count, 1), outputs=1, max_samples=col.budget
    ):
        for series in chunk:
            arr = c.curves.get("headroom")
            if arr is None:
                arr = c.curves["headroom"] = np.full(len(grid), math.nan)
            _fill(arr, grid, c.step, series["values"])


def previous_period(col: Collector) -> dict[str, float | None]:
    """The headline figures of the period of the same length before the
    reviewed one, each from one instant query at that period's end: the fleet
    figures from the same recording rules as the reviewed period's curves,
    the worst node and the nodes above each line from one ``max_over_time``
    of every node's ratio, the events from one sum.  None where that period
    has no data."""
    c, s = col.c, col.s
    at, length = c.start, c.end - c.start
    window, step = format_duration(length), format_duration(c.step)
    state, hot, ratio = _fleet_exprs(col)

    def one(expr: str) -> float | None:
        res = col.prom.instant(expr, at)
        return float(res[0]["value"][1]) if res else None

    peak_expr = (
        f"max_over_time({ratio}[{window}])" if not col.selector else f"max_over_time(({ratio})[{window}:{step}])"
    )
    out: dict[str, float | None] = {
        "ratio_current": one(ratio),
        "ratio_peak": one(peak_expr),
        "ratio_p50_current": one(f"quantile(0.5, {s(R_RATIO)})"),
        "ratio_p90_current": one(f"quantile(0.9, {s(R_RATIO)})"),
        "online_bytes_current": one(state("online")),
        "offline_bytes_current": one(state("offline")),
        "hot_unpluggable_bytes_current": one(hot),
        "headroom_bytes_current": one(f"round(sum(max by (instance, node) ({s(HEADROOM)})))"),
    }
    out.update(_peaks(col, at, length))
    seen = out["ratio_max_peak"] is not None
    if seen and out["offline_bytes_current"] is None:
        out["offline_bytes_current"] = 0.0  # no offline series while there were others: nothing offline
    out["offline_failures"] = _total(
        col.prom, events("memhp_offline_failures_total", "instance, reason", col.selector, length), at
    )
    out["failed_actions"] = _total(
        col.prom,
        events(
            "memhp_controller_actions_total", "instance, action, result, errno", col.selector, length, 'result="failed"'
        ),
        at,
    )
    if not seen:
        out["offline_failures"] = out["failed_actions"] = None
    return out


def _fleet_exprs(col: Collector) -> tuple[Callable[[str], str], str, str]:
    """Fleet memory by state, hot-unpluggable memory and MOVABLE:KERNEL, as
    Collector.fleet_curves reads them: the cluster: rules, or with a
    selector the instance: rules summed (the cluster: ones have no instance)."""
    s = col.s
    if col.selector:
        return (
            lambda st: "sum(" + s(R_I_STATE, 'state="' + st + '"') + ")",
            f"sum({s(R_I_HOT)})",
            f"sum({s(R_I_MOV)}) / (sum({s(R_I_KER)}) > 0)",
        )
    return (
        lambda st: f'sum(cluster:memhp_blocks_bytes:sum_by_state{{state="{st}"}})',
        "cluster:memhp_hot_unpluggable_bytes:sum",
        "cluster:memhp_movable_kernel_ratio:ratio",
    )


def _peaks(col: Collector, at: float, length: float) -> dict[str, float | None]:
    """The worst node's peak and the nodes above each line, from every node's
    peak ratio over the period (one number per node)."""
    lines = thresholds.LINES
    ratio = col.s(R_RATIO)
    over = OverTime(col.prom, at - length, at, col.c.step)
    try:
        peaks = [float(e["value"][1]) for e in over.query(lambda w: f"max_over_time({ratio}[{w}])", "max")]
    except SampleLimitError:
        return {"ratio_max_peak": None, "nodes_above_warning_in_period": None, "nodes_above_critical_in_period": None}
    if not peaks:
        return {"ratio_max_peak": None, "nodes_above_warning_in_period": None, "nodes_above_critical_in_period": None}
    return {
        "ratio_max_peak": max(peaks),
        "nodes_above_warning_in_period": float(sum(1 for p in peaks if p > lines.warning)),
        "nodes_above_critical_in_period": float(sum(1 for p in peaks if p > lines.critical)),
    }


def _total(prom: Prometheus, expr: str, at: float) -> float:
    """The sum of an events() expression over the whole window: one number."""
    res = prom.instant(f"sum({expr})", at)
    return float(res[0]["value"][1]) if res else 0.0
