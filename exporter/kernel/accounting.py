"""Derived figures: the MOVABLE:KERNEL ratio as the kernel's auto-movable
policy accounts it, its headroom, and lsmem-style merging of blocks.

The kernel (mm/memory_hotplug.c, auto_movable_stats_account_zone) counts
ZONE_MOVABLE present pages plus CMA pages as MOVABLE, and kernel-zone
``present_early_pages`` minus CMA pages as KERNEL.  ``present_early_pages``
(memory present at boot) is not exported; ``/proc/zoneinfo`` gives
``present``, which also holds hot-added memory onlined to a kernel zone.  We
use ``present``: where memory was hot-added to a kernel zone our KERNEL figure
is larger than the kernel's own, so our ratio can read lower and our headroom
higher than the policy will allow (see docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby

from .model import MOVABLE, MemoryBlock, Zone


@dataclass(frozen=True, slots=True)
class Balance:
    movable_pages: int
    kernel_pages: int

    @property
    def ratio(self) -> float | None:
        """MOVABLE:KERNEL as a plain number (3.0 means 3:1); None without kernel memory."""
        return self.movable_pages / self.kernel_pages if self.kernel_pages > 0 else None

    def headroom_pages(self, ratio_percent: int) -> int:
        """Pages that could still be onlined movable before ``ratio_percent`` is reached."""
        return max(0, ratio_percent * self.kernel_pages // 100 - self.movable_pages)


def balance(zones: Iterable[Zone]) -> Balance:
    movable = kernel = 0
    for z in zones:
        if not z.populated:
            continue
        if z.movable:
            movable += z.present or 0
        else:
            cma = z.cma or 0
            movable += cma
            kernel += (z.present or 0) - cma
    return Balance(movable, max(kernel, 0))


def is_hot_unpluggable(state: str | None, zone: str | None) -> bool:
    """Online in ZONE_MOVABLE: a candidate for offlining."""
    return state == "online" and zone == MOVABLE


def hot_unpluggable(blocks: Iterable[MemoryBlock]) -> list[MemoryBlock]:
    return [b for b in blocks if is_hot_unpluggable(b.state, b.zone)]


@dataclass(frozen=True, slots=True)
class BlockRange:
    """Consecutive blocks that look the same, as lsmem merges them."""

    first: int
    last: int
    state: str | None
    removable: bool | None
    node: int | None
    valid_zones: tuple[str, ...] | None

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    @property
    def zone(self) -> str | None:
        return self.valid_zones[0] if self.valid_zones else None


def merge_ranges(blocks: list[MemoryBlock]) -> list[BlockRange]:
    """Merge runs of consecutive block ids with equal state, removable, node and zones."""
    out: list[BlockRange] = []
    if not blocks:
        return out
    first = last = blocks[0]
    key = (first.state, first.removable, first.node, first.valid_zones)
    for b in blocks[1:]:
        k = (b.state, b.removable, b.node, b.valid_zones)
        if b.id != last.id + 1 or k != key:
            out.append(BlockRange(first.id, last.id, *key))
            first, key = b, k
        last = b
    out.append(BlockRange(first.id, last.id, *key))
    return out


def format_id_ranges(ids: Iterable[int]) -> str:
    """``[1,2,3,7]`` -> ``"1-3,7"``."""
    parts = []
    for _, grp in groupby(enumerate(sorted(ids)), lambda t: t[1] - t[0]):
        g = [v for _, v in grp]
        parts.append(str(g[0]) if len(g) == 1 else f"{g[0]}-{g[-1]}")
    return ",".join(parts)
