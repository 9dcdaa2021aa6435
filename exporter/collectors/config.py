"""Hotplug configuration: block size, auto-onlining, online policy, kdump, probe."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from ..kernel.snapshot import ScrapeContext
from ..kernel.sources import SYSFS_MEMORY
from .base import SubCollector
from .family import Family
from .registry import register_collector

BLOCK_SIZE = Family("memhp_block_size_bytes", "gauge", "Size of one memory block (block_size_bytes).")
AUTO_ONLINE = Family(
    "memhp_auto_online_blocks_info",
    "gauge",
    "Default state of hot-added blocks (auto_online_blocks); 'offline' means user space must online them.",
    ("state",),
    doc="`auto_online_blocks`: the state hot-added blocks get (`offline`, `online`, `online_kernel`, "
    "`online_movable`). With `offline`, user space must online them.",
)
CRASH_HOTPLUG = Family(
    "memhp_crash_hotplug",
    "gauge",
    "1 if the kernel updates the kdump memory map itself on hotplug; 0 if user space "
    "must reload kdump after every hot(un)plug.",
    doc="1 if the kernel updates the kdump memory map itself on hotplug; 0 if user space must reload kdump after "
    "every hot(un)plug. Absent on kernels without the file.",
)
PROBE = Family(
    "memhp_probe_interface_present",
    "gauge",
    "1 if the manual probe interface exists (CONFIG_ARCH_MEMORY_PROBE).",
    doc="1 if `/sys/devices/system/memory/probe` exists (`CONFIG_ARCH_MEMORY_PROBE`).",
)
ONLINE_POLICY = Family(
    "memhp_online_policy_info",
    "gauge",
    "memory_hotplug.online_policy.",
    ("policy",),
    doc="`memory_hotplug.online_policy`: `contig-zones` or `auto-movable`.",
)
MAX_RATIO = Family(
    "memhp_auto_movable_max_ratio",
    "gauge",
    "memory_hotplug.auto_movable_ratio as a ratio (301% reads 3.01): the MOVABLE:KERNEL "
    "ceiling of the auto-movable policy.",
)
NUMA_AWARE = Family("memhp_auto_movable_numa_aware", "gauge", "1 if auto_movable_ratio also applies per NUMA node.")
MEMMAP_ON_MEMORY = Family(
    "memhp_memmap_on_memory_info", "gauge", "memory_hotplug.memmap_on_memory (Y, N or force).", ("mode",)
)


def _info(family: Family, value: str | None) -> list[Metric]:
    if value is None:
        return []
    fam = family.new()
    fam.add_metric([value], 1)
    return [fam]


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)


class ConfigCollector(SubCollector):
    name = "config"
    sources = (SYSFS_MEMORY,)
    help = "block size, auto_online_blocks, memory_hotplug module parameters, crash_hotplug, probe"
    families = (BLOCK_SIZE, AUTO_ONLINE, CRASH_HOTPLUG, PROBE, ONLINE_POLICY, MAX_RATIO, NUMA_AWARE, MEMMAP_ON_MEMORY)

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        cfg, p = ctx.config, ctx.params
        yield from BLOCK_SIZE.optional(cfg.block_size_bytes)
        yield from _info(AUTO_ONLINE, cfg.auto_online_blocks)
        yield from CRASH_HOTPLUG.optional(_flag(cfg.crash_hotplug))
        yield PROBE.value(float(cfg.probe_present))
        yield from _info(ONLINE_POLICY, p.online_policy)
        yield from MAX_RATIO.optional(None if p.auto_movable_ratio is None else p.auto_movable_ratio / 100)
        yield from NUMA_AWARE.optional(_flag(p.auto_movable_numa_aware))
        yield from _info(MEMMAP_ON_MEMORY, p.memmap_on_memory)


register_collector(ConfigCollector, lambda ctx: ConfigCollector())
