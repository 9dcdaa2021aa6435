"""PNG charts (matplotlib, Agg, no pyplot state): capacity per node, the
MOVABLE:KERNEL ratio against 3:1 and 4:1, offline failures by reason and
controller actions.  Every figure has a fixed pixel size (dpi 100, no tight
bounding box), so the HTML and the tests know it in advance."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import numpy as np
from matplotlib.figure import Figure

from .collect import KERNEL_ZONES, RATIO_CRITICAL, RATIO_WARNING, Collected, Series

DPI = 100
WIDTH = 1000
MAX_CAPACITY_NODES = 12
MAX_RATIO_NODES = 10
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
]  # no orange or red: those are the 3:1 and 4:1 lines
REASON_COLORS = ["#c44e52", "#dd8452", "#8172b2", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]


def _grid(c: Collected) -> np.ndarray:
    n = int((c.end - c.start) // c.step) + 1
    return c.start + np.arange(n) * c.step


def _on_grid(grid: np.ndarray, points: list[tuple[float, float]], fill: float = math.nan) -> np.ndarray:
    out = np.full(len(grid), fill)
    if len(grid) == 0:
        return out
    step = grid[1] - grid[0] if len(grid) > 1 else 1.0
    for t, v in points:
        i = int(round((t - grid[0]) / step))
        if 0 <= i < len(grid) and not math.isnan(v):
            out[i] = v
    return out


def _dates(ts: np.ndarray) -> np.ndarray:
    return np.array(np.round(ts).astype("int64"), dtype="datetime64[s]")


def _time_axis(ax: Any) -> None:
    locator = mdates.AutoDateLocator(maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(True, alpha=0.3)


def _figure(height_px: int) -> Figure:
    return Figure(figsize=(WIDTH / DPI, height_px / DPI), dpi=DPI, layout="constrained")


def _save(fig: Figure, path: Path) -> dict[str, Any]:
    fig.savefig(path, format="png", dpi=DPI)
    w, h = fig.get_size_inches() * DPI
    return {"file": f"{path.parent.name}/{path.name}", "width": int(round(w)), "height": int(round(h))}


def capacity_chart(c: Collected, order: list[tuple[str, str]], path: Path) -> dict[str, Any] | None:
    keys = order[:MAX_CAPACITY_NODES]
    if not keys:
        return None
    grid = _grid(c)
    zone: dict[tuple[str, str], dict[str, list]] = {}
    for s in c.ranges["zone"]:
        zone.setdefault((s.labels.get("instance", ""), s.labels.get("node", "")), {})[s.labels.get("zone", "")] = (
            s.points
        )
    state: dict[tuple[str, str], dict[str, list]] = {}
    for s in c.ranges["state"]:
        state.setdefault((s.labels.get("instance", ""), s.labels.get("node", "")), {})[s.labels.get("state", "")] = (
            s.points
        )
    cols = 2 if len(keys) > 1 else 1
    rows = math.ceil(len(keys) / cols)
    fig = _figure(250 * rows + 50)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    x = _dates(grid)
    for i, key in enumerate(keys):
        ax = axes[i // cols][i % cols]
        z, st = zone.get(key, {}), state.get(key, {})
        kernel = sum((_on_grid(grid, z.get(k, []), 0.0) for k in KERNEL_ZONES), np.zeros(len(grid)))
        layers = [
            kernel,
            _on_grid(grid, z.get("Movable", []), 0.0),
            _on_grid(grid, z.get("none", []), 0.0),
            _on_grid(grid, st.get("offline", []), 0.0),
            _on_grid(grid, st.get("going-offline", []), 0.0),
        ]
        ax.stackplot(
            x,
            *[layer / GiB for layer in layers],
            labels=[n for n, _ in LAYERS],
            colors=[col for _, col in LAYERS],
            linewidth=0,
        )
        ax.set_title(f"{key[0]} node {key[1]}", fontsize=10)
        ax.set_ylabel("GiB")
        _time_axis(ax)
    for j in range(len(keys), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(LAYERS), fontsize=9, frameon=False)
    return _save(fig, path)


def ratio_chart(c: Collected, order: list[tuple[str, str]], path: Path) -> dict[str, Any] | None:
    series = {(s.labels.get("instance", ""), s.labels.get("node", "")): s.points for s in c.ranges["ratio"]}
    keys = [k for k in order if k in series][:MAX_RATIO_NODES]
    if not keys:
        return None
    grid = _grid(c)
    x = _dates(grid)
    fig = _figure(400)
    ax = fig.add_subplot()
    top = 0.0
    for i, key in enumerate(keys):
        y = _on_grid(grid, series[key])
        if np.isfinite(y).any():
            top = max(top, float(np.nanmax(y)))
        ax.plot(x, y, linewidth=1.6, color=NODE_COLORS[i % len(NODE_COLORS)], label=f"{key[0]} node {key[1]}")
    ax.axhline(RATIO_WARNING, color="#e08a00", linestyle="--", linewidth=1.4, label="3:1 (warning)", zorder=0)
    ax.axhline(RATIO_CRITICAL, color="#d62728", linestyle="--", linewidth=1.4, label="4:1 (critical)", zorder=0)
    ax.set_ylim(0, max(top, RATIO_CRITICAL) * 1.12)
    ax.set_ylabel("MOVABLE:KERNEL")
    ax.set_title("MOVABLE:KERNEL ratio per node", fontsize=11)
    _time_axis(ax)
    ax.legend(loc="upper left", fontsize=8, ncols=3)
    return _save(fig, path)


def _bar_chart(
    c: Collected, name: str, label_of: Any, title: str, ylabel: str, path: Path, colors: dict[str, str] | None = None
) -> dict[str, Any] | None:
    grouped: dict[str, dict[float, float]] = {}
    for s in c.events.get(name, []):
        g = grouped.setdefault(label_of(s), {})
        for t, v in s.points:
            g[t] = g.get(t, 0.0) + v
    series = [Series({"label": k}, sorted(v.items())) for k, v in grouped.items() if any(x > 0 for x in v.values())]
    label_of = lambda s: s.labels["label"]  # noqa: E731
    if not series:
        return None
    times = sorted({t for s in series for t, _ in s.points})
    idx = {t: i for i, t in enumerate(times)}
    fig = _figure(350)
    ax = fig.add_subplot()
    # a bar covers (t - bucket, t]: draw it centred on its middle
    x = _dates(np.array(times, dtype=float) - c.bucket / 2)
    width = np.timedelta64(int(c.bucket * 0.9), "s")
    bottom = np.zeros(len(times))
    for i, s in enumerate(sorted(series, key=label_of)):
        y = np.zeros(len(times))
        for t, v in s.points:
            if not math.isnan(v):
                y[idx[t]] = max(v, 0.0)
        lbl = label_of(s)
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


def render_charts(c: Collected, report: dict, outdir: Path) -> dict[str, dict[str, Any]]:
    outdir.mkdir(parents=True, exist_ok=True)
    order = [(r["instance"], r["node"]) for r in report["ranking"]]
    charts: dict[str, dict[str, Any]] = {}
    made = {
        "capacity": capacity_chart(c, order, outdir / "capacity.png"),
        "ratio": ratio_chart(c, order, outdir / "ratio.png"),
        "failures": _bar_chart(
            c,
            "failure_counters",
            lambda s: s.labels.get("reason", "?"),
            "Offline failures by reason (kernel log)",
            f"failures per {_hours(c.bucket)}",
            outdir / "failures.png",
        ),
        "actions": _bar_chart(
            c,
            "action_counters",
            lambda s: f"{s.labels.get('action', '?')} {s.labels.get('result', '?')}",
            "Controller actions on memory blocks, by result",
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
    }
    for name, info in made.items():
        if info:
            charts[name] = info
    return charts
