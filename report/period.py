"""Period over period: each headline figure of the reviewed period beside
its value for the period of the same length just before it (None where
that period has no data: a gap, never 0)."""

from __future__ import annotations

from typing import Any

from . import thresholds


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
        ("offline_failures", "offline failures logged by the kernel", "count"),
        ("failed_actions", "controller actions that ended failed", "count"),
    ]


def period_over_period(fleet: dict, previous: dict[str, float | None], start: float, end: float) -> dict[str, Any]:
    cur = _current_fleet(fleet)
    rows = [
        {
            "figure": key,
            "label": label,
            "unit": unit,
            "current": cur[key],
            "previous": previous.get(key),
            "change": None if cur[key] is None or previous.get(key) is None else cur[key] - previous[key],
        }
        for key, label, unit in labels()
    ]
    return {"previous_start": start, "previous_end": end, "rows": rows}
