"""The few /proc/meminfo figures hotplug decisions need."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from ..kernel.snapshot import ScrapeContext
from ..kernel.sources import MEMINFO
from .base import SubCollector
from .family import Family
from .registry import register_collector

# /proc/meminfo key -> its family
FIELDS = (
    (
        "MemTotal",
        Family("memhp_memory_total_bytes", "gauge", "MemTotal: usable RAM (online memory minus reserved)."),
    ),
    ("MemFree", Family("memhp_memory_free_bytes", "gauge", "MemFree.")),
    (
        "MemAvailable",
        Family(
            "memhp_memory_available_bytes",
            "gauge",
            "MemAvailable: the kernel's estimate of memory available without swapping; the controller's offline "
            "reserve is measured against it.",
        ),
    ),
)


class MeminfoCollector(SubCollector):
    name = "meminfo"
    sources = (MEMINFO,)
    help = "MemTotal, MemFree, MemAvailable from /proc/meminfo"
    families = tuple(fam for _, fam in FIELDS)

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        info = ctx.meminfo
        if info is None:
            return
        for key, fam in FIELDS:
            if key in info:
                yield fam.value(info[key])


register_collector(MeminfoCollector, lambda ctx: MeminfoCollector())
