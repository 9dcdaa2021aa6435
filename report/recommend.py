"""What to do about each finding, in the operator's terms: blocks to online
as kernel memory, ZONE_MOVABLE to take out, with the node's own figures.

The arithmetic is the exporter's (exporter/kernel/accounting.py): MOVABLE is
ZONE_MOVABLE present plus CMA, KERNEL is kernel-zone present minus CMA, and
a node is over a line L when MOVABLE > L x KERNEL.  So, for a node at ratio
r with kernel memory K (``kernel_accounted``: the exporter's figure; the
online kernel zones where the recording rule is missing) and memory blocks
of b bytes:

* onlining n blocks as kernel memory brings it to L or below when
  n = ceil((r·K / L − K) / b);
* taking m blocks out of ZONE_MOVABLE (offline, then remove) when
  m = ceil((r·K − L·K) / b);
* ZONE_MOVABLE that can still be onlined before L is L·K − r·K.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from . import thresholds
from .analysis import fmt_bytes, fmt_ratio
from .forecast import in_words


class NodeLookup(Protocol):
    """A node's row by (instance, node): a dict, or the report's row store."""

    def get(self, key: tuple[str, str], default: Any = None, /) -> dict[str, Any] | None: ...


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'s' if n != 1 else ''}"


def kernel_bytes(row: dict) -> float | None:
    k = row.get("kernel_accounted")
    if k is None:
        k = row.get("online_kernel_bytes")
    return float(k) if k else None


def fix(ratio: float, kernel: float, block: float, line: float) -> dict[str, int] | None:
    """Blocks (and bytes) to online as kernel memory, or to take out of
    ZONE_MOVABLE, to bring ``ratio`` to ``line`` or below; None when it
    already is."""
    movable = ratio * kernel
    if movable <= line * kernel:
        return None
    add = math.ceil((movable / line - kernel) / block - 1e-9)
    remove = math.ceil((movable - line * kernel) / block - 1e-9)
    return {
        "kernel_blocks": add,
        "kernel_bytes": int(add * block),
        "movable_blocks": remove,
        "movable_bytes": int(remove * block),
    }


def _where(row: dict) -> str:
    return f"node {row['node']} of host {row['instance']}"


def _to_line(row: dict, ratio: float | None, block: float | None, verb: str) -> str | None:
    line = thresholds.LINES.warning
    kernel = kernel_bytes(row)
    if ratio is None or kernel is None or not block:
        return None
    f = fix(ratio, kernel, block, line)
    if f is None:
        return None
    text = (
        f"{_where(row)}: online {_plural(f['kernel_blocks'], 'block')} ({fmt_bytes(f['kernel_bytes'])}) as kernel "
        f"memory, or remove {fmt_bytes(f['movable_bytes'])} ({_plural(f['movable_blocks'], 'block')}) of "
        f"ZONE_MOVABLE, {verb} {thresholds.LINES.warning_label}"
    )
    offline = row.get("offline_bytes") or 0.0
    if offline >= f["kernel_bytes"]:
        text += f"; {fmt_bytes(offline)} is offline there (online_kernel where valid_zones allows)"
    else:
        text += "; no offline block there is enough: hot-add memory first, or take ZONE_MOVABLE out"
    return text + "."


def _ratio_now(row: dict, block: float | None) -> str | None:
    return _to_line(row, row["ratio_current"], block, "to return to")


def _ratio_peak(row: dict, block: float | None) -> str | None:
    if (row["ratio_current"] or 0) > thresholds.LINES.warning:
        return _ratio_now(row, block)
    kernel = kernel_bytes(row)
    text = _to_line(row, row["ratio_peak"], block, f"would have kept its peak ({fmt_ratio(row['ratio_peak'])}) at")
    if text is None or kernel is None or row["ratio_current"] is None:
        return text
    room = (thresholds.LINES.warning - row["ratio_current"]) * kernel
    return (
        text[:-1] + f". Now {fmt_ratio(row['ratio_current'])}: at most {fmt_bytes(room)} more ZONE_MOVABLE "
        f"before {thresholds.LINES.warning_label}."
    )


def _rising(row: dict, block: float | None) -> str | None:
    kernel, per_day = kernel_bytes(row), row.get("ratio_trend_per_day")
    if kernel is None or not per_day or not block or row["ratio_current"] is None:
        return None
    line = thresholds.LINES.warning
    room = max(0.0, (line - row["ratio_current"]) * kernel)
    per_week = math.ceil(per_day * 7 * kernel / line / block - 1e-9)
    return (
        f"{_where(row)}: {fmt_bytes(room)} more ZONE_MOVABLE reaches {thresholds.LINES.warning_label} "
        f"({in_words(row['days_to_warning'])} at this pace); to hold the ratio, online about "
        f"{_plural(per_week, 'block')} ({fmt_bytes(per_week * block)}) a week as kernel memory, or stop onlining "
        f"ZONE_MOVABLE there."
    )


def _left_offline(row: dict, block: float | None) -> str | None:
    offline, kernel = row.get("offline_bytes") or 0.0, kernel_bytes(row)
    if not offline or kernel is None or row["ratio_current"] is None:
        return None
    room = max(0.0, (thresholds.LINES.warning - row["ratio_current"]) * kernel)
    movable = min(offline, room)
    if block:
        movable = math.floor(movable / block) * block
    rest = offline - movable
    text = f"{_where(row)}: online the {fmt_bytes(offline)}: "
    if movable:
        text += f"{fmt_bytes(movable)} as ZONE_MOVABLE (to stay at {thresholds.LINES.warning_label} or below)"
        text += f", the other {fmt_bytes(rest)} as kernel memory" if rest else ""
    else:
        text += f"as kernel memory (the node has no room for ZONE_MOVABLE under {thresholds.LINES.warning_label})"
    return text + "; or remove it if it is not needed."


REASONS = {
    "unmovable page": "a page there cannot be migrated (pinned by RDMA, vfio or a driver): find its owner before "
    "retrying, and do not count these blocks as hot-unpluggable until then",
    "failure to isolate range": "unmovable pages in the range: retry later or offline other ZONE_MOVABLE blocks",
    "notifier failure": "a memory notifier refused (a driver or balloon): see dmesg",
    "signal backoff": "the writer was signalled (the controller's timeout): retry when the node is quieter",
    "failure to dissolve huge pages": "HugeTLB pages there need kernel-zone memory to dissolve: free hugepages first",
}


def _failed(row: dict, block: float | None) -> str | None:
    why = [REASONS.get(r, f"{r}: see the runbook") for r in row.get("failed_offline_bytes_by_reason", {})]
    if not why:
        return None
    return f"{_where(row)}: " + "; ".join(why) + "."


def _hot_zero(row: dict, block: float | None) -> str | None:
    head = row.get("headroom_current")
    room = f" (auto-movable headroom now {fmt_bytes(head)})" if head is not None else ""
    return (
        f"{_where(row)}: nothing there can be hot-unplugged: online memory as ZONE_MOVABLE again{room} before "
        f"counting on hot-unplug."
    )


def _going_offline(row: dict, block: float | None) -> str | None:
    return (
        f"{_where(row)}: a block stayed going-offline (offline_pages() retrying): signal the writer to abandon it, "
        f"then offline another ZONE_MOVABLE block."
    )


def _unofflinable(row: dict, block: float | None) -> str | None:
    n = row.get("unofflinable_blocks_current") or 0
    size = f" ({fmt_bytes(n * block)})" if block and n else ""
    return (
        f"{_where(row)}: leave these {_plural(n, 'block')}{size} out of hot-unplug plans and hot-unpluggable "
        f"capacity; in hot-added memory, check that the DIMM's range is block-aligned."
    )


NODE_ADVICE: dict[str, Callable[[dict, float | None], str | None]] = {
    "ratio_now": _ratio_now,
    "ratio_critical": _ratio_peak,
    "ratio_high": _ratio_peak,
    "ratio_rising": _rising,
    "left_offline": _left_offline,
    "failed_offline": _failed,
    "hot_unpluggable_zero": _hot_zero,
    "going_offline": _going_offline,
    "unofflinable": _unofflinable,
}

ERRNO = {
    "EBUSY": "blocks in use: retry later or let the controller pick other blocks",
    "EINVAL": "the request did not fit the block (valid_zones): check the policy's zone",
    "EAGAIN": "the kernel asked to retry: retry later",
    "EPERM": "no permission: the controller needs CAP_SYS_ADMIN and a writable /sys",
    "EACCES": "no permission: the controller needs CAP_SYS_ADMIN and a writable /sys",
    "EROFS": "/sys is read-only in the controller's container",
}


def _host_advice(kind: str, host: dict) -> str | None:
    name = host["instance"]
    if kind == "quarantined":
        return (
            f"host {name}: find why the quarantined blocks keep failing (controller journal, dmesg) before the "
            f"quarantine is lifted."
        )
    if kind == "failed_actions":
        why = sorted({ERRNO.get(a["errno"], f"{a['errno'] or 'unknown'}") for a in host["failed_actions_by_errno"]})
        return f"host {name}: " + "; ".join(why) + "."
    if kind == "offline_failures_no_node":
        return f"host {name}: turn on memhp_block_offline_failures_total (the blocks collector) to see which blocks."
    return None


def annotate(groups: list[dict], rows: NodeLookup, hosts: Mapping[str, dict[str, Any]]) -> None:
    """Adds ``recommendation`` to each finding entry (None where there is
    nothing to compute it from)."""
    for g in groups:
        advise = NODE_ADVICE.get(g["kind"])
        for e in g["entries"]:
            host = hosts.get(e["instance"], {})
            if e.get("node") is None:
                e["recommendation"] = _host_advice(g["kind"], host) if host else None
                continue
            row = rows.get((e["instance"], e["node"]))
            e["recommendation"] = advise(row, host.get("block_size_bytes")) if advise and row else None
