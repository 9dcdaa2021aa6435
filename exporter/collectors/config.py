"""Hotplug configuration: block size, auto-onlining, online policy, kdump, probe."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from ..kernel.snapshot import ScrapeContext
from .base import SubCollector, gauge
from .registry import register_collector


def _info(name: str, doc: str, label: str, value: str | None) -> list[Metric]:
    if value is None:
        return []
    fam = GaugeMetricFamily(name, doc, labels=[label])
    fam.add_metric([value], 1)
    return [fam]


class ConfigCollector(SubCollector):
    name = "config"
    help = "block size, auto_online_blocks, memory_hotplug module parameters, crash_hotplug, probe"
    metrics = (
        ("memhp_block_size_bytes", "gauge"),
        ("memhp_auto_online_blocks_info", "gauge"),
        ("memhp_crash_hotplug", "gauge"),
        ("memhp_probe_interface_present", "gauge"),
        ("memhp_online_policy_info", "gauge"),
        ("memhp_auto_movable_max_ratio", "gauge"),
        ("memhp_auto_movable_numa_aware", "gauge"),
        ("memhp_memmap_on_memory_info", "gauge"),
    )

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        cfg, p = ctx.config, ctx.params
        yield from gauge("memhp_block_size_bytes", "Size of one memory block (block_size_bytes).", cfg.block_size_bytes)
        yield from _info(
            "memhp_auto_online_blocks_info",
            "Default state of hot-added blocks (auto_online_blocks); 'offline' means user space must online them.",
            "state",
            cfg.auto_online_blocks,
        )
        yield from gauge(
            "memhp_crash_hotplug",
            "1 if the kernel updates the kdump memory map itself on hotplug; 0 if user space "
            "must reload kdump after every hot(un)plug.",
            None if cfg.crash_hotplug is None else float(cfg.crash_hotplug),
        )
        yield from gauge(
            "memhp_probe_interface_present",
            "1 if the manual probe interface exists (CONFIG_ARCH_MEMORY_PROBE).",
            float(cfg.probe_present),
        )
        yield from _info("memhp_online_policy_info", "memory_hotplug.online_policy.", "policy", p.online_policy)
        yield from gauge(
            "memhp_auto_movable_max_ratio",
            "memory_hotplug.auto_movable_ratio as a ratio (301% reads 3.01): the MOVABLE:KERNEL "
            "ceiling of the auto-movable policy.",
            None if p.auto_movable_ratio is None else p.auto_movable_ratio / 100,
        )
        yield from gauge(
            "memhp_auto_movable_numa_aware",
            "1 if auto_movable_ratio also applies per NUMA node.",
            None if p.auto_movable_numa_aware is None else float(p.auto_movable_numa_aware),
        )
        yield from _info(
            "memhp_memmap_on_memory_info",
            "memory_hotplug.memmap_on_memory (Y, N or force).",
            "mode",
            p.memmap_on_memory,
        )


register_collector(ConfigCollector.name, ConfigCollector.help, lambda ctx: ConfigCollector())
