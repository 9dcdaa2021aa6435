"""The few /proc/meminfo figures hotplug decisions need."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from ..kernel.snapshot import ScrapeContext
from .base import SubCollector
from .registry import register_collector

_FIELDS = (
    ("MemTotal", "memhp_memory_total_bytes", "MemTotal: usable RAM (online memory minus reserved)."),
    ("MemFree", "memhp_memory_free_bytes", "MemFree."),
    (
        "MemAvailable",
        "memhp_memory_available_bytes",
        "MemAvailable: the kernel's estimate of memory available without swapping; the controller's offline "
        "reserve is measured against it.",
    ),
)


class MeminfoCollector(SubCollector):
    name = "meminfo"
    help = "MemTotal, MemFree, MemAvailable from /proc/meminfo"
    metrics = tuple((name, "gauge") for _, name, _ in _FIELDS)

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        info = ctx.meminfo
        if info is None:
            return
        for key, name, doc in _FIELDS:
            if key in info:
                yield GaugeMetricFamily(name, doc, value=info[key])


register_collector(MeminfoCollector.name, MeminfoCollector.help, lambda ctx: MeminfoCollector())
