"""Every query ``memhp report`` sends, and the figures made from the answers.

Recording rules (``alerts/memhp.rules.yaml``) are used wherever one exists;
raw metrics otherwise (each such query names the recording rule that would
serve it, see docs/capacity-review.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from memhp.thresholds import ratio_thresholds

from .promapi import Prometheus, ReportError, format_duration

KERNEL_ZONES = ("DMA", "DMA32", "Normal")
# The alerts' thresholds (memhp/thresholds.yaml), so the report flags what the alerts flag.
RATIO_WARNING, RATIO_CRITICAL = ratio_thresholds()

# Recording rules this report reads (the probe checks the first one exists).
R_STATE = "instance_node:memhp_blocks_bytes:sum_by_state"
R_ZONE = "instance_node:memhp_online_bytes:sum_by_zone"
R_RATIO = "instance_node:memhp_movable_kernel_ratio:ratio"
R_HOT = "instance_node:memhp_hot_unpluggable_bytes:sum"
R_I_STATE = "instance:memhp_blocks_bytes:sum_by_state"
R_I_HOT = "instance:memhp_hot_unpluggable_bytes:sum"
R_I_MOV = "instance:memhp_node_movable_accounted_bytes:sum"
R_I_KER = "instance:memhp_node_kernel_accounted_bytes:sum"


@dataclass
class Series:
    """One range-query series: label set and (t, value) points."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


@dataclass
class Collected:
    start: float
    end: float
    step: float
    bucket: float
    bucket_start: float = 0.0
    instant: dict[str, list[dict]] = field(default_factory=dict)
    ranges: dict[str, list[Series]] = field(default_factory=dict)
    events: dict[str, list[Series]] = field(default_factory=dict)  # counter differences per bar (analysis.py)


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


def queries(selector: str, window: str, bucket_s: float) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """(instant queries evaluated at the end of the range, range queries as
    (expr, "step"|"bucket")) by name."""
    s = lambda m, *x: sel(m, selector, *x)  # noqa: E731
    block_state_online = s("memhp_block_state", 'state="online"')
    failing = f"(max by (instance, block) (max_over_time({s('memhp_block_offline_failures_total')}[{window}])) > 0)"
    instant = {
        "ratio_peak": f"max_over_time({s(R_RATIO)}[{window}])",
        "ratio_min": f"min_over_time({s(R_RATIO)}[{window}])",
        "ratio_current": f"last_over_time({s(R_RATIO)}[{window}])",
        "hot_peak": f"max_over_time({s(R_HOT)}[{window}])",
        "hot_min": f"min_over_time({s(R_HOT)}[{window}])",
        "hot_current": f"last_over_time({s(R_HOT)}[{window}])",
        "state_current": f"last_over_time({s(R_STATE)}[{window}])",
        "state_peak": f"max_over_time({s(R_STATE)}[{window}])",
        "zone_current": f"last_over_time({s(R_ZONE)}[{window}])",
        # raw: a recording rule instance_node:memhp_blocks_unofflinable:sum would serve these
        "unofflinable_peak": f"max by (instance, node) (max_over_time({s('memhp_blocks_unofflinable')}[{window}]))",
        "unofflinable_current": f"max by (instance, node) (last_over_time({s('memhp_blocks_unofflinable')}[{window}]))",
        # blocks that failed offlining: their node and zone, and whether still online at the end
        "block_info": f"max by (instance, block, node, zone, valid_zones) "
        f"(last_over_time({s('memhp_block_info')}[{window}])) and on (instance, block) {failing}",
        # The exporter exports a block one by one only while it is worth a look (a failing block
        # while it stays online), so only a sample at the end says "still online"; absent = unknown.
        "block_online": f"max by (instance, block) (last_over_time({block_state_online}[5m]))"
        f" and on (instance, block) {failing}",
        "block_size": f"max by (instance) (last_over_time({s('memhp_block_size_bytes')}[{window}]))",
        "quarantined_peak": f"max by (instance) (max_over_time({s('memhp_controller_quarantined_blocks')}[{window}]))",
        "quarantined_current": f"max by (instance) "
        f"(last_over_time({s('memhp_controller_quarantined_blocks')}[{window}]))",
    }
    if selector:  # the cluster: rules cannot be filtered by instance: sum the instance: rules instead
        fleet_state = f"sum by (state) ({s(R_I_STATE)})"
        fleet_hot = f"sum({s(R_I_HOT)})"
        fleet_ratio = f"sum({s(R_I_MOV)}) / (sum({s(R_I_KER)}) > 0)"
    else:
        fleet_state = "cluster:memhp_blocks_bytes:sum_by_state"
        fleet_hot = "cluster:memhp_hot_unpluggable_bytes:sum"
        fleet_ratio = "cluster:memhp_movable_kernel_ratio:ratio"
    ranges = {
        "ratio": (s(R_RATIO), "step"),
        "state": (s(R_STATE), "step"),
        "zone": (s(R_ZONE), "step"),
        "fleet_state": (fleet_state, "step"),
        "fleet_hot": (fleet_hot, "step"),
        "fleet_ratio": (fleet_ratio, "step"),
        # Events (raw counters, sampled at every bar boundary; counted as differences in analysis.py).
        # Not the rules' 5m rates: rate() never extrapolates a counter below zero, so a rate5m rule
        # loses part of the first events of a counter that starts at 0 (12% in the test history),
        # and increase() over a bar has the same edge effects.
        "failure_counters": (f"sum by (instance, reason) ({s('memhp_offline_failures_total')})", "bucket"),
        "block_failure_counters": (
            f"sum by (instance, block, reason) ({s('memhp_block_offline_failures_total')})",
            "bucket",
        ),
        "action_counters": (
            f"sum by (instance, action, result, errno) ({s('memhp_controller_actions_total')})",
            "bucket",
        ),
    }
    return instant, ranges


