"""PNG charts (matplotlib, Agg, no pyplot state) of the fleet: the
MOVABLE:KERNEL distribution over time (p50/p90/max) against the alerts' warning and critical lines,
capacity by zone over time, offline failures by reason and controller
actions, and the ratio of the few worst nodes.  Every chart is drawn from a
handful of curves, whatever the fleet's size.  Every figure has a fixed pixel size (dpi 100, no tight
bounding box), so the HTML and the tests know it in advance."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.ticker as mticker
import numpy as np
from matplotlib.figure import Figure

from . import thresholds
from .collect import Collected

DPI = 100
WIDTH = 1000
GiB = float(1 << 30)

LAYERS = [
    ("kernel zones (online)", "#4c72b0"),
    ("ZONE_MOVABLE (online)", "#55a868"),
    ("mixed zones (online)", "#8172b2"),
    ("offline", "#b8b8b8"),
    ("going-offline", "#dd8452"),
]
NODE_COLORS = [
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
]  # no orange or red: those are the warning and critical lines
REASON_COLORS = ["#c44e52", "#dd8452", "#8172b2", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]


def _dates(ts: np.ndarray) -> np.ndarray:
    return np.array(np.round(ts).astype("int64"), dtype="datetime64[s]")


class TimeFormatter(mticker.Formatter):
    """Tick labels that are whole times or dates, never a bare "10" (the
    concise formatter's minute or day numbers, whose meaning sits in an
    offset text a reader misses): "Dec 07 14:00" where the day changes (and
    on the first tick), "14:30" for the other ticks of the same day, "Dec 07"
    for midnights on ranges of days.  All in UTC, as the report's times."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return self.format_ticks([x])[0]

    def format_ticks(self, values: Any) -> list[str]:
        times = [mdates.num2date(v, tz=UTC) for v in values]
        midnights = all(t.hour == 0 and t.minute == 0 for t in times)
        out, day = [], None
        for t in times:
            if midnights:
                out.append(t.strftime("%b %d"))
            elif t.date() != day:
                out.append(t.strftime("%b %d %H:%M"))
            else:
                out.append(t.strftime("%H:%M"))
            day = t.date()
        return out


