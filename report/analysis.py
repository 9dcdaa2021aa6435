"""From query answers to the review's figures: per node, per instance, fleet,
the risk ranking and the written findings."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from memhp.thresholds import RUNBOOK_BASE

from .collect import KERNEL_ZONES, RATIO_CRITICAL, RATIO_WARNING, Collected, Series

# Risk score: weight and the value at which a component saturates (docs/capacity-review.md).
RISK = {
    "ratio_now": (30, RATIO_CRITICAL),  # current MOVABLE:KERNEL, linear up to 4:1
    "hours_above_4": (25, 24.0),  # time above 4:1, full at one day
    "hours_above_3": (10, 72.0),  # time above 3:1, full at three days
    "offline_trouble": (15, 8),  # blocks that failed offlining + blocks that cannot be offlined
    "quarantined": (10, 1),  # any quarantined block on the host (peak)
    "failed_actions": (10, 10),  # controller actions that ended failed on the host
}

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


def _key(metric: dict) -> tuple[str, str]:
    return metric.get("instance", ""), metric.get("node", "")


def _val(entry: dict) -> float:
    v = float(entry["value"][1])
    return v


def _by_node(rows: list[dict]) -> dict[tuple[str, str], float]:
    return {_key(r["metric"]): _val(r) for r in rows}


def _by_instance(rows: list[dict]) -> dict[str, float]:
    return {r["metric"].get("instance", ""): _val(r) for r in rows}


def _finite(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) or math.isinf(v) else v


def time_above(points: list[tuple[float, float]], threshold: float, step: float) -> dict[str, Any]:
    """Time above ``threshold`` at step resolution: every point above counts
    one step; also the longest stretch of consecutive points above."""
    count = 0
    longest: tuple[int, float | None, float | None] = (0, None, None)
    run, run_start, prev_t = 0, None, None
    for t, v in points:
        if not math.isnan(v) and v > threshold:
            count += 1
            if run and prev_t is not None and t - prev_t <= step * 1.01:
                run += 1
            else:
                run, run_start = 1, t
            if run > longest[0]:
                longest = (run, run_start, t)
        else:
            run = 0
        prev_t = t
    return {
        "hours": count * step / 3600,
        "longest_hours": longest[0] * step / 3600,
        "longest_from": longest[1],
        "longest_to": longest[2],
    }


def counter_events(series: list[Series], first_boundary: float) -> list[Series]:
    """Counter samples at bar boundaries -> events per bar, as (bar end, count).
    A decrease is a counter reset (the new value counts); a series first seen
    after the first boundary started from 0 within the period (memhp's
    counters appear with their first event and count from memhp.exporter start)."""
    out = []
    for s in series:
        pts = [(t, v) for t, v in sorted(s.points) if not math.isnan(v)]
        events: list[tuple[float, float]] = []
        if pts and pts[0][0] > first_boundary + 1e-6:
            events.append((pts[0][0], pts[0][1]))
        for (_, prev), (t, v) in zip(pts, pts[1:]):
            events.append((t, v - prev if v >= prev else v))
        out.append(Series(s.labels, events))
    return out


def analyze(
    c: Collected,
    *,
    prometheus: str,
    selector: str,
    range_s: float,
    runbook_base: str = RUNBOOK_BASE,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    I = c.instant  # noqa: E741
    c.events = {
        name: counter_events(c.ranges[name], c.bucket_start)
        for name in ("failure_counters", "block_failure_counters", "action_counters")
    }
    ratio_peak, ratio_min, ratio_cur = _by_node(I["ratio_peak"]), _by_node(I["ratio_min"]), _by_node(I["ratio_current"])
    hot_peak, hot_min, hot_cur = _by_node(I["hot_peak"]), _by_node(I["hot_min"]), _by_node(I["hot_current"])
    unoff_peak, unoff_cur = _by_node(I["unofflinable_peak"]), _by_node(I["unofflinable_current"])
    state_cur: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    state_peak: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in I["state_current"]:
        state_cur[_key(r["metric"])][r["metric"].get("state", "")] = _val(r)
    for r in I["state_peak"]:
        state_peak[_key(r["metric"])][r["metric"].get("state", "")] = _val(r)
    zone_cur: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in I["zone_current"]:
        zone_cur[_key(r["metric"])][r["metric"].get("zone", "")] = _val(r)
    ratio_series = {_key(s.labels): s.points for s in c.ranges["ratio"]}

    block_size = _by_instance(I["block_size"])
    block_node: dict[tuple[str, str], dict[str, str]] = {}
    for r in I["block_info"]:
        m = r["metric"]
        block_node[(m.get("instance", ""), m.get("block", ""))] = m
    block_online = {(r["metric"].get("instance", ""), r["metric"].get("block", "")): _val(r) for r in I["block_online"]}
    failed_blocks: dict[tuple[str, str], list[dict]] = defaultdict(list)  # (instance, node) -> blocks
    per_block: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for ev in c.events["block_failure_counters"]:
        m, n = ev.labels, round(sum(v for _, v in ev.points))
        if n > 0:
            per_block[(m.get("instance", ""), m.get("block", ""))][m.get("reason", "")] = n
    for (inst, block), reasons in per_block.items():
        info = block_node.get((inst, block), {})
        node = info.get("node", "unknown")
        failed_blocks[(inst, node)].append(
            {
                "block": block,
                "zone": info.get("zone"),
                "valid_zones": info.get("valid_zones"),
                "failures": sum(reasons.values()),
                "reasons": dict(sorted(reasons.items())),
                "still_online": None if (inst, block) not in block_online else block_online[(inst, block)] >= 1,
            }
        )

    failures: dict[str, dict[str, int]] = defaultdict(dict)
    for ev in c.events["failure_counters"]:
        n = round(sum(v for _, v in ev.points))
        if n > 0:
            failures[ev.labels.get("instance", "")][ev.labels.get("reason", "")] = n
    actions: dict[str, list[dict]] = defaultdict(list)
    for ev in c.events["action_counters"]:
        m, n = ev.labels, round(sum(v for _, v in ev.points))
        if n > 0:
            actions[m.get("instance", "")].append(
                {"action": m.get("action", ""), "result": m.get("result", ""), "errno": m.get("errno", ""), "count": n}
            )
    q_peak, q_cur = _by_instance(I["quarantined_peak"]), _by_instance(I["quarantined_current"])

    keys = sorted(
        set(ratio_peak)
        | set(hot_cur)
        | set(state_cur)
        | set(zone_cur)
        | set(unoff_cur)
        | {k for k in failed_blocks if k[1] != "unknown"}
    )
    instances_all = sorted({k[0] for k in keys} | set(failures) | set(actions) | set(q_peak))

    inst_rows: dict[str, dict] = {}
    for inst in instances_all:
        acts = sorted(actions.get(inst, []), key=lambda a: (a["action"], a["result"], a["errno"]))
        failed_acts = [a for a in acts if a["result"] == "failed"]
        unknown_blocks = failed_blocks.get((inst, "unknown"), [])
        inst_rows[inst] = {
            "instance": inst,
            "block_size_bytes": block_size.get(inst),
            "offline_failures_by_reason": dict(sorted(failures.get(inst, {}).items())),
            "offline_failures": sum(failures.get(inst, {}).values()),
            "actions": acts,
            "actions_by_result": _sum_by(acts, ("action", "result")),
            "failed_actions": sum(a["count"] for a in failed_acts),
            "failed_actions_by_errno": _sum_by(failed_acts, ("action", "errno")),
            "quarantined_blocks": {"peak": _int(q_peak.get(inst)), "current": _int(q_cur.get(inst))},
            "failed_offline_blocks_unknown_node": unknown_blocks,
        }

    nodes: list[dict[str, Any]] = []
    for key in keys:
        inst, node = key
        zones = zone_cur.get(key, {})
        states = state_cur.get(key, {})
        peaks = state_peak.get(key, {})
        pts = ratio_series.get(key, [])
        above3 = time_above(pts, RATIO_WARNING, c.step)
        above4 = time_above(pts, RATIO_CRITICAL, c.step)
        finite = [(t, v) for t, v in pts if not math.isnan(v)]
        # when the ratio never moved, there is no moment of peak to show
        peak_at = (
            max(finite, key=lambda p: p[1])[0]
            if finite and max(v for _, v in finite) > min(v for _, v in finite)
            else None
        )
        blocks = sorted(failed_blocks.get(key, []), key=lambda b: _block_sort(b["block"]))
        bs = block_size.get(inst)
        by_reason: dict[str, float] = defaultdict(float)
        for b in blocks:
            for reason in b["reasons"]:
                by_reason[reason] += bs or 0
        nodes.append(
            {
                "instance": inst,
                "node": node,
                "ratio": {
                    "peak": _finite(ratio_peak.get(key)),
                    "min": _finite(ratio_min.get(key)),
                    "current": _finite(ratio_cur.get(key)),
                    "peak_at": peak_at,
                    "peak_at_iso": iso(peak_at),
                },
                "hours_above_3": above3["hours"],
                "hours_above_4": above4["hours"],
                "longest_above_4": {
                    "hours": above4["longest_hours"],
                    "from": iso(above4["longest_from"]),
                    "to": iso(above4["longest_to"]),
                },
                "longest_above_3": {
                    "hours": above3["longest_hours"],
                    "from": iso(above3["longest_from"]),
                    "to": iso(above3["longest_to"]),
                },
                "bytes": {
                    "online": states.get("online"),
                    "offline": states.get("offline", 0.0),
                    "going_offline": states.get("going-offline", 0.0),
                    "offline_peak": peaks.get("offline", 0.0),
                    "going_offline_peak": peaks.get("going-offline", 0.0),
                    "online_movable": zones.get("Movable", 0.0),
                    "online_kernel": sum(v for z, v in zones.items() if z in KERNEL_ZONES),
                    "online_mixed": zones.get("none", 0.0),
                },
                "hot_unpluggable_bytes": {
                    "peak": hot_peak.get(key),
                    "min": hot_min.get(key),
                    "current": hot_cur.get(key),
                },
                "unofflinable_blocks": {"peak": _int(unoff_peak.get(key)), "current": _int(unoff_cur.get(key))},
                "failed_offline_blocks": blocks,
                "failed_offline_bytes": (len(blocks) * bs) if bs else None,
                "failed_offline_bytes_by_reason": dict(sorted(by_reason.items())) if bs else {},
                "failed_offline_blocks_still_online": sum(1 for b in blocks if b["still_online"]),
            }
        )
    for row in nodes:
        row["risk"] = risk(row, inst_rows[row["instance"]])
    ranking = sorted(nodes, key=lambda n: (-n["risk"]["score"], -(n["ratio"]["peak"] or 0), n["instance"], n["node"]))
    for i, row in enumerate(ranking, 1):
        row["risk"]["rank"] = i

    fleet = fleet_figures(c, nodes, inst_rows)
    report = {
        "meta": {
            "prometheus": prometheus,
            "selector": selector,
            "start": c.start,
            "end": c.end,
            "start_iso": iso(c.start),
            "end_iso": iso(c.end),
            "range_seconds": range_s,
            "step_seconds": c.step,
            "event_bucket_seconds": c.bucket,
            "generated_at": iso(datetime.now(UTC).timestamp()),
            "thresholds": {"warning": RATIO_WARNING, "critical": RATIO_CRITICAL},
            "risk_weights": {k: {"weight": w, "saturates_at": s} for k, (w, s) in RISK.items()},
            "warnings": list(warnings or []),
        },
        "fleet": fleet,
        "nodes": nodes,
        "instances": [inst_rows[i] for i in instances_all],
        "ranking": [
            {"rank": n["risk"]["rank"], "instance": n["instance"], "node": n["node"], "score": n["risk"]["score"]}
            for n in ranking
        ],
    }
    report["findings"] = findings(report, runbook_base)
    return report


def _int(v: float | None) -> int | None:
    return None if v is None or math.isnan(v) else int(round(v))


def _block_sort(b: str) -> tuple[int, str]:
    return (int(b), b) if b.isdigit() else (1 << 62, b)


def _sum_by(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    acc: dict[tuple, int] = defaultdict(int)
    for r in rows:
        acc[tuple(r[k] for k in keys)] += r["count"]
    return [{**dict(zip(keys, k)), "count": v} for k, v in sorted(acc.items())]


def risk(node: dict, inst: dict) -> dict[str, Any]:
    raw = {
        "ratio_now": node["ratio"]["current"] or 0.0,
        "hours_above_4": node["hours_above_4"],
        "hours_above_3": node["hours_above_3"],
        "offline_trouble": len(node["failed_offline_blocks"]) + (node["unofflinable_blocks"]["current"] or 0),
        "quarantined": inst["quarantined_blocks"]["peak"] or 0,
        "failed_actions": inst["failed_actions"],
    }
    parts = {k: round(w * min(raw[k] / sat, 1.0), 2) for k, (w, sat) in RISK.items()}
    return {"score": round(sum(parts.values()), 1), "components": parts, "inputs": raw}


def _series_stats(series: list[Series]) -> dict[str, float | None]:
    pts = [v for s in series for _, v in s.points if not math.isnan(v)]
    if not pts:
        return {"current": None, "min": None, "peak": None}
    last = max((p for s in series for p in s.points if not math.isnan(p[1])), key=lambda p: p[0])
    return {"current": last[1], "min": min(pts), "peak": max(pts)}


def fleet_figures(c: Collected, nodes: list[dict], insts: dict[str, dict]) -> dict[str, Any]:
    by_state = {s.labels.get("state", ""): _series_stats([s]) for s in c.ranges["fleet_state"]}
    failures: dict[str, int] = defaultdict(int)
    for i in insts.values():
        for reason, n in i["offline_failures_by_reason"].items():
            failures[reason] += n
    acts: dict[tuple[str, str], int] = defaultdict(int)
    for i in insts.values():
        for a in i["actions_by_result"]:
            acts[(a["action"], a["result"])] += a["count"]
    return {
        "instances": len({n["instance"] for n in nodes}),
        "nodes": len(nodes),
        "online_bytes": by_state.get("online", {"current": None, "min": None, "peak": None}),
        "offline_bytes": by_state.get("offline", {"current": 0.0, "min": 0.0, "peak": 0.0}),
        "going_offline_bytes": by_state.get("going-offline", {"current": 0.0, "min": 0.0, "peak": 0.0}),
        "online_movable_bytes": sum(n["bytes"]["online_movable"] for n in nodes),
        "online_kernel_bytes": sum(n["bytes"]["online_kernel"] for n in nodes),
        "hot_unpluggable_bytes": _series_stats(c.ranges["fleet_hot"]),
        "ratio": _series_stats(c.ranges["fleet_ratio"]),
        "nodes_above_3_now": sum(1 for n in nodes if (n["ratio"]["current"] or 0) > RATIO_WARNING),
        "nodes_above_4_in_period": sum(1 for n in nodes if n["hours_above_4"] > 0),
        "nodes_above_3_in_period": sum(1 for n in nodes if n["hours_above_3"] > 0),
        "offline_failures_by_reason": dict(sorted(failures.items())),
        "offline_failures": sum(failures.values()),
        "failed_offline_bytes": sum(n["failed_offline_bytes"] or 0 for n in nodes),
        "unofflinable_blocks": sum(n["unofflinable_blocks"]["current"] or 0 for n in nodes),
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


def findings(r: dict, runbook_base: str) -> list[dict]:
    out: list[dict] = []

    def add(severity: str, alert: str, text: str, instance: str, node: str | None = None, **data: Any) -> None:
        out.append(
            {
                "severity": severity,
                "alert": alert,
                "runbook_url": f"{runbook_base}#{alert.lower()}",
                "text": text,
                "instance": instance,
                "node": node,
                **data,
            }
        )

    for n in sorted(r["nodes"], key=lambda n: n["risk"]["rank"]):
        ratio = n["ratio"]
        if n["hours_above_4"] > 0:
            lo = n["longest_above_4"]
            add(
                "critical",
                "MemhpMovableKernelRatioCritical",
                f"{_where(n)} spent {n['hours_above_4']:.1f} h above 4:1 MOVABLE:KERNEL "
                f"({n['hours_above_3']:.1f} h above 3:1), peak {fmt_ratio(ratio['peak'])} at {ratio['peak_at_iso']}; "
                f"longest stretch above 4:1: {lo['hours']:.1f} h from {lo['from']}. Unmovable allocations "
                f"(memmap, page tables, pinned pages) can only use the kernel zones.",
                n["instance"],
                n["node"],
                hours=n["hours_above_4"],
            )
        elif n["hours_above_3"] > 0:
            add(
                "warning",
                "MemhpMovableKernelRatioHigh",
                f"{_where(n)} spent {n['hours_above_3']:.1f} h above 3:1 MOVABLE:KERNEL (never above 4:1), "
                f"peak {fmt_ratio(ratio['peak'])} at {ratio['peak_at_iso']}.",
                n["instance"],
                n["node"],
                hours=n["hours_above_3"],
            )
        if (ratio["current"] or 0) > RATIO_WARNING:
            crit = ratio["current"] > RATIO_CRITICAL
            add(
                "critical" if crit else "warning",
                "MemhpMovableKernelRatioCritical" if crit else "MemhpMovableKernelRatioHigh",
                f"{_where(n)} is at {fmt_ratio(ratio['current'])} MOVABLE:KERNEL at the end of the period: do not "
                f"online more memory to ZONE_MOVABLE on this node.",
                n["instance"],
                n["node"],
            )
        if n["failed_offline_blocks"]:
            blocks = n["failed_offline_blocks"]
            reasons = n["failed_offline_bytes_by_reason"]
            why = ", ".join(f"{reason}: {fmt_bytes(b)}" for reason, b in reasons.items()) or ", ".join(
                sorted({x for b in blocks for x in b["reasons"]})
            )
            zones = sorted({b["zone"] for b in blocks if b["zone"]})
            still = n["failed_offline_blocks_still_online"]
            add(
                "warning",
                "MemhpOfflineFailuresRising",
                f"{fmt_bytes(n['failed_offline_bytes'])} ({len(blocks)} memory block{'s' * (len(blocks) != 1)}: "
                f"{_blocks_text(blocks)}, zone {'/'.join(zones) or 'unknown'}) requested for removal could not be "
                f"offlined on {_where(n)} ({why}); {still} of them still online at the end of the period.",
                n["instance"],
                n["node"],
                bytes=n["failed_offline_bytes"],
            )
        if (n["unofflinable_blocks"]["peak"] or 0) > 0:
            u = n["unofflinable_blocks"]
            add(
                "info",
                "MemhpOfflineFailuresRising",
                f"{_where(n)} has {u['current']} online memory block(s) the kernel cannot offline (valid_zones "
                f"none: the block spans zones or nodes, or has holes); peak {u['peak']} in the period. They can never "
                f"be hot-unplugged.",
                n["instance"],
                n["node"],
                blocks=u["current"],
            )
        hot = n["hot_unpluggable_bytes"]
        if hot["peak"] and hot["min"] is not None and hot["min"] <= 0 < hot["peak"]:
            add(
                "warning",
                "MemhpHotUnpluggableBelowFloor",
                f"{_where(n)}'s hot-unpluggable memory (online ZONE_MOVABLE) fell to 0 in the period "
                f"(peak {fmt_bytes(hot['peak'])}, now {fmt_bytes(hot['current'])}).",
                n["instance"],
                n["node"],
            )
        b = n["bytes"]
        if b["going_offline_peak"]:
            add(
                "warning",
                "MemhpBlockStuckGoingOffline",
                f"{_where(n)} had up to {fmt_bytes(b['going_offline_peak'])} in going-offline memory blocks "
                f"(offline_pages() retrying).",
                n["instance"],
                n["node"],
            )
        if b["offline"]:
            add(
                "info",
                "MemhpBlocksLeftOffline",
                f"{_where(n)} has {fmt_bytes(b['offline'])} in offline memory blocks at the end of the period: "
                f"present but neither usable nor counted in MOVABLE:KERNEL (hot-added and not onlined, or handed "
                f"back and awaiting removal).",
                n["instance"],
                n["node"],
                bytes=b["offline"],
            )
    for i in r["instances"]:
        q = i["quarantined_blocks"]
        if (q["peak"] or 0) > 0:
            add(
                "warning",
                "MemhpControllerBlocksQuarantined",
                f"{i['instance']}: the controller quarantined up to {q['peak']} memory block(s) after repeated "
                f"failures ({q['current']} quarantined at the end of the period).",
                i["instance"],
            )
        if i["failed_actions"]:
            detail = ", ".join(
                f"{a['action']} {a['errno'] or 'unknown'}: {a['count']}" for a in i["failed_actions_by_errno"]
            )
            add(
                "warning",
                "MemhpControllerActionsFailing",
                f"{i['instance']}: {i['failed_actions']} controller action(s) on memory blocks ended failed "
                f"({detail}).",
                i["instance"],
                count=i["failed_actions"],
            )
        unknown = i["failed_offline_blocks_unknown_node"]
        if unknown or (
            i["offline_failures"]
            and not any(n["failed_offline_blocks"] for n in r["nodes"] if n["instance"] == i["instance"])
        ):
            reasons = ", ".join(f"{k}: {v}" for k, v in i["offline_failures_by_reason"].items())
            add(
                "warning",
                "MemhpOfflineFailuresRising",
                f"{i['instance']}: the kernel logged {i['offline_failures']} failed offline attempt(s) ({reasons})"
                + (f"; {len(unknown)} block(s) without a known node" if unknown else "")
                + ".",
                i["instance"],
                count=i["offline_failures"],
            )
    out.sort(key=lambda f: SEVERITY_ORDER[f["severity"]])
    return out
