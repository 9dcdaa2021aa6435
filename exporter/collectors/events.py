"""Collectors for what happens between scrapes: offline failures from the
kernel log, and memory uevents."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..events.kmsg import KNOWN_REASONS, FailureCounts, KmsgWatcher
from ..events.uevent_monitor import UeventMonitor
from ..kernel.memory_blocks import read_memory_config
from ..kernel.snapshot import ScrapeContext
from .base import SubCollector
from .registry import BuildContext, register_collector

UEVENT_ACTIONS = ("add", "remove", "online", "offline")


class OfflineFailuresCollector(SubCollector):
    name = "offline_failures"
    help = (
        "'memory offlining ... failed due to REASON' lines from /dev/kmsg, by reason and block "
        "(needs dynamic debug: file memory_hotplug.c +p)"
    )
    metrics = (
        ("memhp_offline_failures", "counter"),
        ("memhp_block_offline_failures", "counter"),
        ("memhp_offline_failure_last_timestamp_seconds", "gauge"),
        ("memhp_kmsg_watcher_up", "gauge"),
        ("memhp_kmsg_watcher_restarts", "counter"),
    )

    def __init__(self, watcher: KmsgWatcher, counts: FailureCounts) -> None:
        self.watcher = watcher
        self.counts = counts

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        by_reason, by_block, last = self.counts.snapshot()
        total = CounterMetricFamily(
            "memhp_offline_failures", "Failed offline attempts logged by the kernel, by reason.", labels=["reason"]
        )
        for reason in sorted(set(KNOWN_REASONS) | by_reason.keys()):
            total.add_metric([reason], by_reason.get(reason, 0))
        per_block = CounterMetricFamily(
            "memhp_block_offline_failures",
            "Failed offline attempts by block and reason (block='other' past the block limit).",
            labels=["block", "reason"],
        )
        for key in sorted(by_block):
            per_block.add_metric(list(key), by_block[key])
        last_ts = GaugeMetricFamily(
            "memhp_offline_failure_last_timestamp_seconds",
            "Unix time of the last failure seen, by reason.",
            labels=["reason"],
        )
        for reason in sorted(last):
            last_ts.add_metric([reason], last[reason])
        yield from (total, per_block, last_ts)
        yield GaugeMetricFamily(
            "memhp_kmsg_watcher_up", "1 while the kernel log is being followed.", value=float(self.watcher.up)
        )
        yield CounterMetricFamily(
            "memhp_kmsg_watcher_restarts",
            "Times following the kernel log failed and was restarted.",
            value=self.watcher.restarts,
        )

    def close(self) -> None:
        self.watcher.stop()


class UeventsCollector(SubCollector):
    name = "uevents"
    help = "memory subsystem uevents (add, remove, online, offline) from a netlink monitor"
    metrics = (
        ("memhp_uevents", "counter"),
        ("memhp_uevent_monitor_up", "gauge"),
        ("memhp_uevent_monitor_restarts", "counter"),
    )

    def __init__(self, monitor: UeventMonitor) -> None:
        self.monitor = monitor

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        counts = self.monitor.counts()
        fam = CounterMetricFamily("memhp_uevents", "Memory block uevents by action.", labels=["action"])
        for action in sorted(set(UEVENT_ACTIONS) | counts.keys()):
            fam.add_metric([action], counts.get(action, 0))
        yield fam
        yield GaugeMetricFamily(
            "memhp_uevent_monitor_up", "1 while the uevent monitor is listening.", value=float(self.monitor.up)
        )
        yield CounterMetricFamily(
            "memhp_uevent_monitor_restarts",
            "Times the uevent monitor failed and was restarted.",
            value=self.monitor.restarts,
        )

    def close(self) -> None:
        self.monitor.stop()


def _offline_failures(ctx: BuildContext) -> OfflineFailuresCollector:
    counts = ctx.failures()
    memory_dir, errors = ctx.paths.memory, ctx.errors
    watcher = KmsgWatcher(
        ctx.paths.kmsg,
        counts,
        lambda: read_memory_config(memory_dir, errors).block_size_bytes,
        replay=ctx.kmsg_replay,
    ).start()
    return OfflineFailuresCollector(watcher, counts)


register_collector(OfflineFailuresCollector.name, OfflineFailuresCollector.help, _offline_failures, needs_events=True)
register_collector(
    UeventsCollector.name,
    UeventsCollector.help,
    lambda ctx: UeventsCollector(UeventMonitor(ctx.uevent_source).start()),
    needs_events=True,
)