def probe(prom: Prometheus, selector: str, start: float, end: float) -> None:
    """Fail early, and clearly, when the selector matches nothing or the range
    holds no data."""
    prom.buildinfo()
    window = format_duration(end - start)
    shown = "{" + selector + "}" if selector else "(no selector)"
    any_memhp = sel("", selector, '__name__=~"memhp_.+|.+:memhp_.+"')
    if prom.series_count(any_memhp) == 0:
        raise ReportError(
            f"no memhp series match the selector {shown} in Prometheus at {prom.url}: check the "
            f"label matchers (the recording rules keep only instance, node, zone, state, reason, "
            f"action and result) and that Prometheus scrapes memhp-exporter"
        )
    if not prom.instant(f"count(count_over_time({sel(R_STATE, selector)}[{window}]))", end):
        raw = prom.instant(f"count(count_over_time({sel('memhp_blocks_bytes', selector)}[{window}]))", end)
        span = f"between {_iso(start)} and {_iso(end)}"
        if raw:
            raise ReportError(
                f"memhp_blocks_bytes has data {span} but the recording rule {R_STATE} has none: load "
                f"alerts/memhp.rules.yaml into Prometheus (or backfill it: promtool tsdb "
                f"create-blocks-from rules), and select only labels the rules keep"
            )
        n = prom.series_count(sel(R_STATE, selector)) or prom.series_count(any_memhp)
        raise ReportError(
            f"no data {span} (--range {window}): the selector {shown} matches {n} memhp series, "
            f"but none has samples in that range; pick another --end/--range"
        )


def collect(
    prom: Prometheus,
    selector: str,
    start: float,
    end: float,
    step: float,
    progress: Callable[[int], None] | None = None,
) -> Collected:
    window = format_duration(end - start)
    bucket = event_bucket(end - start, step)
    instant_q, range_q = queries(selector, window, bucket)
    # counters sampled at end, end - bucket, ..., back to the first boundary at or before start
    b_end = end
    b_start = end - math.ceil((end - start) / bucket - 1e-9) * bucket
    if progress:
        total = len(instant_q) + sum(
            prom.range_requests(start, end, step) if kind == "step" else prom.range_requests(b_start, b_end, bucket)
            for _, kind in range_q.values()
        )
        progress(total)
    out = Collected(start=start, end=end, step=step, bucket=bucket, bucket_start=b_start)
    for name, expr in instant_q.items():
        out.instant[name] = prom.instant(expr, end)
    for name, (expr, kind) in range_q.items():
        if kind == "step":
            res = prom.range(expr, start, end, step)
        else:
            res = prom.range(expr, b_start, b_end, bucket)
        out.ranges[name] = [Series(r["metric"], [(float(t), _num(v)) for t, v in r["values"]]) for r in res]
    return out


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _iso(ts: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
