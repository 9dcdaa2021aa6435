"""Memory blocks within a series budget.

Always: counts and bytes by node, zone and state, and lsmem-style ranges (runs
of consecutive blocks that look the same), so a healthy host of any size costs
about as many series as a small one.  One by one, by default, only the blocks
worth a look (going-offline, failing to offline, ``valid_zones`` none), up to
``--collector.blocks.notable-limit``; every block one by one is the opt-in
``--collector.blocks.all``.

In the server the blocks come from :class:`~memhp.exporter.events.live_blocks.LiveBlocks`
(an event-driven snapshot), and everything derived from them is computed and
rendered once per snapshot version, not once per scrape.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..events.kmsg import FailureCounts
from ..events.live_blocks import EVENTS, MODES, RESYNC_REASONS, SCRAPE, BlockView, LiveBlocks
from ..exposition import PrerenderedFamily
from ..kernel.accounting import is_hot_unpluggable, merge_ranges
from ..kernel.fsread import ParseErrors, parse_bool, read_attr
from ..kernel.model import BLOCK_STATES, NONE_ZONE, MemoryBlock
from ..kernel.snapshot import ScrapeContext
from .base import SubCollector, node_label
from .registry import BuildContext, register_collector

# With --collector.blocks.all: 512 GiB of 128 MiB blocks.
DEFAULT_BLOCK_LIMIT = 4096
DEFAULT_NOTABLE_LIMIT = 32
DEFAULT_RANGES_LIMIT = 256

# Why a block is exported one by one by default, most urgent first (the
# notable limit keeps the first ones).
NOTABLE_REASONS = ("going-offline", "offline-failed", "unofflinable")


class GoingOfflineTracker:
    """Remembers since when each block has been seen ``going-offline``.

    The kernel keeps a block in that state while offline_pages() migrates its
    pages, which can go on for ever; a scrape only sees snapshots, so the age
    is measured from the first scrape that saw it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: dict[int, float] = {}
        self._episodes = 0
        self._lock = threading.Lock()

    def update(self, blocks: Iterable[MemoryBlock]) -> dict[int, float]:
        now = self._clock()
        current = {b.id for b in blocks if b.state == "going-offline"}
        with self._lock:
            for block_id in current - self._since.keys():
                self._since[block_id] = now
                self._episodes += 1
            for block_id in self._since.keys() - current:
                del self._since[block_id]
            return {b: now - t for b, t in self._since.items()}

    @property
    def episodes(self) -> int:
        with self._lock:
            return self._episodes


def _zone_label(b: MemoryBlock) -> str:
    return b.zone or "unknown"


def _node_sort(label: str) -> tuple[int, int | str]:
    return (0, int(label)) if label.isdigit() else (1, label)


def notable_reason(b: MemoryBlock, failing: frozenset[int]) -> str | None:
    if b.state == "going-offline":
        return "going-offline"
    if b.id in failing and b.state == "online":
        return "offline-failed"
    if b.zone == NONE_ZONE:
        return "unofflinable"
    return None


@dataclass
class _Rendered:
    """Everything derived from one snapshot version (and one set of failing blocks)."""

    families: list[Metric]
    going_offline: list[MemoryBlock]


