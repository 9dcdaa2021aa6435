"""Memory blocks within a series budget.

Always: counts and bytes by node, zone and state, and lsmem-style ranges (runs
of consecutive blocks that look the same), so a healthy host of any size costs
about as many series as a small one.  One by one, by default, only the blocks
worth a look (going-offline, failing to offline, ``valid_zones`` none outside
boot DMA memory), up to
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
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import Metric

from ..events.kmsg import FailureCounts
from ..events.live_blocks import (
    DEFAULT_RESYNC_INTERVAL,
    DEFAULT_STATE_INTERVAL,
    EVENTS,
    MODES,
    RESYNC_REASONS,
    SCRAPE,
    BlockView,
    LiveBlocks,
)
from ..kernel.accounting import is_hot_unpluggable, merge_ranges
from ..kernel.fsread import ParseErrors, parse_bool, read_attr
from ..kernel.model import BLOCK_STATES, NONE_ZONE, MemoryBlock
from ..kernel.snapshot import ScrapeContext
from ..kernel.sources import SYSFS_MEMORY
from ..kernel.zones import Span, is_boot_dma, zone_spans
from .base import SubCollector, node_label
from .family import Family
from .registry import BuildContext, Flag, register_collector

_COUNT_BOUNDS = (0, 1_000_000)
_SECONDS_BOUNDS = (0.1, 86400)

BLOCKS_ALL = Flag(
    "blocks.all",
    False,
    "Export every block one by one (4 series per block: 16k series at 4,096 blocks), up to "
    "--collector.blocks.limit blocks; by default only the blocks worth a look are.",
)
BLOCK_LIMIT = Flag(
    "blocks.limit",
    4096,  # with --collector.blocks.all: 512 GiB of 128 MiB blocks
    "With --collector.blocks.all: most blocks exported one by one (above it, only the blocks worth a "
    "look). Also bounds the blocks counted one by one in memhp_block_offline_failures_total and "
    "memhp_block_online_failures_total.",
    bounds=_COUNT_BOUNDS,
)
NOTABLE_LIMIT = Flag(
    "blocks.notable-limit",
    32,
    "Most blocks worth a look (going-offline, failing to offline, valid_zones none outside boot DMA memory) "
    "exported one by one.",
    bounds=_COUNT_BOUNDS,
)
RANGES_LIMIT = Flag(
    "blocks.ranges-limit",
    256,
    "Most lsmem-style ranges exported (memhp_block_range_blocks); the rest are cut.",
    bounds=_COUNT_BOUNDS,
)
SNAPSHOT = Flag(
    "blocks.snapshot",
    "auto",
    "How blocks are kept current: a snapshot kept true by uevents (events), every block read at "
    "scrape time (scrape), or events where uevents can be received and scrape elsewhere (auto).",
    choices=("auto", *MODES),
)
RESYNC_INTERVAL = Flag(
    "blocks.resync-interval",
    DEFAULT_RESYNC_INTERVAL,
    "Time between full re-reads of every block in events mode.",
    bounds=_SECONDS_BOUNDS,
    duration=True,
)
STATE_INTERVAL = Flag(
    "blocks.state-interval",
    DEFAULT_STATE_INTERVAL,
    "Time between reads of every block's state in events mode (going-offline and failed "
    "offlines send no uevent): a block stuck going-offline shows up within this time.",
    bounds=_SECONDS_BOUNDS,
    duration=True,
)
FLAGS = (BLOCKS_ALL, BLOCK_LIMIT, NOTABLE_LIMIT, RANGES_LIMIT, SNAPSHOT, RESYNC_INTERVAL, STATE_INTERVAL)

_NODE_ZONE_STATE = ("node", "zone", "state")
STATE = Family(
    "memhp_block_state",
    "gauge",
    "1 for the state the block is in, 0 for the others; only blocks exported one by one.",
    ("block", "node", "state"),
)
INFO = Family(
    "memhp_block_info",
    "gauge",
    "Per block exported one by one: zone is the managing zone (online) or the kernel's default "
    "candidate (offline); valid_zones is the whole list; removable as the kernel says.",
    ("block", "node", "zone", "valid_zones", "removable"),
    doc="Always 1. `zone`: the managing zone of an online block (`none` if it spans zones or nodes), or the zone "
    "the kernel would choose for an offline one; `valid_zones`: the whole list; `removable`: the kernel's "
    "`removable` (1 iff it supports offlining). Only blocks exported one by one.",
)
RANGE_BLOCKS = Family(
    "memhp_block_range_blocks",
    "gauge",
    "Blocks in a run of consecutive blocks with the same state, zones and node (as lsmem merges them).",
    ("first_block", "last_block", "node", "state", "zone", "valid_zones"),
    doc="Blocks in a run of consecutive blocks that share state, `valid_zones` and node, as `lsmem` merges them. "
    "Always, up to `--collector.blocks.ranges-limit` (default 256) ranges.",
)
RANGES_TRUNCATED = Family(
    "memhp_block_ranges_truncated",
    "gauge",
    "1 if there were more ranges than --collector.blocks.ranges-limit and the rest were cut.",
    doc="1 if there were more ranges than the limit and the rest were cut (the counts in `memhp_blocks` stay exact).",
)
SERIES_CAPPED = Family(
    "memhp_block_series_capped",
    "gauge",
    "1 when more blocks should be exported one by one than the limit allows; the rest are "
    "counted in memhp_blocks and memhp_block_range_blocks only.",
)
SERIES_LIMIT = Family(
    "memhp_block_series_limit",
    "gauge",
    "Most blocks exported one by one (--collector.blocks.notable-limit, or --collector.blocks.limit "
    "with --collector.blocks.all).",
)
SERIES_EXPORTED = Family("memhp_block_series_exported", "gauge", "Blocks exported one by one in this scrape.")
BLOCKS = Family(
    "memhp_blocks",
    "gauge",
    "Memory blocks by node, zone and state.",
    _NODE_ZONE_STATE,
    doc="Block counts. Always present.",
)
BLOCKS_BYTES = Family("memhp_blocks_bytes", "gauge", "Memory in blocks by node, zone and state.", _NODE_ZONE_STATE)
# Why an online block is "none": boot memory in ZONE_DMA/ZONE_DMA32 (normal on
# every x86 host), or anything else (worth a look).
BOOT_DMA = "boot_dma"
UNOFFLINABLE_OTHER = "other"
UNOFFLINABLE_REASONS = (BOOT_DMA, UNOFFLINABLE_OTHER)
_NONE_ZONES = (NONE_ZONE,)
UNOFFLINABLE = Family(
    "memhp_blocks_unofflinable",
    "gauge",
    "Online blocks whose valid_zones is 'none': the kernel cannot offline them. reason: boot_dma (boot memory in "
    "ZONE_DMA/ZONE_DMA32 only, normal) or other (worth a look).",
    ("node", "reason"),
    doc="Online blocks whose `valid_zones` is `none` (the block spans zones or nodes, or has holes): the kernel "
    'cannot offline them. `reason="boot_dma"`: the block overlaps the span of ZONE_DMA or ZONE_DMA32 in '
    "`/proc/zoneinfo`, boot memory the kernel never offlines (x86's first block on every healthy host); "
    '`reason="other"`: any other block (for example one across the ZONE_NORMAL/ZONE_MOVABLE boundary), the one '
    "alerts, the report and the blocks worth a look consider. Both reasons for every node, 0 included.",
)
HOT_UNPLUGGABLE = Family(
    "memhp_hot_unpluggable_bytes",
    "gauge",
    "Memory in online ZONE_MOVABLE blocks: the candidates for offlining.",
    ("node",),
)
GOING_OFFLINE = Family(
    "memhp_block_going_offline_seconds",
    "gauge",
    "How long a block has been seen in state going-offline (from the first scrape that saw it).",
    ("block", "node"),
    doc="How long a block has been seen `going-offline`, from the first scrape that saw it. Present only while "
    "it is (up to the limit in force).",
)
GOING_OFFLINE_OBSERVED = Family(
    "memhp_going_offline_observed", "counter", "Times a block was first seen going-offline."
)
SNAPSHOT_MODE = Family(
    "memhp_block_snapshot_mode",
    "gauge",
    "1 for how blocks are kept current: events (a snapshot kept true by uevents) or scrape "
    "(every block read at scrape time).",
    ("mode",),
    doc="1 for the mode in force, 0 for the other: `events` (a snapshot read once and kept true by uevents) or "
    "`scrape` (every block read at scrape time: `--once`, `--collector.blocks.snapshot=scrape`, or where uevents "
    "cannot be received, see [exporter.md](exporter.md#block-snapshot)).",
)
SNAPSHOT_AGE = Family(
    "memhp_block_snapshot_age_seconds",
    "gauge",
    "Seconds since every block was last read from sysfs (uevents keep the snapshot true in between); 0 in scrape mode.",
    doc="Seconds since every block was last read from sysfs (uevents keep the snapshot true in between; "
    "`--collector.blocks.resync-interval` bounds it). 0 in scrape mode.",
)
SNAPSHOT_STALE = Family(
    "memhp_block_snapshot_stale",
    "gauge",
    "1 while uevents were lost (netlink overrun) and the full re-read that repairs the snapshot has not "
    "finished: scrapes get the last snapshot, memhp_block_snapshot_age_seconds old.",
    doc="1 while uevents were lost (a netlink overrun, ENOBUFS) and the full re-read that repairs the snapshot, "
    "run in the background, has not finished. Scrapes meanwhile get the last snapshot plus the events since; "
    "`memhp_block_snapshot_age_seconds` says how old its last full read is. 0 in scrape mode.",
)
SNAPSHOT_RESYNCS = Family(
    "memhp_block_snapshot_resyncs",
    "counter",
    "Full re-reads of every block, by reason (start, interval, overrun, restart).",
    ("reason",),
    doc="Full re-reads of every block: `start`, `interval`, `overrun` (the netlink socket overflowed: ENOBUFS), "
    "`restart` (the monitor failed and was restarted).",
)
SNAPSHOT_UEVENTS = Family("memhp_block_snapshot_uevents", "counter", "Memory block uevents applied to the snapshot.")
SNAPSHOT_IGNORED = Family(
    "memhp_block_snapshot_uevents_ignored",
    "counter",
    "Memory uevents ignored: the device name is not memoryN with N 1-10 ASCII digits.",
    doc="Memory uevents ignored because the device name is not `memoryN` with N 1-10 ASCII digits (the kernel "
    "names its memory devices `memoryN`: a count here means something else sent it).",
)

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


def notable_reason(b: MemoryBlock, failing: frozenset[int], boot_dma: frozenset[int] = frozenset()) -> str | None:
    """Why the block is worth a look, or None.  Boot DMA memory is not: every
    x86 host has such a block, and the kernel never offlines it."""
    if b.state == "going-offline":
        return "going-offline"
    if b.id in failing and b.state == "online":
        return "offline-failed"
    if b.zone == NONE_ZONE and b.id not in boot_dma:
        return "unofflinable"
    return None


def unofflinable_reasons(
    blocks: Iterable[MemoryBlock], size: int | None, spans: tuple[Span, ...]
) -> list[tuple[MemoryBlock, str]]:
    """Every online ``none`` block with its reason (boot_dma or other).  Without
    the block size or zoneinfo nothing is called boot DMA memory."""
    out = []
    # valid_zones first, and compared whole: this runs over every block at each new snapshot
    for b in (b for b in blocks if b.valid_zones == _NONE_ZONES and b.state == "online"):
        boot = size is not None and is_boot_dma(b.start(size), b.start(size) + size, spans)
        out.append((b, BOOT_DMA if boot else UNOFFLINABLE_OTHER))
    return out


@dataclass
class _Rendered:
    """Everything derived from one snapshot version (and one set of failing blocks)."""

    families: list[Metric]
    going_offline: list[MemoryBlock]


class BlocksCollector(SubCollector):
    name = "blocks"
    sources = (SYSFS_MEMORY,)
    help = (
        "memory blocks: counts and bytes by node/zone/state, lsmem-style ranges, unofflinable, hot-unpluggable; "
        "one by one only the blocks worth a look (all of them with --collector.blocks.all)"
    )
    families = (
        STATE,
        INFO,
        RANGE_BLOCKS,
        RANGES_TRUNCATED,
        SERIES_CAPPED,
        SERIES_LIMIT,
        SERIES_EXPORTED,
        BLOCKS,
        BLOCKS_BYTES,
        UNOFFLINABLE,
        HOT_UNPLUGGABLE,
        GOING_OFFLINE,
        GOING_OFFLINE_OBSERVED,
        SNAPSHOT_MODE,
        SNAPSHOT_AGE,
        SNAPSHOT_STALE,
        SNAPSHOT_RESYNCS,
        SNAPSHOT_UEVENTS,
        SNAPSHOT_IGNORED,
    )

    def __init__(
        self,
        block_limit: int = BLOCK_LIMIT.default,
        tracker: GoingOfflineTracker | None = None,
        *,
        live: LiveBlocks | None = None,
        all_blocks: bool = BLOCKS_ALL.default,
        notable_limit: int = NOTABLE_LIMIT.default,
        ranges_limit: int = RANGES_LIMIT.default,
        failures: FailureCounts | None = None,
    ) -> None:
        self.block_limit = block_limit
        self.tracker = tracker or GoingOfflineTracker()
        self.live = live
        self.all_blocks = all_blocks
        # Every block one by one: the scrape reads ``removable`` with the rest.
        self.removable_limit = block_limit if all_blocks else 0
        self.notable_limit = notable_limit
        self.ranges_limit = ranges_limit
        self.failures = failures
        self._cache_lock = threading.Lock()
        self._cache_key: tuple[int, frozenset[int], int | None, tuple[Span, ...]] | None = None
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
        failing = self._failing(view.blocks)
        rendered = self._rendered(view, failing, size, ctx)
        yield from rendered.families
        yield from self._going_offline(rendered.going_offline)
        yield from self._snapshot(view)

    def _failing(self, blocks: list[MemoryBlock]) -> frozenset[int]:
        """Blocks with an offline failure since they last went offline.  The
        offline uevent clears them in events mode; a block seen offline here
        too (scrape mode, or a uevent lost to an overrun)."""
        if self.failures is None:
            return frozenset()
        failing = self.failures.failing()
        for block_id in failing:
            i = bisect_left(blocks, block_id, key=lambda b: b.id)
            if i < len(blocks) and blocks[i].id == block_id and blocks[i].state == "offline":
                self.failures.offlined(block_id)
        return self.failures.failing() if failing else failing

    def _rendered(self, view: BlockView, failing: frozenset[int], size: int | None, ctx: ScrapeContext) -> _Rendered:
        # Zone spans only move when blocks go online or offline, which changes the version too.
        spans = zone_spans(ctx.zoneinfo)
        key = (view.version, failing, size, spans)
        if view.version < 0:
            return self._render(view.blocks, failing, size, spans, ctx)
        # One scrape computes, concurrent ones wait for that one result (a few
        # ms by default) instead of each computing their own.
        with self._cache_lock:
            if self._cache_key != key or self._cache is None:
                self._cache = self._render(view.blocks, failing, size, spans, ctx)
                self._cache_key = key
            return self._cache

    def _render(
        self,
        blocks: list[MemoryBlock],
        failing: frozenset[int],
        size: int | None,
        spans: tuple[Span, ...],
        ctx: ScrapeContext,
    ) -> _Rendered:
        errors, memory = ctx.errors, ctx.paths.memory
        unoff = unofflinable_reasons(blocks, size, spans)
        boot = frozenset(b.id for b, r in unoff if r == BOOT_DMA)
        if self.all_blocks and len(blocks) <= self.block_limit:
            one_by_one, capped = blocks, False
        else:
            notable = [(r, b) for b in blocks if (r := notable_reason(b, failing, boot)) is not None]
            notable.sort(key=lambda rb: (NOTABLE_REASONS.index(rb[0]), rb[1].id))
            capped = len(notable) > self.notable_limit or (self.all_blocks and len(blocks) > self.block_limit)
            one_by_one = sorted((b for _, b in notable[: self.notable_limit]), key=lambda b: b.id)
        families: list[Metric] = list(self._per_block(one_by_one, errors, memory))
        families += self._ranges(blocks)
        families.append(SERIES_CAPPED.value(float(capped)))
        families.append(SERIES_LIMIT.value(self.series_limit))
        families.append(SERIES_EXPORTED.value(len(one_by_one)))
        families += self._aggregates(blocks, size, unoff)
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
        yield STATE.prerendered(state_rows)
        yield INFO.prerendered(info_rows)

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
        return [RANGE_BLOCKS.prerendered(rows), RANGES_TRUNCATED.value(float(len(ranges) > self.ranges_limit))]

    def _aggregates(
        self, blocks: list[MemoryBlock], size: int | None, unoff_reasons: list[tuple[MemoryBlock, str]]
    ) -> list[Metric]:
        # Count raw (node, zones, state) first and turn them into labels once
        # per distinct key: there are few keys and up to 100k blocks.
        raw: Counter[tuple[int | None, tuple[str, ...] | None, str | None]] = Counter(
            (b.node, b.valid_zones, b.state) for b in blocks
        )
        counts: Counter[tuple[str, str, str]] = Counter()
        hot: Counter[str] = Counter()
        for (node, zones, state), n in raw.items():
            zone = zones[0] if zones else None
            key = (node_label(node), zone or "unknown", state or "unknown")
            counts[key] += n
            if is_hot_unpluggable(state, zone):
                hot[key[0]] += n
        nodes = sorted({k[0] for k in counts}, key=_node_sort)
        fam_n, fam_b = BLOCKS.new(), BLOCKS_BYTES.new()
        for key in sorted(counts, key=lambda k: (_node_sort(k[0]), k[1], k[2])):
            fam_n.add_metric(list(key), counts[key])
            if size is not None:
                fam_b.add_metric(list(key), counts[key] * size)
        out: list[Metric] = [fam_n]
        if size is not None:
            out.append(fam_b)
        unoff = Counter((node_label(b.node), reason) for b, reason in unoff_reasons)
        unoff_n, hot_b = UNOFFLINABLE.new(), HOT_UNPLUGGABLE.new()
        for label in nodes:
            for reason in UNOFFLINABLE_REASONS:
                unoff_n.add_metric([label, reason], unoff[label, reason])
            if size is not None:
                hot_b.add_metric([label], hot[label] * size)
        out.append(unoff_n)
        if size is not None:
            out.append(hot_b)
        return out

    def _going_offline(self, going: list[MemoryBlock]) -> Iterable[Metric]:
        ages = self.tracker.update(going)
        node_of = {b.id: b.node for b in going}
        fam = GOING_OFFLINE.new()
        for block_id in sorted(ages)[: self.series_limit]:
            fam.add_metric([str(block_id), node_label(node_of.get(block_id))], ages[block_id])
        return [fam, GOING_OFFLINE_OBSERVED.value(self.tracker.episodes)]

    def _snapshot(self, view: BlockView) -> Iterable[Metric]:
        mode = SNAPSHOT_MODE.new()
        for m in MODES:
            mode.add_metric([m], float(view.mode == m))
        yield mode
        yield SNAPSHOT_AGE.value(max(0.0, time.time() - view.synced_at) if view.mode == EVENTS else 0.0)
        live = self.live
        yield SNAPSHOT_STALE.value(float(bool(live and live.stale and view.mode == EVENTS)))
        resyncs = SNAPSHOT_RESYNCS.new()
        for reason in RESYNC_REASONS:
            resyncs.add_metric([reason], live.resyncs.get(reason, 0) if live else 0)
        yield resyncs
        yield SNAPSHOT_UEVENTS.value(live.events_applied if live else 0)
        yield SNAPSHOT_IGNORED.value(live.events_ignored if live else 0)

    def close(self) -> None:
        if self.live is not None:
            self.live.close()


def _factory(ctx: BuildContext) -> BlocksCollector:
    # Not at the top: importing .events there would register its collectors
    # before this one (registration order is exposition order).
    from .events import UEVENT_SOURCE

    failures = ctx.failures() if "offline_failures" in ctx.enabled and not ctx.once else None
    live = None
    if not ctx.once:
        live = LiveBlocks(
            ctx.paths,
            ctx.errors,
            mode=ctx.value(SNAPSHOT),
            resync_interval=ctx.value(RESYNC_INTERVAL),
            state_interval=ctx.value(STATE_INTERVAL),
            source=ctx.value(UEVENT_SOURCE),
            on_offline=failures.offlined if failures is not None else None,
        ).start()
    return BlocksCollector(
        ctx.value(BLOCK_LIMIT),
        live=live,
        all_blocks=ctx.value(BLOCKS_ALL),
        notable_limit=ctx.value(NOTABLE_LIMIT),
        ranges_limit=ctx.value(RANGES_LIMIT),
        failures=failures,
    )


register_collector(BlocksCollector, _factory, flags=FLAGS)
