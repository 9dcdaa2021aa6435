"""Where MOVABLE:KERNEL is heading: a straight line through the reviewed
period, per node (the slope between the means of the period's two halves,
planning.py: Prometheus sums and counts every sample) and for the fleet (a
least-squares fit on the reduced curves the report already holds),
continued from the last value to the warning and critical lines.

The assumptions, stated in the report (ASSUMPTIONS): the trend of the
period continues unchanged; steps (memory onlined or handed back at once)
count as part of the trend; nothing is forecast beyond HORIZON_FACTOR times
the reviewed period, nor for a ratio that is not rising by at least
MIN_SLOPE per day."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from . import thresholds

DAY = 86400.0
HORIZON_FACTOR = 4  # a straight line fitted over N days says little about more than 4N days ahead
MIN_SLOPE = 0.001  # per day: below this a ratio is flat (3.65 per decade at most)
# a slope's last bits depend on the order Prometheus adds samples in (one window or several): not kept
SLOPE_DIGITS = 6


def horizon_days(range_s: float) -> float:
    return HORIZON_FACTOR * range_s / DAY


def assumptions(range_s: float) -> str:
    lines = thresholds.LINES
    return (
        f"Trends are straight lines fitted over the reviewed period (per node: the difference between the "
        f"means of every sample of the period's two halves, divided by half the period; fleet curves: a "
        f"least-squares fit on the report's own curve), continued from the last "
        f"value until they cross {lines.warning_label} (warning) and {lines.critical_label} (critical). They "
        f"assume the period's pace continues: a step (memory onlined or handed back at once) weighs as part of "
        f"the trend, and a policy change or a new workload is not foreseen. No forecast is given for a ratio "
        f"rising by less than {MIN_SLOPE:g} per day, nor beyond {HORIZON_FACTOR}× the period "
        f"({horizon_days(range_s):g} days here)."
    )


def crossing(current: float | None, per_day: float | None, line: float, horizon: float) -> float | None:
    """Days until ``current`` rising at ``per_day`` crosses ``line``: 0 when it
    is already above, None when it is not rising or not within ``horizon``."""
    if current is None:
        return None
    if current > line:
        return 0.0
    if per_day is None or per_day < MIN_SLOPE:
        return None
    days = (line - current) / per_day
    return days if days <= horizon else None


def trend(current: float | None, per_day: float | None, horizon: float) -> dict[str, Any]:
    lines = thresholds.LINES
    return {
        "ratio_trend_per_day": per_day,
        "days_to_warning": crossing(current, per_day, lines.warning, horizon),
        "days_to_critical": crossing(current, per_day, lines.critical, horizon),
    }


def node_trends(rows: list[dict], raw: dict[tuple[str, str], dict], range_s: float) -> None:
    """Adds each node's trend fields to its row (nodes.csv columns)."""
    horizon = horizon_days(range_s)
    for row in rows:
        d = raw.get((row["instance"], row["node"]), {}).get("ratio_slope")
        per_day = None if d is None or not math.isfinite(d) else round(d * DAY, SLOPE_DIGITS)
        row.update(trend(row["ratio_current"], per_day, horizon))


def fit(grid: np.ndarray, y: np.ndarray | None) -> tuple[float | None, float | None]:
    """(last value, least-squares slope per day) of a curve; None where it has
    fewer than two points."""
    if y is None:
        return None, None
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return (float(y[ok][-1]) if ok.any() else None), None
    t, v = grid[ok], y[ok]
    slope = round(float(np.polyfit((t - t[0]) / DAY, v, 1)[0]), SLOPE_DIGITS)
    return float(v[-1]), slope


FLEET_CURVES = (
    ("ratio_fleet", "fleet (sum MOVABLE / sum KERNEL)"),
    ("ratio_p50", "median node"),
    ("ratio_p90", "90th percentile node"),
    ("ratio_max", "worst node"),
)


def fleet_trends(grid: np.ndarray, curves: dict[str, np.ndarray], range_s: float) -> list[dict[str, Any]]:
    horizon = horizon_days(range_s)
    out = []
    for key, label in FLEET_CURVES:
        current, per_day = fit(grid, curves.get(key))
        if current is None:
            continue
        out.append({"curve": key, "label": label, "current": current, **trend(current, per_day, horizon)})
    return out


def rising(rows: Iterable[dict]) -> list[dict]:
    """Nodes at or under the warning line now whose trend crosses it within
    the horizon, soonest first."""
    lines = thresholds.LINES
    found = [
        r
        for r in rows
        if r.get("days_to_warning") and r["ratio_current"] is not None and r["ratio_current"] <= lines.warning
    ]
    return sorted(found, key=lambda r: (r["days_to_warning"], r["rank"]))


def in_words(days: float | None, none: str = "–") -> str:
    """A forecast as a person says it: "already above", "in 12 h", "in 2.5
    days", or ``none`` (not rising, or not within the horizon)."""
    if days is None:
        return none
    if days == 0:
        return "already above"
    if days < 2:
        return f"in {days * 24:.0f} h"
    return f"in {days:.1f} days"
