"""The capacity plan added to the review: auto-movable headroom, trends and
forecasts, the previous period, a recommendation per finding and links into
Grafana.  ``collect_plan`` asks Prometheus (planning.py); ``add_plan``
extends the report's rows and document data with what follows from it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import forecast, grafana, thresholds
from .analysis import SEVERITY_ORDER, Kind, fmt_bytes, fmt_ratio, node_group
from .collect import Collected, Collector
from .period import period_over_period
from .planning import headroom_curve, previous_period
from .recommend import annotate
from .rowstore import InstanceRows, NodeRows

# figures planning.py puts in the raw node rows, copied to the report's rows (nodes.csv columns)
ROW_FIELDS = (
    ("headroom_current", "auto_movable_headroom_bytes"),
    ("kernel_accounted", "kernel_accounted"),
)


@dataclass
class PlanData:
    previous: dict[str, float | None] = field(default_factory=dict)
    prev_start: float = 0.0
    prev_end: float = 0.0


def collect_plan(col: Collector) -> PlanData:
    """The fleet-level figures (the per-node ones, ``node_plan_figures``, come with each batch of
    hosts: cli._collect)."""
    headroom_curve(col)
    length = col.c.end - col.c.start
    return PlanData(previous_period(col), col.c.start - length, col.c.start)


def extend_rows(c: Collected, rows: list[dict]) -> None:
    """Headroom, kernel accounting and the trend of every node's row."""
    for row in rows:
        raw = c.nodes.get((row["instance"], row["node"]), {})
        for src, dst in ROW_FIELDS:
            row[dst] = raw.get(src)
    forecast.node_trends(rows, c.nodes, c.end - c.start)


def _entry_rising(n: dict, details: Any) -> str:
    lines = thresholds.LINES
    return (
        f"{n['instance']} node {n['node']} is at {fmt_ratio(n['ratio_current'])}, rising "
        f"{n['ratio_trend_per_day']:.2f} per day: above {lines.warning_label} "
        f"{forecast.in_words(n['days_to_warning'])}, above {lines.critical_label} "
        f"{forecast.in_words(n['days_to_critical'])}."
    )


def rising_kind(rows: Iterable[dict]) -> Kind:
    soon = {(r["instance"], r["node"]) for r in forecast.rising(rows)}
    lines = thresholds.LINES
    return Kind(
        "ratio_rising",
        "info",
        "MemhpMovableKernelRatioHigh",
        match=lambda n: (n["instance"], n["node"]) in soon,
        order=lambda n: (n["days_to_warning"], n["rank"]),
        headline=lambda found: (
            f"{len(found):,} node{'s' if len(found) != 1 else ''} at or under {lines.warning_label} now "
            f"{'is' if len(found) == 1 else 'are'} heading above it at the period's pace"
        ),
        entry=_entry_rising,
    )


def _links(report: dict, base: str | None) -> None:
    m = report["meta"]
    for n in report["nodes"]:
        n["grafana_url"] = grafana.node_url(base, n["instance"], n["node"], m["start"], m["end"]) if base else None
    for h in report["instances"]:
        h["grafana_url"] = grafana.node_url(base, h["instance"], None, m["start"], m["end"]) if base else None
    for g in report["findings"]:
        for e in g["entries"]:
            e["grafana_url"] = (
                grafana.node_url(base, e["instance"], e.get("node"), m["start"], m["end"]) if base else None
            )


NOT_FORESEEN = "not within the horizon"


def _summary(fleet: dict, trends: list[dict], rising: int) -> list[str]:
    lines = thresholds.LINES
    h = fleet["auto_movable_headroom_bytes"]
    out = [
        f"Auto-movable headroom (ZONE_MOVABLE that can still be onlined before the kernel's auto_movable_ratio): "
        f"{fmt_bytes(h['current'])} at the end (low {fmt_bytes(h['min'])})."
    ]
    t = next((t for t in trends if t["curve"] == "ratio_fleet"), None)
    if t is not None and t["ratio_trend_per_day"] is not None:
        out.append(
            f"Trend: fleet MOVABLE:KERNEL {t['ratio_trend_per_day']:+.2f} per day; above {lines.warning_label} "
            f"{forecast.in_words(t['days_to_warning'], NOT_FORESEEN)}, above {lines.critical_label} "
            f"{forecast.in_words(t['days_to_critical'], NOT_FORESEEN)} at this pace; {rising:,} "
            f"node{'s' if rising != 1 else ''} heading above {lines.warning_label}."
        )
    return out


def add_plan(
    report: dict,
    c: Collected,
    rows: NodeRows,
    insts: InstanceRows,
    data: PlanData,
    grafana_base: str | None,
    runbook_base: str,
    top_findings: int,
) -> None:
    """Extends the assembled report (report.json) in place: new keys only."""
    range_s = c.end - c.start
    group = node_group(rising_kind(rows), rows, lambda r: {}, runbook_base, top_findings)
    if group is not None:
        report["findings"].append(group)
        report["findings"].sort(key=lambda f: SEVERITY_ORDER[f["severity"]])
    annotate(report["findings"], rows, insts)
    _links(report, grafana_base)
    report["meta"]["grafana_url"] = grafana_base
    trends = forecast.fleet_trends(c.grid, c.curves, range_s)
    report["summary"] += _summary(report["fleet"], trends, len(forecast.rising(rows)))
    report["plan"] = {
        "assumptions": forecast.assumptions(range_s),
        "horizon_days": forecast.horizon_days(range_s),
        "fleet_trends": trends,
        "rising_nodes": len(forecast.rising(rows)),
        "period_over_period": period_over_period(report["fleet"], data.previous, data.prev_start, data.prev_end),
    }
