"""Collectors for what happens between scrapes: offline failures from the
kernel log, and memory uevents."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import Metric

from ..events.kmsg import KNOWN_REASONS, FailureCounts, KmsgWatcher
from ..events.uevent_monitor import UeventMonitor
from ..kernel.memory_blocks import read_memory_config
from ..kernel.snapshot import ScrapeContext
from .base import SubCollector
from .family import Family
from .registry import BuildContext, Flag, register_collector

UEVENT_ACTIONS = ("add", "remove", "online", "offline")

KMSG_REPLAY = Flag(
    "offline_failures.replay",
    False,
    "Also count failures already in the kernel log at start (they are counted again after every restart).",
)
# Also the source of the blocks collector's snapshot.
UEVENT_SOURCE = Flag(
    "uevents.source",
    "kernel",
    "Netlink source: the kernel's own events (no udevd needed) or udevd's.",
    choices=("kernel", "udev"),
)

FAILURES = Family(
    "memhp_offline_failures",
    "counter",
    "Failed offline attempts logged by the kernel, by reason.",
    ("reason",),
    doc="Failed offline attempts logged by the kernel. Every known reason is exported at 0 from the start, so "
    "`increase()` sees the first failure too.",
)
BLOCK_FAILURES = Family(
    "memhp_block_offline_failures",
    "counter",
    "Failed offline attempts by block and reason (block='other' past the block limit).",
    ("block", "reason"),
    doc='The same per block. Past `--collector.blocks.limit` distinct blocks, further ones are counted as `block="other"`.',
)
LAST_FAILURE = Family(
    "memhp_offline_failure_last_timestamp_seconds",
    "gauge",
    "Unix time of the last failure seen, by reason.",
    ("reason",),
)
ONLINE_FAILURES = Family(
    "memhp_online_failures",
    "counter",
    "Failed online attempts logged by the kernel ('online_pages [mem ...] failed').",
    doc="Failed online attempts logged by the kernel (`online_pages [mem ...] failed`: a memory notifier refused "
    "MEM_GOING_ONLINE, or the memmap could not be allocated). The kernel does not retry: the block stays offline. "
    "The line gives no reason. Exported at 0 from the start.",
)
BLOCK_ONLINE_FAILURES = Family(
    "memhp_block_online_failures",
    "counter",
    "Failed online attempts by block (block='other' past the block limit).",
    ("block",),
    doc='The same per block. Past `--collector.blocks.limit` distinct blocks, further ones are counted as `block="other"`.',
)
LAST_ONLINE_FAILURE = Family(
    "memhp_online_failure_last_timestamp_seconds",
    "gauge",
    "Unix time of the last failed online seen; absent before the first.",
)
KMSG_UP = Family("memhp_kmsg_watcher_up", "gauge", "1 while the kernel log is being followed.")
KMSG_RESTARTS = Family(
    "memhp_kmsg_watcher_restarts", "counter", "Times following the kernel log failed and was restarted."
)

UEVENTS = Family(
    "memhp_uevents",
    "counter",
    "Memory block uevents by action.",
    ("action",),
    doc="Uevents of the `memory` subsystem, by action (`add`, `remove`, `online`, `offline`, …).",
)
MONITOR_UP = Family("memhp_uevent_monitor_up", "gauge", "1 while the uevent monitor is listening.")
MONITOR_RESTARTS = Family(
    "memhp_uevent_monitor_restarts", "counter", "Times the uevent monitor failed and was restarted."
)


class OfflineFailuresCollector(SubCollector):
    name = "offline_failures"
    help = (
        "'memory offlining ... failed due to REASON' lines from /dev/kmsg, by reason and block, and "
        "'online_pages ... failed' lines, by block (needs dynamic debug: file memory_hotplug.c +p)"
    )
    families = (
        FAILURES,
        BLOCK_FAILURES,
        LAST_FAILURE,
        ONLINE_FAILURES,
        BLOCK_ONLINE_FAILURES,
        LAST_ONLINE_FAILURE,
        KMSG_UP,
        KMSG_RESTARTS,
    )

    def __init__(self, watcher: KmsgWatcher, counts: FailureCounts) -> None:
        self.watcher = watcher
        self.counts = counts

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        by_reason, by_block, last = self.counts.snapshot()
        total = FAILURES.new()
        for reason in sorted(set(KNOWN_REASONS) | by_reason.keys()):
            total.add_metric([reason], by_reason.get(reason, 0))
        per_block = BLOCK_FAILURES.new()
        for key in sorted(by_block):
            per_block.add_metric(list(key), by_block[key])
        last_ts = LAST_FAILURE.new()
        for reason in sorted(last):
            last_ts.add_metric([reason], last[reason])
        yield from (total, per_block, last_ts)
        yield from self._online()
        yield KMSG_UP.value(float(self.watcher.up))
        yield KMSG_RESTARTS.value(self.watcher.restarts)

    def _online(self) -> Iterable[Metric]:
        online_total, by_block, last = self.counts.online_snapshot()
        yield ONLINE_FAILURES.value(online_total)
        per_block = BLOCK_ONLINE_FAILURES.new()
        for block in sorted(by_block):
            per_block.add_metric([block], by_block[block])
        yield per_block
        last_ts = LAST_ONLINE_FAILURE.new()  # no sample before the first failure
        if last is not None:
            last_ts.add_metric([], last)
        yield last_ts

    def close(self) -> None:
        self.watcher.stop()


class UeventsCollector(SubCollector):
    name = "uevents"
    help = "memory subsystem uevents (add, remove, online, offline) from a netlink monitor"
    families = (UEVENTS, MONITOR_UP, MONITOR_RESTARTS)

    def __init__(self, monitor: UeventMonitor) -> None:
        self.monitor = monitor

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        counts = self.monitor.counts()
        fam = UEVENTS.new()
        for action in sorted(set(UEVENT_ACTIONS) | counts.keys()):
            fam.add_metric([action], counts.get(action, 0))
        yield fam
        yield MONITOR_UP.value(float(self.monitor.up))
        yield MONITOR_RESTARTS.value(self.monitor.restarts)

    def close(self) -> None:
        self.monitor.stop()


def _offline_failures(ctx: BuildContext) -> OfflineFailuresCollector:
    counts = ctx.failures()
    memory_dir, errors = ctx.paths.memory, ctx.errors
    watcher = KmsgWatcher(
        ctx.paths.kmsg,
        counts,
        lambda: read_memory_config(memory_dir, errors).block_size_bytes,
        replay=ctx.value(KMSG_REPLAY),
    ).start()
    return OfflineFailuresCollector(watcher, counts)


register_collector(OfflineFailuresCollector, _offline_failures, flags=(KMSG_REPLAY,), needs_events=True)
register_collector(
    UeventsCollector,
    lambda ctx: UeventsCollector(UeventMonitor(ctx.value(UEVENT_SOURCE)).start()),
    flags=(UEVENT_SOURCE,),
    needs_events=True,
)
