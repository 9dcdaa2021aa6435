"""From the reduced answers to the review's figures: per node and per host
rows, the risk ranking, fleet figures, and findings grouped by kind (one
line each with a count, the worst entries below it)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from . import thresholds
from .collect import Collected
from .thresholds import KERNEL_ZONES


def risk_weights() -> dict[str, tuple[float, float]]:
    """Risk score: each component's weight and the value at which it
    saturates (docs/capacity-review.md)."""
    return {
        "ratio_now": (30, thresholds.LINES.critical),  # current MOVABLE:KERNEL, linear up to the critical line
        "hours_above_critical": (25, 24.0),  # time above the critical line, full at one day
        "hours_above_warning": (10, 72.0),  # time above the warning line, full at three days
        "offline_trouble": (15, 8),  # blocks that failed offlining + blocks that cannot be offlined
        "quarantined": (10, 1),  # any quarantined block on the host (peak)
        "failed_actions": (10, 10),  # controller actions that ended failed on the host
    }


def risk_label(component: str) -> str:
    """A risk component as the report's text names it."""
    lines = thresholds.LINES
    named = {
        "hours_above_critical": f"hours above {lines.critical_label}",
        "hours_above_warning": f"hours above {lines.warning_label}",
    }
    return named.get(component, component.replace("_", " "))


SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def fmt_bytes(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "–"
    n = float(n)
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}:1"