class BlocksCollector(SubCollector):
    name = "blocks"
    help = (
        "memory blocks: counts and bytes by node/zone/state, lsmem-style ranges, unofflinable, hot-unpluggable; "
        "one by one only the blocks worth a look (all of them with --collector.blocks.all)"
    )
    metrics = (
        ("memhp_block_state", "gauge"),
        ("memhp_block_info", "gauge"),
        ("memhp_block_range_blocks", "gauge"),
        ("memhp_block_ranges_truncated", "gauge"),
        ("memhp_block_series_capped", "gauge"),
        ("memhp_block_series_limit", "gauge"),
        ("memhp_block_series_exported", "gauge"),
        ("memhp_blocks", "gauge"),
        ("memhp_blocks_bytes", "gauge"),
        ("memhp_blocks_unofflinable", "gauge"),
        ("memhp_hot_unpluggable_bytes", "gauge"),
        ("memhp_block_going_offline_seconds", "gauge"),
        ("memhp_going_offline_observed", "counter"),
        ("memhp_block_snapshot_mode", "gauge"),
        ("memhp_block_snapshot_age_seconds", "gauge"),
        ("memhp_block_snapshot_stale", "gauge"),
        ("memhp_block_snapshot_resyncs", "counter"),
        ("memhp_block_snapshot_uevents", "counter"),
        ("memhp_block_snapshot_uevents_ignored", "counter"),
    )

    def __init__(
        self,
        block_limit: int = DEFAULT_BLOCK_LIMIT,
        tracker: GoingOfflineTracker | None = None,
        *,
        live: LiveBlocks | None = None,
        all_blocks: bool = False,
        notable_limit: int = DEFAULT_NOTABLE_LIMIT,
        ranges_limit: int = DEFAULT_RANGES_LIMIT,
        failures: FailureCounts | None = None,
    ) -> None:
        self.block_limit = block_limit
        self.tracker = tracker or GoingOfflineTracker()
        self.live = live
        self.all_blocks = all_blocks
        self.notable_limit = notable_limit
        self.ranges_limit = ranges_limit
        self.failures = failures
        self._cache_lock = threading.Lock()
        self._cache_key: tuple[int, frozenset[int], int | None] | None = None
        self._cache: _Rendered | None = None

    @property
    def series_limit(self) -> int:
        return self.block_limit if self.all_blocks else self.notable_limit

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        if self.live is not None:
            view = self.live.view()
        else:
            view = BlockView(-1, ctx.blocks, SCRAPE, time.time())
        size = ctx.config.block_size_bytes
        failing = self._failing()
        rendered = self._rendered(view, failing, size, ctx)
        yield from rendered.families
        yield from self._going_offline(rendered.going_offline)
        yield from self._snapshot(view)

    def _failing(self) -> frozenset[int]:
        if self.failures is None:
            return frozenset()
        _, by_block, _ = self.failures.snapshot()
        return frozenset(int(b) for b, _ in by_block if b.isascii() and b.isdigit())

    def _rendered(self, view: BlockView, failing: frozenset[int], size: int | None, ctx: ScrapeContext) -> _Rendered:
        key = (view.version, failing, size)
        if view.version < 0:
            return self._render(view.blocks, failing, size, ctx.errors, ctx.paths.memory)
        # One scrape computes, concurrent ones wait for that one result (a few
        # ms by default) instead of each computing their own.
        with self._cache_lock:
            if self._cache_key != key or self._cache is None:
                self._cache = self._render(view.blocks, failing, size, ctx.errors, ctx.paths.memory)
                self._cache_key = key
            return self._cache

    def _render(
        self, blocks: list[MemoryBlock], failing: frozenset[int], size: int | None, errors: ParseErrors, memory: str
    ) -> _Rendered:
        if self.all_blocks and len(blocks) <= self.block_limit:
            one_by_one, capped = blocks, False
        else:
            notable = [(r, b) for b in blocks if (r := notable_reason(b, failing)) is not None]
            notable.sort(key=lambda rb: (NOTABLE_REASONS.index(rb[0]), rb[1].id))
            capped = len(notable) > self.notable_limit or (self.all_blocks and len(blocks) > self.block_limit)
            one_by_one = sorted((b for _, b in notable[: self.notable_limit]), key=lambda b: b.id)
        families: list[Metric] = list(self._per_block(one_by_one, errors, memory))
        families += self._ranges(blocks)
        families.append(
            GaugeMetricFamily(
                "memhp_block_series_capped",
                "1 when more blocks should be exported one by one than the limit allows; the rest are "
                "counted in memhp_blocks and memhp_block_range_blocks only.",
                value=float(capped),
            )
        )
        families.append(
            GaugeMetricFamily(
                "memhp_block_series_limit",
                "Most blocks exported one by one (--collector.blocks.notable-limit, or --collector.blocks.limit "
                "with --collector.blocks.all).",
                value=self.series_limit,
            )
        )
        families.append(
            GaugeMetricFamily(
                "memhp_block_series_exported", "Blocks exported one by one in this scrape.", value=len(one_by_one)
            )
        )
        families += self._aggregates(blocks, size)
        going = [b for b in blocks if b.state == "going-offline"]
        return _Rendered(families, going)

    def _removable(self, b: MemoryBlock, errors: ParseErrors, memory: str) -> str:
        removable = b.removable
        if removable is None:
            # The snapshot does not hold it: read it for the few blocks exported one by one.
            path = os.path.join(memory, f"memory{b.id}", "removable")
            removable = parse_bool(read_attr(path, errors, "memoryN/removable"), errors, "memoryN/removable")
        return "unknown" if removable is None else str(int(removable))

    def _per_block(self, blocks: Sequence[MemoryBlock], errors: ParseErrors, memory: str) -> Iterable[Metric]:
        state_rows: list[tuple[tuple[str, ...], float]] = []
        info_rows: list[tuple[tuple[str, ...], float]] = []
        for b in blocks:
            block, node = str(b.id), node_label(b.node)
            for s in BLOCK_STATES:
                state_rows.append(((block, node, s), 1.0 if b.state == s else 0.0))
            valid = " ".join(b.valid_zones) if b.valid_zones else "unknown"
            info_rows.append(((block, node, _zone_label(b), valid, self._removable(b, errors, memory)), 1.0))
        yield PrerenderedFamily(
            "memhp_block_state",
            "1 for the state the block is in, 0 for the others; only blocks exported one by one.",
            ("block", "node", "state"),
            state_rows,
        )
        yield PrerenderedFamily(
            "memhp_block_info",
            "Per block exported one by one: zone is the managing zone (online) or the kernel's default "
            "candidate (offline); valid_zones is the whole list; removable as the kernel says.",
            ("block", "node", "zone", "valid_zones", "removable"),
            info_rows,
        )

    def _ranges(self, blocks: list[MemoryBlock]) -> list[Metric]:
        ranges = merge_ranges(blocks)
        rows = [
            (
                (
                    str(r.first),
                    str(r.last),
                    node_label(r.node),
                    r.state or "unknown",
                    r.zone or "unknown",
                    " ".join(r.valid_zones) if r.valid_zones else "unknown",
                ),
                r.count,
            )
            for r in ranges[: self.ranges_limit]
        ]
        fam = PrerenderedFamily(
            "memhp_block_range_blocks",
            "Blocks in a run of consecutive blocks with the same state, zones and node (as lsmem merges them).",
            ("first_block", "last_block", "node", "state", "zone", "valid_zones"),
            rows,
        )
        truncated = GaugeMetricFamily(
            "memhp_block_ranges_truncated",
            "1 if there were more ranges than --collector.blocks.ranges-limit and the rest were cut.",
            value=float(len(ranges) > self.ranges_limit),
        )
        return [fam, truncated]

    def _aggregates(self, blocks: list[MemoryBlock], size: int | None) -> list[Metric]:
        # Count raw (node, zones, state) first and turn them into labels once
        # per distinct key: there are few keys and up to 100k blocks.
        raw: Counter[tuple[int | None, tuple[str, ...] | None, str | None]] = Counter(
            (b.node, b.valid_zones, b.state) for b in blocks
        )
        counts: Counter[tuple[str, str, str]] = Counter()
        unoff: Counter[str] = Counter()
        hot: Counter[str] = Counter()
        for (node, zones, state), n in raw.items():
            zone = zones[0] if zones else None
            key = (node_label(node), zone or "unknown", state or "unknown")
            counts[key] += n
            if state == "online" and zone == NONE_ZONE:
                unoff[key[0]] += n
            if is_hot_unpluggable(state, zone):
                hot[key[0]] += n
        nodes = sorted({k[0] for k in counts}, key=_node_sort)
        fam_n = GaugeMetricFamily(
            "memhp_blocks", "Memory blocks by node, zone and state.", labels=["node", "zone", "state"]
        )
        fam_b = GaugeMetricFamily(
            "memhp_blocks_bytes", "Memory in blocks by node, zone and state.", labels=["node", "zone", "state"]
        )
        for key in sorted(counts, key=lambda k: (_node_sort(k[0]), k[1], k[2])):
            fam_n.add_metric(list(key), counts[key])
            if size is not None:
                fam_b.add_metric(list(key), counts[key] * size)
        out: list[Metric] = [fam_n]
        if size is not None:
            out.append(fam_b)
        unoff_n = GaugeMetricFamily(
            "memhp_blocks_unofflinable",
            "Online blocks whose valid_zones is 'none' (mixed zones, mixed nodes or "
            "holes): the kernel cannot offline them.",
            labels=["node"],
        )
        hot_b = GaugeMetricFamily(
            "memhp_hot_unpluggable_bytes",
            "Memory in online ZONE_MOVABLE blocks: the candidates for offlining.",
            labels=["node"],
        )
        for label in nodes:
            unoff_n.add_metric([label], unoff[label])
            if size is not None:
                hot_b.add_metric([label], hot[label] * size)
        out.append(unoff_n)
        if size is not None:
            out.append(hot_b)
        return out

    def _going_offline(self, going: list[MemoryBlock]) -> Iterable[Metric]:
        ages = self.tracker.update(going)
        node_of = {b.id: b.node for b in going}
        fam = GaugeMetricFamily(
            "memhp_block_going_offline_seconds",
            "How long a block has been seen in state going-offline (from the first scrape that saw it).",
            labels=["block", "node"],
        )
        for block_id in sorted(ages)[: self.series_limit]:
            fam.add_metric([str(block_id), node_label(node_of.get(block_id))], ages[block_id])
        episodes = CounterMetricFamily(
            "memhp_going_offline_observed", "Times a block was first seen going-offline.", value=self.tracker.episodes
        )
        return [fam, episodes]

    def _snapshot(self, view: BlockView) -> Iterable[Metric]:
        mode = GaugeMetricFamily(
            "memhp_block_snapshot_mode",
            "1 for how blocks are kept current: events (a snapshot kept true by uevents) or scrape "
            "(every block read at scrape time).",
            labels=["mode"],
        )
        for m in MODES:
            mode.add_metric([m], float(view.mode == m))
        yield mode
        yield GaugeMetricFamily(
            "memhp_block_snapshot_age_seconds",
            "Seconds since every block was last read from sysfs (uevents keep the snapshot true in between); "
            "0 in scrape mode.",
            value=max(0.0, time.time() - view.synced_at) if view.mode == EVENTS else 0.0,
        )
        live = self.live
        yield GaugeMetricFamily(
            "memhp_block_snapshot_stale",
            "1 while uevents were lost (netlink overrun) and the full re-read that repairs the snapshot has not "
            "finished: scrapes get the last snapshot, memhp_block_snapshot_age_seconds old.",
            value=float(bool(live and live.stale and view.mode == EVENTS)),
        )
        resyncs = CounterMetricFamily(
            "memhp_block_snapshot_resyncs",
            "Full re-reads of every block, by reason (start, interval, overrun, restart).",
            labels=["reason"],
        )
        for reason in RESYNC_REASONS:
            resyncs.add_metric([reason], live.resyncs.get(reason, 0) if live else 0)
        yield resyncs
        yield CounterMetricFamily(
            "memhp_block_snapshot_uevents",
            "Memory block uevents applied to the snapshot.",
            value=live.events_applied if live else 0,
        )
        yield CounterMetricFamily(
            "memhp_block_snapshot_uevents_ignored",
            "Memory uevents ignored: the device name is not memoryN with N 1-10 ASCII digits.",
            value=live.events_ignored if live else 0,
        )

    def close(self) -> None:
        if self.live is not None:
            self.live.close()


def _factory(ctx: BuildContext) -> BlocksCollector:
    live = None
    if not ctx.once:
        live = LiveBlocks(
            ctx.paths,
            ctx.errors,
            mode=ctx.snapshot_mode,
            resync_interval=ctx.resync_interval,
            state_interval=ctx.state_interval,
            source=ctx.uevent_source,
        ).start()
    failures = ctx.failures() if "offline_failures" in ctx.enabled and not ctx.once else None
    return BlocksCollector(
        ctx.block_limit,
        live=live,
        all_blocks=ctx.blocks_all,
        notable_limit=ctx.notable_limit,
        ranges_limit=ctx.ranges_limit,
        failures=failures,
    )


register_collector(BlocksCollector.name, BlocksCollector.help, _factory)
