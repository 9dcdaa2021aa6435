"""Zones from /proc/zoneinfo: watermarks and sizes, and the MOVABLE:KERNEL
balance as the auto-movable online policy accounts it."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from ..kernel.accounting import balance
from ..kernel.snapshot import ScrapeContext
from ..kernel.sources import ZONEINFO
from ..kernel.zones import KERNEL_DEFAULT_RATIO, PAGE_SIZE
from .base import SubCollector
from .family import Family
from .registry import register_collector

_ZONE = ("node", "zone")
# zoneinfo field -> its family
SIZES = (
    ("free", Family("memhp_zone_free_bytes", "gauge", "Free memory in the zone.", _ZONE)),
    ("present", Family("memhp_zone_present_bytes", "gauge", "Physical memory present in the zone.", _ZONE)),
    (
        "managed",
        Family("memhp_zone_managed_bytes", "gauge", "Memory managed by the buddy allocator in the zone.", _ZONE),
    ),
    (
        "spanned",
        Family("memhp_zone_spanned_bytes", "gauge", "Physical address span of the zone, holes included.", _ZONE),
    ),
    (
        "cma",
        Family("memhp_zone_cma_bytes", "gauge", "CMA memory in the zone (accounted as MOVABLE by the kernel).", _ZONE),
    ),
)
WATERMARK = Family(
    "memhp_zone_watermark_bytes",
    "gauge",
    "Zone watermarks: below low kswapd wakes, below min only atomic/reserve allocations succeed.",
    ("node", "zone", "watermark"),
)
POPULATED = Family("memhp_zone_populated", "gauge", "1 if the zone has present pages.", _ZONE)
NODE_MOVABLE = Family(
    "memhp_node_movable_accounted_bytes",
    "gauge",
    "MOVABLE side of the ratio: ZONE_MOVABLE present plus CMA.",
    ("node",),
)
NODE_KERNEL = Family(
    "memhp_node_kernel_accounted_bytes",
    "gauge",
    "KERNEL side of the ratio: kernel-zone present minus CMA.",
    ("node",),
)
NODE_RATIO = Family(
    "memhp_node_movable_kernel_ratio",
    "gauge",
    "MOVABLE:KERNEL per node (3 means 3:1); absent for a node without kernel memory.",
    ("node",),
)
NODE_HEADROOM = Family(
    "memhp_node_auto_movable_headroom_bytes",
    "gauge",
    "Memory that could still be onlined to ZONE_MOVABLE on this node before auto_movable_ratio is reached.",
    ("node",),
)
SYSTEM_RATIO = Family("memhp_system_movable_kernel_ratio", "gauge", "MOVABLE:KERNEL across all nodes (3 means 3:1).")
SYSTEM_HEADROOM = Family(
    "memhp_system_auto_movable_headroom_bytes",
    "gauge",
    "Memory that could still be onlined to ZONE_MOVABLE system-wide before auto_movable_ratio is reached.",
)


class ZonesCollector(SubCollector):
    name = "zones"
    sources = (ZONEINFO,)
    help = "zone free/watermarks/sizes from /proc/zoneinfo, MOVABLE:KERNEL ratio and auto-movable headroom"
    families = (
        *(fam for _, fam in SIZES),
        WATERMARK,
        POPULATED,
        NODE_MOVABLE,
        NODE_KERNEL,
        NODE_RATIO,
        NODE_HEADROOM,
        SYSTEM_RATIO,
        SYSTEM_HEADROOM,
    )

    def __init__(self, page_size: int = PAGE_SIZE) -> None:
        self.page_size = page_size

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        info = ctx.zoneinfo
        if info is None:
            return
        ps = self.page_size
        sizes = {field: fam.new() for field, fam in SIZES}
        wmark = WATERMARK.new()
        populated = POPULATED.new()
        for z in info.zones:
            labels = [str(z.node), z.name]
            for field, fam in sizes.items():
                value = getattr(z, field)
                if value is not None:
                    fam.add_metric(labels, value * ps)
            for w in ("min", "low", "high"):
                value = getattr(z, w)
                if value is not None:
                    wmark.add_metric(labels + [w], value * ps)
            populated.add_metric(labels, float(z.populated))
        yield from sizes.values()
        yield wmark
        yield populated
        yield from self._balance(ctx, info)

    def _balance(self, ctx: ScrapeContext, info) -> Iterable[Metric]:
        ps = self.page_size
        ratio_pct = ctx.params.auto_movable_ratio
        limit = KERNEL_DEFAULT_RATIO if ratio_pct is None else ratio_pct
        per_node = {n: balance(zs) for n, zs in sorted(info.by_node().items())}
        system = balance(info.zones)

        movable, kernel, ratio, headroom = (f.new() for f in (NODE_MOVABLE, NODE_KERNEL, NODE_RATIO, NODE_HEADROOM))
        for n, bal in per_node.items():
            movable.add_metric([str(n)], bal.movable_pages * ps)
            kernel.add_metric([str(n)], bal.kernel_pages * ps)
            if bal.ratio is not None:
                ratio.add_metric([str(n)], bal.ratio)
            headroom.add_metric([str(n)], bal.headroom_pages(limit) * ps)
        yield from (movable, kernel, ratio, headroom)
        yield from SYSTEM_RATIO.optional(system.ratio)
        yield SYSTEM_HEADROOM.value(system.headroom_pages(limit) * ps)


register_collector(ZonesCollector, lambda ctx: ZonesCollector())