def _f(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


def _int(v: Any) -> int | None:
    v = _f(v)
    return None if v is None else int(round(v))


def _known(by: dict[str, float], key: str) -> float | None:
    return _f(by.get(key, 0.0)) if by else None


def node_row(raw: dict[str, Any], step: float, inst: dict[str, Any]) -> dict[str, Any]:
    """One node's figures, flat (the CSV's columns), from the reduced answers."""
    state, zone = raw.get("state", {}), raw.get("zone", {})
    peaks = raw.get("state_peak", {})
    bs = _f(inst.get("block_size"))
    by_reason = {k: int(round(v)) for k, v in sorted(raw.get("failed_blocks_by_reason", {}).items())}
    failed = _int(raw.get("failed_blocks")) or 0
    return {
        "instance": raw["instance"],
        "node": raw["node"],
        "ratio_current": _f(raw.get("ratio_current")),
        "ratio_min": _f(raw.get("ratio_min")),
        "ratio_peak": _f(raw.get("ratio_peak")),
        "hours_above_warning": raw.get("steps_above_warning", 0.0) * step / 3600,
        "hours_above_critical": raw.get("steps_above_critical", 0.0) * step / 3600,
        # a state or zone without a series is 0 when the node has others; with none, unknown
        "online_bytes": _f(state.get("online")),
        "offline_bytes": _known(state, "offline"),
        "going_offline_bytes": _known(state, "going-offline"),
        "offline_peak_bytes": _f(peaks.get("offline", 0.0)) if state else None,
        "going_offline_peak_bytes": _f(peaks.get("going-offline", 0.0)) if state else None,
        "online_kernel_bytes": sum(v for z, v in zone.items() if z in KERNEL_ZONES) if zone else None,
        "online_movable_bytes": _known(zone, "Movable"),
        "online_mixed_bytes": _known(zone, "none"),
        "hot_unpluggable_peak_bytes": _f(raw.get("hot_peak")),
        "hot_unpluggable_min_bytes": _f(raw.get("hot_min")),
        "hot_unpluggable_current_bytes": _f(raw.get("hot_current")),
        "unofflinable_blocks_peak": _int(raw.get("unofflinable_peak")),
        "unofflinable_blocks_current": _int(raw.get("unofflinable_current")),
        "failed_offline_blocks": failed,
        "failed_offline_bytes": failed * bs if bs else (0.0 if not failed else None),
        "failed_offline_bytes_by_reason": {k: v * bs for k, v in by_reason.items()} if bs else {},
    }


def instance_row(raw: dict[str, Any]) -> dict[str, Any]:
    failures = {k: int(round(v)) for k, v in sorted(raw.get("offline_failures_by_reason", {}).items()) if v}
    acts = [
        {"action": a, "result": r, "errno": e, "count": int(round(n))}
        for (a, r, e), n in sorted(raw.get("actions", {}).items())
        if round(n) > 0
    ]
    failed = [a for a in acts if a["result"] == "failed"]
    return {
        "instance": raw["instance"],
        "block_size_bytes": _f(raw.get("block_size")),
        "offline_failures_by_reason": failures,
        "offline_failures": sum(failures.values()),
        "failed_offline_blocks": _int(raw.get("failed_blocks")) or 0,
        "actions": acts,
        "actions_by_result": _sum_by(acts, ("action", "result")),
        "failed_actions": sum(a["count"] for a in failed),
        "failed_actions_by_errno": _sum_by(failed, ("action", "errno")),
        "quarantined_blocks": {
            "peak": _int(raw.get("quarantined_peak")),
            "current": _int(raw.get("quarantined_current")),
        },
    }


def _sum_by(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    acc: dict[tuple, int] = defaultdict(int)
    for r in rows:
        acc[tuple(r[k] for k in keys)] += r["count"]
    return [{**dict(zip(keys, k)), "count": v} for k, v in sorted(acc.items())]


def risk(node: dict, inst: dict) -> dict[str, Any]:
    raw = {
        "ratio_now": node["ratio_current"] or 0.0,
        "hours_above_critical": node["hours_above_critical"],
        "hours_above_warning": node["hours_above_warning"],
        "offline_trouble": node["failed_offline_blocks"] + (node["unofflinable_blocks_current"] or 0),
        "quarantined": inst["quarantined_blocks"]["peak"] or 0,
        "failed_actions": inst["failed_actions"],
    }
    parts = {k: round(w * min(raw[k] / sat, 1.0), 2) for k, (w, sat) in risk_weights().items()}
    return {"score": round(sum(parts.values()), 1), "components": parts, "inputs": raw}


def rank(c: Collected) -> tuple[list[dict], dict[str, dict]]:
    """Every node's row with its risk score and rank (best rank = worst node),
    and every host's row."""
    insts = {name: instance_row(raw) for name, raw in c.instances.items()}
    rows = []
    for raw in c.nodes.values():
        inst = insts.get(raw["instance"]) or instance_row({"instance": raw["instance"]})
        insts.setdefault(raw["instance"], inst)
        row = node_row(raw, c.step, c.instances.get(raw["instance"], {}))
        r = risk(row, inst)
        row["risk"] = r["score"]
        row["risk_components"] = r["components"]
        row["quarantined_blocks_peak_host"] = inst["quarantined_blocks"]["peak"]
        row["failed_actions_host"] = inst["failed_actions"]
        rows.append(row)
    rows.sort(key=lambda n: (-n["risk"], -(n["ratio_peak"] or 0), n["instance"], n["node"]))
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    return rows, insts


def time_above(grid: np.ndarray, y: np.ndarray, line: float, step: float) -> dict[str, Any]:
    """The longest run of consecutive grid points above ``line``."""
    above = np.nan_to_num(y, nan=-np.inf) > line
    best, best_from, run, run_from = 0, None, 0, None
    for i, a in enumerate(above):
        if a:
            if run == 0:
                run_from = float(grid[i])
            run += 1
            if run > best:
                best, best_from = run, run_from
        else:
            run = 0
    return {
        "hours": best * step / 3600,
        "from": iso(best_from),
        "to": iso(best_from + (best - 1) * step) if best_from is not None else None,
    }


def detail(c: Collected, row: dict) -> dict:
    """The listed node's extras: when it peaked, its longest stretches above
    the lines, the blocks that failed to offline."""
    out = dict(row)
    y = c.shown.get((row["instance"], row["node"]))
    if y is not None and np.isfinite(y).any():
        finite = y[np.isfinite(y)]
        moved = float(finite.max()) > float(finite.min())
        out["ratio_peak_at"] = float(c.grid[int(np.nanargmax(y))]) if moved else None
        out["ratio_peak_at_iso"] = iso(out["ratio_peak_at"])
        out["longest_above_critical"] = time_above(c.grid, y, thresholds.LINES.critical, c.step)
        out["longest_above_warning"] = time_above(c.grid, y, thresholds.LINES.warning, c.step)
    blocks = [b for b in c.blocks.get(row["instance"], []) if b["node"] == row["node"]]
    out["failed_offline_block_list"] = blocks
    out["failed_offline_blocks_still_online"] = sum(1 for b in blocks if b["still_online"]) if blocks else None
    return out


def _stats(y: np.ndarray | None) -> dict[str, float | None]:
    if y is None or not np.isfinite(y).any():
        return {"current": None, "min": None, "peak": None}
    finite = np.flatnonzero(np.isfinite(y))
    return {"current": float(y[finite[-1]]), "min": float(np.nanmin(y)), "peak": float(np.nanmax(y))}


def fleet_figures(c: Collected, nodes: Collection[dict], insts: Mapping[str, dict]) -> dict[str, Any]:
    failures: dict[str, int] = defaultdict(int)
    acts: dict[tuple[str, str], int] = defaultdict(int)
    for i in insts.values():
        for reason, n in i["offline_failures_by_reason"].items():
            failures[reason] += n
        for a in i["actions_by_result"]:
            acts[(a["action"], a["result"])] += a["count"]
    cur = c.curves
    lines = thresholds.LINES
    zero = {"current": 0.0, "min": 0.0, "peak": 0.0}
    return {
        "instances": len({n["instance"] for n in nodes}),
        "nodes": len(nodes),
        "online_bytes": _stats(cur.get("state:online")),
        "offline_bytes": _stats(cur.get("state:offline")) if "state:offline" in cur else zero,
        "going_offline_bytes": _stats(cur.get("state:going-offline")) if "state:going-offline" in cur else zero,
        "online_kernel_bytes": _stats(cur.get("zone:kernel")),
        "online_movable_bytes": _stats(cur.get("zone:Movable")),
        "hot_unpluggable_bytes": _stats(cur.get("hot")),
        "auto_movable_headroom_bytes": _stats(cur.get("headroom")),
        "ratio": _stats(cur.get("ratio_fleet")),
        "ratio_p50": _stats(cur.get("ratio_p50")),
        "ratio_p90": _stats(cur.get("ratio_p90")),
        "ratio_max": _stats(cur.get("ratio_max")),
        "nodes_above_warning_now": sum(1 for n in nodes if _now_above(n, lines.warning)),
        "nodes_above_critical_now": sum(1 for n in nodes if _now_above(n, lines.critical)),
        "nodes_above_warning_in_period": sum(1 for n in nodes if n["hours_above_warning"] > 0),
        "nodes_above_critical_in_period": sum(1 for n in nodes if n["hours_above_critical"] > 0),
        "offline_failures_by_reason": dict(sorted(failures.items())),
        "offline_failures": sum(failures.values()),
        "failed_offline_blocks": sum(i["failed_offline_blocks"] for i in insts.values()),
        "failed_offline_bytes": sum(i["failed_offline_blocks"] * (i["block_size_bytes"] or 0) for i in insts.values()),
        "unofflinable_blocks": sum(n["unofflinable_blocks_current"] or 0 for n in nodes),
        "actions_by_result": [{"action": a, "result": r, "count": n} for (a, r), n in sorted(acts.items())],
        "failed_actions": sum(i["failed_actions"] for i in insts.values()),
        "quarantined_blocks_now": sum(i["quarantined_blocks"]["current"] or 0 for i in insts.values()),
        "instances_with_quarantine": sum(1 for i in insts.values() if (i["quarantined_blocks"]["peak"] or 0) > 0),
    }


def _where(n: dict) -> str:
    return f"{n['instance']} node {n['node']}"


def _blocks_text(blocks: list[dict]) -> str:
    ids = [b["block"] for b in blocks]
    if len(ids) > 1 and all(i.isdigit() for i in ids):
        nums = sorted(int(i) for i in ids)
        if nums == list(range(nums[0], nums[-1] + 1)):
            return f"{nums[0]}-{nums[-1]}"
    return ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'s' if n != 1 else ''}"


@dataclass(frozen=True)
class Kind:
    """A kind of node finding: which rows it is about, how they are ordered,
    its headline (from all its rows) and one entry's text (from a row and the
    node's details)."""

    name: str
    severity: str
    alert: str
    match: Callable[[dict], bool]
    order: Callable[[dict], tuple]
    headline: Callable[[list[dict]], str]
    entry: Callable[[dict, Callable[[dict], dict]], str]
    # rows that make the whole group critical (MemhpMovableKernelRatioCritical)
    critical_if: Callable[[dict], bool] | None = None
    # the runbook section when it is not the alert's own (a finding no alert fires for)
    runbook: str | None = None


def runbook_anchor(section: str) -> str:
    """The anchor GitHub gives a docs/runbooks.md heading."""
    return "".join(ch for ch in section.lower().replace(" ", "-") if ch.isalnum() or ch in "-_")


def _now_above(n: dict, line: float) -> bool:
    return (n["ratio_current"] or 0) > line


def _peak_at(d: dict) -> str:
    return f" at {d['ratio_peak_at_iso']}" if d.get("ratio_peak_at_iso") else ""


def _entry_ratio_critical(n: dict, details: Callable[[dict], dict]) -> str:
    d, lines = details(n), thresholds.LINES
    text = (
        f"{_where(n)} spent {n['hours_above_critical']:.1f} h above {lines.critical_label} "
        f"({n['hours_above_warning']:.1f} h above {lines.warning_label}), "
        f"peak {fmt_ratio(n['ratio_peak'])}{_peak_at(d)}"
    )
    lo = d.get("longest_above_critical")
    if lo and lo["hours"]:
        text += f"; longest stretch above {lines.critical_label}: {lo['hours']:.1f} h from {lo['from']}"
    return text + "."


def _entry_ratio_high(n: dict, details: Callable[[dict], dict]) -> str:
    lines = thresholds.LINES
    return (
        f"{_where(n)} spent {n['hours_above_warning']:.1f} h above {lines.warning_label} "
        f"(never above {lines.critical_label}), peak {fmt_ratio(n['ratio_peak'])}{_peak_at(details(n))}."
    )


def _entry_failed(n: dict, details: Callable[[dict], dict]) -> str:
    d = details(n)
    blocks = d.get("failed_offline_block_list") or []
    why = ", ".join(f"{r}: {fmt_bytes(b)}" for r, b in n["failed_offline_bytes_by_reason"].items())
    text = f"{fmt_bytes(n['failed_offline_bytes'])} ({_plural(n['failed_offline_blocks'], 'memory block')}"
    if blocks:
        zones = sorted({b["zone"] for b in blocks if b["zone"]})
        text += f": {_blocks_text(blocks)}, zone {'/'.join(zones) or 'unknown'}"
    text += f") could not be offlined on {_where(n)}"
    text += f" ({why})" if why else ""
    if d.get("failed_offline_blocks_still_online") is not None:
        text += f"; {d['failed_offline_blocks_still_online']} of them still online at the end of the period"
    return text + "."


def _headline_ratio_now(rows: list[dict]) -> str:
    lines = thresholds.LINES
    critical = sum(1 for r in rows if _now_above(r, lines.critical))
    return (
        f"{_plural(len(rows), 'node')} above {lines.warning_label} at the end of the period "
        f"({critical:,} above {lines.critical_label}): do not online more memory to ZONE_MOVABLE there"
    )


def _hot_unpluggable_fell_to_zero(n: dict) -> bool:
    return (
        bool(n["hot_unpluggable_peak_bytes"])
        and n["hot_unpluggable_min_bytes"] is not None
        and n["hot_unpluggable_min_bytes"] <= 0
    )


NODE_KINDS: tuple[Kind, ...] = (
    Kind(
        "ratio_critical",
        "critical",
        "MemhpMovableKernelRatioCritical",
        match=lambda n: n["hours_above_critical"] > 0,
        order=lambda n: (-n["hours_above_critical"], n["rank"]),
        headline=lambda rows: (
            f"{_plural(len(rows), 'node')} spent time above {thresholds.LINES.critical_label} MOVABLE:KERNEL: "
            f"unmovable allocations (memmap, page tables, pinned pages) can only use the kernel zones"
        ),
        entry=_entry_ratio_critical,
    ),
    Kind(
        "ratio_now",
        "warning",
        "MemhpMovableKernelRatioHigh",
        match=lambda n: _now_above(n, thresholds.LINES.warning),
        order=lambda n: (-(n["ratio_current"] or 0), n["rank"]),
        headline=_headline_ratio_now,
        entry=lambda n, details: f"{_where(n)} is at {fmt_ratio(n['ratio_current'])}.",
        critical_if=lambda n: _now_above(n, thresholds.LINES.critical),
    ),
    Kind(
        "ratio_high",
        "warning",
        "MemhpMovableKernelRatioHigh",
        match=lambda n: n["hours_above_warning"] > 0 and n["hours_above_critical"] == 0,
        order=lambda n: (-n["hours_above_warning"], n["rank"]),
        headline=lambda rows: (
            f"{_plural(len(rows), 'node')} spent time above {thresholds.LINES.warning_label} MOVABLE:KERNEL "
            f"(never above {thresholds.LINES.critical_label})"
        ),
        entry=_entry_ratio_high,
    ),
    Kind(
        "failed_offline",
        "warning",
        "MemhpOfflineFailuresRising",
        match=lambda n: n["failed_offline_blocks"] > 0,
        order=lambda n: (-n["failed_offline_blocks"], n["rank"]),
        headline=lambda rows: (
            f"{fmt_bytes(sum(r['failed_offline_bytes'] or 0 for r in rows))} in "
            f"{_plural(sum(r['failed_offline_blocks'] for r in rows), 'memory block')} on "
            f"{_plural(len(rows), 'node')} could not be offlined when asked"
        ),
        entry=_entry_failed,
    ),
    Kind(
        "hot_unpluggable_zero",
        "warning",
        "MemhpHotUnpluggableBelowFloor",
        match=_hot_unpluggable_fell_to_zero,
        order=lambda n: (n["rank"],),
        headline=lambda rows: (
            f"{_plural(len(rows), 'node')} had their hot-unpluggable memory (online ZONE_MOVABLE) fall to 0"
        ),
        entry=lambda n, details: (
            f"{_where(n)}: peak {fmt_bytes(n['hot_unpluggable_peak_bytes'])}, "
            f"now {fmt_bytes(n['hot_unpluggable_current_bytes'])}."
        ),
    ),
    Kind(
        "going_offline",
        "warning",
        "MemhpBlockStuckGoingOffline",
        match=lambda n: bool(n["going_offline_peak_bytes"]),
        order=lambda n: (-(n["going_offline_peak_bytes"] or 0), n["rank"]),
        headline=lambda rows: (
            f"{_plural(len(rows), 'node')} had memory blocks going-offline (offline_pages() retrying)"
        ),
        entry=lambda n, details: f"{_where(n)}: up to {fmt_bytes(n['going_offline_peak_bytes'])} going-offline.",
    ),
    Kind(
        "left_offline",
        "info",
        "MemhpBlocksLeftOffline",
        match=lambda n: bool(n["offline_bytes"]),
        order=lambda n: (-(n["offline_bytes"] or 0), n["rank"]),
        headline=lambda rows: (
            f"{fmt_bytes(sum(r['offline_bytes'] or 0 for r in rows))} in offline memory blocks on "
            f"{_plural(len(rows), 'node')} at the end of the period: present but neither usable nor counted in "
            f"MOVABLE:KERNEL"
        ),
        entry=lambda n, details: f"{_where(n)}: {fmt_bytes(n['offline_bytes'])} offline.",
    ),
    Kind(
        "unofflinable",
        "info",
        "MemhpBlocksUnofflinable",
        match=lambda n: (n["unofflinable_blocks_peak"] or 0) > 0,
        order=lambda n: (-(n["unofflinable_blocks_current"] or 0), n["rank"]),
        headline=lambda rows: (
            f"{_plural(len(rows), 'node')} {'has' if len(rows) == 1 else 'have'} online memory blocks the kernel "
            f"cannot offline (valid_zones none: the block spans zones or nodes, or has holes); they can never be "
            f"hot-unplugged"
        ),
        entry=lambda n, details: (
            f"{_where(n)}: {n['unofflinable_blocks_current']} block(s) now, peak {n['unofflinable_blocks_peak']}."
        ),
    ),
)


def _group(
    kind: str,
    severity: str,
    alert: str,
    unit: str,
    headline: str,
    entries: list[dict],
    total: int,
    base: str,
    runbook: str | None = None,
) -> dict:
    more = total - len(entries)
    section = runbook or alert
    return {
        "kind": kind,
        "severity": severity,
        "alert": alert,
        "runbook": section,
        "runbook_url": f"{base}#{runbook_anchor(section)}",
        "unit": unit,
        "count": total,
        "text": headline + (f"; worst {len(entries)} below" if more > 0 else "") + ".",
        "entries": entries,
        "more": more,
    }


def _node_group(kind: Kind, nodes: Iterable[dict], details: Callable[[dict], dict], base: str, top: int) -> dict | None:
    rows = sorted((n for n in nodes if kind.match(n)), key=kind.order)
    if not rows:
        return None
    severity, alert = kind.severity, kind.alert
    if kind.critical_if is not None and any(kind.critical_if(r) for r in rows):
        severity, alert = "critical", "MemhpMovableKernelRatioCritical"
    entries = [
        {"instance": n["instance"], "node": n["node"], "rank": n["rank"], "text": kind.entry(n, details)}
        for n in rows[:top]
    ]
    return _group(kind.name, severity, alert, "node", kind.headline(rows), entries, len(rows), base, kind.runbook)


def _host_entries(hosts: list[dict], text: Callable[[dict], str], top: int) -> list[dict]:
    return [{"instance": i["instance"], "node": None, "text": text(i)} for i in hosts[:top]]


def _quarantined_group(hosts: Iterable[dict], base: str, top: int) -> dict | None:
    q = sorted(
        (i for i in hosts if (i["quarantined_blocks"]["peak"] or 0) > 0), key=lambda i: -i["quarantined_blocks"]["peak"]
    )
    if not q:
        return None
    entries = _host_entries(
        q,
        lambda i: (
            f"{i['instance']}: the controller quarantined up to {i['quarantined_blocks']['peak']} "
            f"memory block(s) ({i['quarantined_blocks']['current']} at the end of the period)."
        ),
        top,
    )
    headline = f"{_plural(len(q), 'host')} had the controller quarantine memory blocks after repeated failures"
    return _group("quarantined", "warning", "MemhpControllerBlocksQuarantined", "host", headline, entries, len(q), base)


def _failed_actions_group(hosts: Iterable[dict], base: str, top: int) -> dict | None:
    fa = sorted((i for i in hosts if i["failed_actions"]), key=lambda i: (-i["failed_actions"], i["instance"]))
    if not fa:
        return None
    entries = _host_entries(
        fa,
        lambda i: (
            f"{i['instance']}: {i['failed_actions']} controller action(s) ended failed ("
            + ", ".join(f"{a['action']} {a['errno'] or 'unknown'}: {a['count']}" for a in i["failed_actions_by_errno"])
            + ")."
        ),
        top,
    )
    headline = (
        f"{_plural(sum(i['failed_actions'] for i in fa), 'controller action')} on memory blocks ended failed "
        f"on {_plural(len(fa), 'host')}"
    )
    return _group(
        "failed_actions", "warning", "MemhpControllerActionsFailing", "host", headline, entries, len(fa), base
    )


def _offline_failures_no_node_group(hosts: Iterable[dict], nodes: Iterable[dict], base: str, top: int) -> dict | None:
    with_nodes = {n["instance"] for n in nodes if n["failed_offline_blocks"]}
    un = sorted(
        (i for i in hosts if i["offline_failures"] and i["instance"] not in with_nodes),
        key=lambda i: (-i["offline_failures"], i["instance"]),
    )
    if not un:
        return None
    entries = _host_entries(
        un,
        lambda i: (
            f"{i['instance']}: {i['offline_failures']} failed offline attempt(s) ("
            + ", ".join(f"{k}: {v}" for k, v in i["offline_failures_by_reason"].items())
            + ")."
        ),
        top,
    )
    headline = f"{_plural(len(un), 'host')} logged failed offline attempts without per-node block data"
    return _group(
        "offline_failures_no_node", "warning", "MemhpOfflineFailuresRising", "host", headline, entries, len(un), base
    )


def findings(
    nodes: Iterable[dict],
    insts: Mapping[str, dict],
    details: Callable[[dict], dict],
    runbook_base: str,
    top: int,
) -> list[dict]:
    """Findings grouped by kind: a headline with the count, the worst ``top``
    entries below it (nodes by their own figure, ties by risk rank).  ``nodes``
    and ``insts`` may stream from the row store: each group reads them once and
    keeps only its own rows."""
    groups = [_node_group(kind, nodes, details, runbook_base, top) for kind in NODE_KINDS]
    groups += [
        _quarantined_group(insts.values(), runbook_base, top),
        _failed_actions_group(insts.values(), runbook_base, top),
        _offline_failures_no_node_group(insts.values(), nodes, runbook_base, top),
    ]
    out = [g for g in groups if g is not None]
    out.sort(key=lambda f: SEVERITY_ORDER[f["severity"]])
    return out


def summary(fleet: dict) -> list[str]:
    """The first screen, in sentences."""
    f, lines = fleet, thresholds.LINES
    text = [
        f"{_plural(f['instances'], 'host')}, {_plural(f['nodes'], 'NUMA node')}.",
        f"MOVABLE:KERNEL: fleet {fmt_ratio(f['ratio']['current'])} at the end (peak {fmt_ratio(f['ratio']['peak'])}); "
        f"median node {fmt_ratio(f['ratio_p50']['current'])}, 90th percentile {fmt_ratio(f['ratio_p90']['current'])}, "
        f"worst {fmt_ratio(f['ratio_max']['current'])} (worst in the period {fmt_ratio(f['ratio_max']['peak'])}).",
        f"{_plural(f['nodes_above_critical_in_period'], 'node')} went above {lines.critical_label} and "
        f"{f['nodes_above_warning_in_period']:,} above {lines.warning_label} during the period; "
        f"{f['nodes_above_warning_now']:,} above {lines.warning_label} at the end.",
        f"Hot-unpluggable memory (online ZONE_MOVABLE): {fmt_bytes(f['hot_unpluggable_bytes']['current'])} at the end "
        f"(low {fmt_bytes(f['hot_unpluggable_bytes']['min'])}, high {fmt_bytes(f['hot_unpluggable_bytes']['peak'])}); "
        f"online {fmt_bytes(f['online_bytes']['current'])}, offline {fmt_bytes(f['offline_bytes']['current'])}.",
        f"Offline failures logged by the kernel: {f['offline_failures']:,}"
        + (
            " (" + ", ".join(f"{k}: {v:,}" for k, v in f["offline_failures_by_reason"].items()) + ")"
            if f["offline_failures"]
            else ""
        )
        + f"; {fmt_bytes(f['failed_offline_bytes'])} in {f['failed_offline_blocks']:,} blocks could not be offlined.",
        "Controller: "
        + (", ".join(f"{a['action']} {a['result']}: {a['count']:,}" for a in f["actions_by_result"]) or "no actions")
        + f"; {_plural(f['instances_with_quarantine'], 'host')} quarantined blocks "
        f"({f['quarantined_blocks_now']:,} quarantined now).",
    ]
    return text


def node_group(kind: Kind, nodes: Iterable[dict], details: Callable[[dict], dict], base: str, top: int) -> dict | None:
    """One kind's finding group, for kinds defined outside this module (forecast.py's)."""
    return _node_group(kind, nodes, details, base, top)
