"""Zones from /proc/zoneinfo: watermarks and sizes, and the MOVABLE:KERNEL
balance as the auto-movable online policy accounts it."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from ..kernel.accounting import balance
from ..kernel.snapshot import ScrapeContext
from ..kernel.zones import KERNEL_DEFAULT_RATIO, PAGE_SIZE
from .base import SubCollector
from .registry import register_collector

_SIZES = (
    ("free", "memhp_zone_free_bytes", "Free memory in the zone."),
    ("present", "memhp_zone_present_bytes", "Physical memory present in the zone."),
    ("managed", "memhp_zone_managed_bytes", "Memory managed by the buddy allocator in the zone."),
    ("spanned", "memhp_zone_spanned_bytes", "Physical address span of the zone, holes included."),
    ("cma", "memhp_zone_cma_bytes", "CMA memory in the zone (accounted as MOVABLE by the kernel)."),
)


class ZonesCollector(SubCollector):
    name = "zones"
    help = "zone free/watermarks/sizes from /proc/zoneinfo, MOVABLE:KERNEL ratio and auto-movable headroom"
    metrics = tuple((name, "gauge") for _, name, _ in _SIZES) + (
        ("memhp_zone_watermark_bytes", "gauge"),
        ("memhp_zone_populated", "gauge"),
        ("memhp_node_movable_accounted_bytes", "gauge"),
        ("memhp_node_kernel_accounted_bytes", "gauge"),
        ("memhp_node_movable_kernel_ratio", "gauge"),
        ("memhp_node_auto_movable_headroom_bytes", "gauge"),
        ("memhp_system_movable_kernel_ratio", "gauge"),
        ("memhp_system_auto_movable_headroom_bytes", "gauge"),
    )

    def __init__(self, page_size: int = PAGE_SIZE) -> None:
        self.page_size = page_size

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        info = ctx.zoneinfo
        if info is None:
            return
        ps = self.page_size
        sizes = {field: GaugeMetricFamily(name, doc, labels=["node", "zone"]) for field, name, doc in _SIZES}
        wmark = GaugeMetricFamily(
            "memhp_zone_watermark_bytes",
            "Zone watermarks: below low kswapd wakes, below min only atomic/reserve allocations succeed.",
            labels=["node", "zone", "watermark"],
        )
        populated = GaugeMetricFamily(
            "memhp_zone_populated", "1 if the zone has present pages.", labels=["node", "zone"]
        )
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

        movable = GaugeMetricFamily(
            "memhp_node_movable_accounted_bytes",
            "MOVABLE side of the ratio: ZONE_MOVABLE present plus CMA.",
            labels=["node"],
        )
        kernel = GaugeMetricFamily(
            "memhp_node_kernel_accounted_bytes",
            "KERNEL side of the ratio: kernel-zone present minus CMA.",
            labels=["node"],
        )
        ratio = GaugeMetricFamily(
            "memhp_node_movable_kernel_ratio",
            "MOVABLE:KERNEL per node (3 means 3:1); absent for a node without kernel memory.",
            labels=["node"],
        )
        headroom = GaugeMetricFamily(
            "memhp_node_auto_movable_headroom_bytes",
            "Memory that could still be onlined to ZONE_MOVABLE on this node before auto_movable_ratio is reached.",
            labels=["node"],
        )
        for n, bal in per_node.items():
            movable.add_metric([str(n)], bal.movable_pages * ps)
            kernel.add_metric([str(n)], bal.kernel_pages * ps)
            if bal.ratio is not None:
                ratio.add_metric([str(n)], bal.ratio)
            headroom.add_metric([str(n)], bal.headroom_pages(limit) * ps)
        yield from (movable, kernel, ratio, headroom)
        if system.ratio is not None:
            yield GaugeMetricFamily(
                "memhp_system_movable_kernel_ratio",
                "MOVABLE:KERNEL across all nodes (3 means 3:1).",
                value=system.ratio,
            )
        yield GaugeMetricFamily(
            "memhp_system_auto_movable_headroom_bytes",
            "Memory that could still be onlined to ZONE_MOVABLE system-wide before auto_movable_ratio is reached.",
            value=system.headroom_pages(limit) * ps,
        )


register_collector(ZonesCollector.name, ZonesCollector.help, lambda ctx: ZonesCollector())
