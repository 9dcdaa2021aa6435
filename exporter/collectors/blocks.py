"""Memory blocks: per block (up to a cardinality cap), lsmem-style ranges above
it, and aggregates by node, zone and state that are always there."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..kernel.accounting import is_hot_unpluggable, merge_ranges
from ..kernel.model import BLOCK_STATES, NONE_ZONE, MemoryBlock
from ..kernel.snapshot import ScrapeContext
from .base import SubCollector, node_label

# 512 GiB of 128 MiB blocks.
DEFAULT_BLOCK_LIMIT = 4096


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


def _state_label(b: MemoryBlock) -> str:
    return b.state or "unknown"


class BlocksCollector(SubCollector):
    name = "blocks"
    help = "memory blocks: per-block state/zone/node (capped), counts and bytes, unofflinable, hot-unpluggable"

    def __init__(self, block_limit: int = DEFAULT_BLOCK_LIMIT, tracker: GoingOfflineTracker | None = None) -> None:
        self.block_limit = block_limit
        self.tracker = tracker or GoingOfflineTracker()

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        blocks = ctx.blocks
        size = ctx.config.block_size_bytes
        capped = len(blocks) > self.block_limit
        if capped:
            yield from self._ranges(blocks)
        else:
            yield from self._per_block(blocks)
        yield GaugeMetricFamily(
            "memhp_block_series_capped",
            "1 when there are more blocks than --collector.blocks.limit and per-block series "
            "are replaced by memhp_block_range_blocks.",
            value=float(capped),
        )
        yield GaugeMetricFamily(
            "memhp_block_series_limit", "The --collector.blocks.limit in force.", value=self.block_limit
        )
        yield from self._aggregates(blocks, size)
        yield from self._going_offline(blocks)

    def _per_block(self, blocks: list[MemoryBlock]) -> Iterable[Metric]:
        state = GaugeMetricFamily(
            "memhp_block_state", "1 for the state the block is in, 0 for the others.", labels=["block", "node", "state"]
        )
        info = GaugeMetricFamily(
            "memhp_block_info",
            "Per block: zone is the managing zone (online) or the kernel's default "
            "candidate (offline); valid_zones is the whole list; removable as the kernel "
            "says.",
            labels=["block", "node", "zone", "valid_zones", "removable"],
        )
        for b in blocks:
            block, node = str(b.id), node_label(b.node)
            for s in BLOCK_STATES:
                state.add_metric([block, node, s], 1.0 if b.state == s else 0.0)
            removable = "unknown" if b.removable is None else str(int(b.removable))
            valid = " ".join(b.valid_zones) if b.valid_zones else "unknown"
            info.add_metric([block, node, _zone_label(b), valid, removable], 1)
        return [state, info]

    def _ranges(self, blocks: list[MemoryBlock]) -> Iterable[Metric]:
        ranges = merge_ranges(blocks)
        fam = GaugeMetricFamily(
            "memhp_block_range_blocks",
            "Blocks in a run of consecutive blocks with the same state, zones, node and "
            "removable (as lsmem merges them); only when per-block series are capped.",
            labels=["first_block", "last_block", "node", "state", "zone"],
        )
        for r in ranges[: self.block_limit]:
            fam.add_metric(
                [str(r.first), str(r.last), node_label(r.node), r.state or "unknown", r.zone or "unknown"], r.count
            )
        truncated = GaugeMetricFamily(
            "memhp_block_ranges_truncated",
            "1 if even the merged ranges exceeded the limit and were cut.",
            value=float(len(ranges) > self.block_limit),
        )
        return [fam, truncated]

    def _aggregates(self, blocks: list[MemoryBlock], size: int | None) -> Iterable[Metric]:
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
        out = [fam_n] + ([fam_b] if size is not None else [])
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

    def _going_offline(self, blocks: list[MemoryBlock]) -> Iterable[Metric]:
        ages = self.tracker.update(blocks)
        node_of = {b.id: b.node for b in blocks if b.id in ages}
        fam = GaugeMetricFamily(
            "memhp_block_going_offline_seconds",
            "How long a block has been seen in state going-offline (from the first scrape that saw it).",
            labels=["block", "node"],
        )
        for block_id in sorted(ages)[: self.block_limit]:
            fam.add_metric([str(block_id), node_label(node_of.get(block_id))], ages[block_id])
        episodes = CounterMetricFamily(
            "memhp_going_offline_observed", "Times a block was first seen going-offline.", value=self.tracker.episodes
        )
        return [fam, episodes]


def _node_sort(label: str) -> tuple[int, int | str]:
    return (0, int(label)) if label.isdigit() else (1, label)