def _time_axis(ax: Any) -> None:
    locator = mdates.AutoDateLocator(maxticks=8, tz=UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(TimeFormatter())
    ax.set_xlabel("UTC", fontsize=8, loc="right")
    ax.grid(True, alpha=0.3)


def _figure(height_px: int) -> Figure:
    return Figure(figsize=(WIDTH / DPI, height_px / DPI), dpi=DPI, layout="constrained")


def _save(fig: Figure, path: Path) -> dict[str, Any]:
    fig.savefig(path, format="png", dpi=DPI)
    w, h = fig.get_size_inches() * DPI
    return {"file": f"{path.parent.name}/{path.name}", "width": int(round(w)), "height": int(round(h))}


def _ratio_lines(ax: Any) -> None:
    lines = thresholds.LINES
    for value, color, label in (
        (lines.warning, "#e08a00", f"{lines.warning_label} (warning)"),
        (lines.critical, "#d62728", f"{lines.critical_label} (critical)"),
    ):
        ax.axhline(value, color=color, linestyle="--", linewidth=1.4, label=label, zorder=0)


def distribution_chart(c: Collected, path: Path) -> dict[str, Any] | None:
    fig = distribution_figure(c)
    return None if fig is None else _save(fig, path)


def distribution_figure(c: Collected) -> Figure | None:
    cur = c.curves
    if not any(k in cur for k in ("ratio_p50", "ratio_p90", "ratio_max")):
        return None
    x = _dates(c.grid)
    fig = _figure(520)
    top_ax, low_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top = 0.0
    for key, label, color, width in (
        ("ratio_max", "worst node", "#7f7f7f", 1.2),
        ("ratio_p90", "90th percentile", "#1f77b4", 1.8),
        ("ratio_p50", "median node", "#2ca02c", 1.8),
        ("ratio_fleet", "fleet (sum MOVABLE / sum KERNEL)", "#9467bd", 1.0),
    ):
        y = cur.get(key)
        if y is None:
            continue
        if np.isfinite(y).any():
            top = max(top, float(np.nanmax(y)))
        top_ax.plot(x, y, linewidth=width, color=color, label=label)
    _ratio_lines(top_ax)
    top_ax.set_ylim(0, max(top, thresholds.LINES.critical) * 1.12)
    top_ax.set_ylabel("MOVABLE:KERNEL")
    top_ax.set_title("MOVABLE:KERNEL across the fleet's NUMA nodes", fontsize=11)
    top_ax.legend(loc="upper left", fontsize=8, ncols=3)
    _time_axis(top_ax)
    above = cur.get("nodes_above_warning", np.full(len(x), np.nan))
    low_ax.fill_between(x, above, step="mid", color="#e08a00", alpha=0.6, linewidth=0)
    low_ax.set_ylabel(f"nodes > {thresholds.LINES.warning_label}")
    low_ax.set_ylim(0, max(1.0, float(np.nanmax(above)) * 1.15 if np.isfinite(above).any() else 1.0))
    top_ax.set_xlim(x[0], x[-1])
    _time_axis(low_ax)
    return fig


def _unit(peak: float) -> tuple[float, str]:
    for name, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if peak >= size:
            return float(size), name
    return 1.0, "bytes"


def capacity_chart(c: Collected, path: Path) -> dict[str, Any] | None:
    fig = capacity_figure(c)
    return None if fig is None else _save(fig, path)


def capacity_layers(c: Collected) -> list[np.ndarray] | None:
    """The stacked layers on the step grid: a layer without a sample at a
    point counts 0 there when another layer has one (no offline blocks is 0
    offline bytes), and every layer is a gap where none has (before data
    exists nothing is known: not 0 GiB)."""
    cur = c.curves
    n = len(c.grid)
    layers = [
        cur.get("zone:kernel"),
        cur.get("zone:Movable"),
        cur.get("zone:none"),
        cur.get("state:offline"),
        cur.get("state:going-offline"),
    ]
    if all(layer is None for layer in layers):
        return None
    known = np.zeros(n, bool)
    for layer in layers:
        if layer is not None:
            known |= np.isfinite(layer)
    return [np.where(known, np.nan_to_num(layer) if layer is not None else 0.0, np.nan) for layer in layers]


def capacity_figure(c: Collected) -> Figure | None:
    ys = capacity_layers(c)
    if ys is None:
        return None
    total = np.sum(ys, axis=0)
    size, unit = _unit(float(np.nanmax(total)) if np.isfinite(total).any() else 0.0)
    fig = _figure(380)
    ax = fig.add_subplot()
    ax.stackplot(
        _dates(c.grid),
        *[y / size for y in ys],
        labels=[name for name, _ in LAYERS],
        colors=[col for _, col in LAYERS],
        linewidth=0,
    )
    ax.set_ylabel(unit)
    ax.set_title("Fleet memory by zone and block state", fontsize=11)
    _time_axis(ax)
    ax.set_xlim(_dates(np.array([c.start]))[0], _dates(np.array([c.end]))[0])
    ax.legend(loc="lower left", fontsize=8, ncols=len(LAYERS))
    return fig


def worst_nodes_chart(c: Collected, order: list[tuple[str, str]], path: Path) -> dict[str, Any] | None:
    fig = worst_nodes_figure(c, order)
    return None if fig is None else _save(fig, path)


def worst_nodes_figure(c: Collected, order: list[tuple[str, str]]) -> Figure | None:
    keys = [k for k in order if k in c.shown]
    if not keys:
        return None
    x = _dates(c.grid)
    fig = _figure(400)
    ax = fig.add_subplot()
    top = 0.0
    for i, key in enumerate(keys):
        y = c.shown[key]
        if np.isfinite(y).any():
            top = max(top, float(np.nanmax(y)))
        ax.plot(x, y, linewidth=1.6, color=NODE_COLORS[i % len(NODE_COLORS)], label=f"{key[0]} node {key[1]}")
    _ratio_lines(ax)
    ax.set_ylim(0, max(top, thresholds.LINES.critical) * 1.12)
    ax.set_ylabel("MOVABLE:KERNEL")
    ax.set_title(f"MOVABLE:KERNEL of the {len(keys)} highest-risk nodes", fontsize=11)
    _time_axis(ax)
    ax.legend(loc="upper left", fontsize=8, ncols=3)
    return fig


def _bar_chart(
    c: Collected, bars: dict[str, np.ndarray], title: str, ylabel: str, path: Path, colors: dict[str, str] | None = None
) -> dict[str, Any] | None:
    series = {k: v for k, v in bars.items() if (v > 0).any()}
    if not series:
        return None
    times = c.bar_grid
    fig = _figure(350)
    ax = fig.add_subplot()
    # a bar covers (t - bucket, t]: draw it centred on its middle
    x = _dates(times - c.bucket / 2)
    width = np.timedelta64(int(c.bucket * 0.9), "s")
    bottom = np.zeros(len(times))
    for i, lbl in enumerate(sorted(series)):
        y = np.clip(series[lbl], 0, None)
        ax.bar(
            x,
            y,
            width=width,
            bottom=bottom,
            label=lbl,
            color=(colors or {}).get(lbl, REASON_COLORS[i % len(REASON_COLORS)]),
        )
        bottom += y
    ax.set_xlim(_dates(np.array([c.start]))[0], _dates(np.array([c.end]))[0])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    _time_axis(ax)
    ax.legend(loc="upper left", fontsize=8, ncols=3)
    return _save(fig, path)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"


def render_charts(c: Collected, order: list[tuple[str, str]], outdir: Path) -> dict[str, dict[str, Any]]:
    outdir.mkdir(parents=True, exist_ok=True)
    made = {
        "distribution": distribution_chart(c, outdir / "distribution.png"),
        "capacity": capacity_chart(c, outdir / "capacity.png"),
        "failures": _bar_chart(
            c,
            c.bars.get("failures", {}),
            "Offline failures by reason (kernel log), whole fleet",
            f"failures per {_hours(c.bucket)}",
            outdir / "failures.png",
        ),
        "actions": _bar_chart(
            c,
            c.bars.get("actions", {}),
            "Controller actions on memory blocks, by result, whole fleet",
            f"blocks per {_hours(c.bucket)}",
            outdir / "actions.png",
            colors={
                "online ok": "#55a868",
                "offline ok": "#4c72b0",
                "rebalance ok": "#64b5cd",
                "online failed": "#c44e52",
                "offline failed": "#dd8452",
                "rebalance failed": "#8172b2",
            },
        ),
        "worst_nodes": worst_nodes_chart(c, order, outdir / "worst_nodes.png"),
    }
    return {name: info for name, info in made.items() if info}
