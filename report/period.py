"""Period over period: each headline figure of the reviewed period beside
its value for the period of the same length just before it (None where
that period has no data: a gap, never 0)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import thresholds
from .analysis import _stats


def _previous_fleet(curves: dict[str, np.ndarray], counts: dict[str, float | None]) -> dict[str, Any]:
    seen = "ratio_max" in curves and bool(np.isfinite(curves["ratio_max"]).any())

    def stat(key: str, which: str) -> float | None:
        return _stats(curves.get(key))[which]

    def count(key: str) -> float | None:
        return counts.get(key) if seen else None

    return {
        "ratio_current": stat("ratio_fleet", "current"),
        "ratio_peak": stat("ratio_fleet", "peak"),
        "ratio_p50_current": stat("ratio_p50", "current"),
        "ratio_p90_current": stat("ratio_p90", "current"),
        "ratio_max_peak": stat("ratio_max", "peak"),
        "nodes_above_warning_in_period": count("nodes_above_warning_in_period"),
        "nodes_above_critical_in_period": count("nodes_above_critical_in_period"),
        "online_bytes_current": stat("state:online", "current"),
        "hot_unpluggable_bytes_current": stat("hot", "current"),
        "offline_bytes_current": (stat("state:offline", "current") or 0.0) if seen else None,
        "headroom_bytes_current": stat("headroom", "current"),
        "headroom_bytes_min": stat("headroom", "min"),
        "offline_failures": count("offline_failures"),
        "failed_actions": count("failed_actions"),
    }


def _current_fleet(f: dict) -> dict[str, Any]:
    return {
        "ratio_current": f["ratio"]["current"],
        "ratio_peak": f["ratio"]["peak"],
        "ratio_p50_current": f["ratio_p50"]["current"],
        "ratio_p90_current": f["ratio_p90"]["current"],
        "ratio_max_peak": f["ratio_max"]["peak"],
        "nodes_above_warning_in_period": f["nodes_above_warning_in_period"],
        "nodes_above_critical_in_period": f["nodes_above_critical_in_period"],
        "online_bytes_current": f["online_bytes"]["current"],
        "hot_unpluggable_bytes_current": f["hot_unpluggable_bytes"]["current"],
        "offline_bytes_current": f["offline_bytes"]["current"],
        "headroom_bytes_current": f["auto_movable_headroom_bytes"]["current"],
        "headroom_bytes_min": f["auto_movable_headroom_bytes"]["min"],
        "offline_failures": f["offline_failures"],
        "failed_actions": f["failed_actions"],
    }


def labels() -> list[tuple[str, str, str]]:
    """(key, what a reader calls it, unit: ratio, bytes or count)."""
    lines = thresholds.LINES
    return [
        ("ratio_current", "MOVABLE:KERNEL, fleet, at the end", "ratio"),
        ("ratio_peak", "MOVABLE:KERNEL, fleet, peak", "ratio"),
        ("ratio_p50_current", "MOVABLE:KERNEL, median node, at the end", "ratio"),
        ("ratio_p90_current", "MOVABLE:KERNEL, 90th percentile, at the end", "ratio"),
        ("ratio_max_peak", "MOVABLE:KERNEL, worst node, peak", "ratio"),
        ("nodes_above_warning_in_period", f"nodes above {lines.warning_label} during the period", "count"),
        ("nodes_above_critical_in_period", f"nodes above {lines.critical_label} during the period", "count"),
        ("online_bytes_current", "memory in online blocks, at the end", "bytes"),
        ("hot_unpluggable_bytes_current", "hot-unpluggable (online ZONE_MOVABLE), at the end", "bytes"),
        ("offline_bytes_current", "memory in offline blocks, at the end", "bytes"),
        ("headroom_bytes_current", "auto-movable headroom, at the end", "bytes"),
        ("headroom_bytes_min", "auto-movable headroom, lowest", "bytes"),
        ("offline_failures", "offline failures logged by the kernel", "count"),
        ("failed_actions", "controller actions that ended failed", "count"),
    ]


def period_over_period(
    fleet: dict, prev_curves: dict[str, np.ndarray], prev_counts: dict[str, float | None], start: float, end: float
) -> dict[str, Any]:
    cur, prev = _current_fleet(fleet), _previous_fleet(prev_curves, prev_counts)
    rows = [
        {
            "figure": key,
            "label": label,
            "unit": unit,
            "current": cur[key],
            "previous": prev[key],
            "change": None if cur[key] is None or prev[key] is None else cur[key] - prev[key],
        }
        for key, label, unit in labels()
    ]
    return {"previous_start": start, "previous_end": end, "rows": rows}
