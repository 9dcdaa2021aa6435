"""Issue 21 §3 and §6 on trees captured from Debian's kernel: boot DMA memory
is not worth a look, a block's failing flag ends when it goes offline, and
failed onlines are counted.  The same against the live kernel:
tests/vm/test_kernel_truths_vm.py."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from memhp.exporter.collectors import BlocksCollector, MemhpCollector
from memhp.exporter.collectors.events import OfflineFailuresCollector
from memhp.exporter.events.kmsg import (
    FailureCounts,
    KmsgWatcher,
    OfflineFailure,
    OnlineFailure,
    parse_online_failure,
)
from memhp.exporter.kernel.paths import Paths
from tests.helpers.trees import FIXTURES, unpack, write
from tests.helpers.wait import wait_until

SIZE = 128 << 20
ONLINE_LINE = "online_pages [mem 0x0000000148000000-0x000000014fffffff] failed"


def registry(root, *collectors) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(MemhpCollector(Paths(str(root / "sys"), str(root / "proc")), list(collectors)))
    return reg


def one_by_one(reg: CollectorRegistry) -> list[int]:
    return sorted(int(s.labels["block"]) for fam in reg.collect() for s in fam.samples if s.name == "memhp_block_info")


def unofflinable(reg: CollectorRegistry, node: str, reason: str) -> float | None:
    return reg.get_sample_value("memhp_blocks_unofflinable", {"node": node, "reason": reason})


def test_boot_dma_block_is_counted_but_not_worth_a_look(tmp_path):
    """Block 0 (DMA, DMA32 and holes: valid_zones none) of a healthy guest."""
    root = unpack(FIXTURES / "two-node-dimm-offline.tar.gz", tmp_path / "root")
    assert (root / "sys/devices/system/memory/memory0/valid_zones").read_text() == "none\n"
    reg = registry(root, BlocksCollector())
    assert unofflinable(reg, "0", "boot_dma") == 1
    assert unofflinable(reg, "0", "other") == 0
    assert unofflinable(reg, "1", "other") == 0
    assert one_by_one(reg) == []


def test_a_block_reaching_into_movable_is_still_worth_a_look(tmp_path):
    """movablecore=300M: block 5 spans DMA32 and Movable, so part of the
    memory meant to be hot-unpluggable never can be."""
    root = unpack(FIXTURES / "movablecore-mixed.tar.gz", tmp_path / "root")
    reg = registry(root, BlocksCollector())
    assert unofflinable(reg, "0", "boot_dma") == 1
    assert unofflinable(reg, "0", "other") == 1
    assert one_by_one(reg) == [5]


def test_without_zoneinfo_nothing_is_called_boot_memory(tmp_path):
    root = unpack(FIXTURES / "two-node-dimm-offline.tar.gz", tmp_path / "root")
    (root / "proc/zoneinfo").unlink()
    reg = registry(root, BlocksCollector())
    assert unofflinable(reg, "0", "other") == 1
    assert one_by_one(reg) == [0]


def _fail_offline(counts: FailureCounts, block: int) -> None:
    counts.add(OfflineFailure(block * SIZE, (block + 1) * SIZE - 1, "notifier failure"), SIZE, 0.0)


def test_failing_flag_clears_when_the_block_goes_offline_and_counters_keep_counting(tmp_path):
    root = unpack(FIXTURES / "memmap-on-memory-partial.tar.gz", tmp_path / "root")
    state = root / "sys/devices/system/memory/memory32/state"
    assert state.read_text() == "online\n"
    counts = FailureCounts(100)
    reg = registry(root, BlocksCollector(failures=counts))
    _fail_offline(counts, 32)
    assert one_by_one(reg) == [32]
    # offlined, then onlined again: the earlier failure is history
    write(state, "offline\n")
    assert one_by_one(reg) == []
    write(state, "online\n")
    assert one_by_one(reg) == []
    assert counts.snapshot()[1] == {("32", "notifier failure"): 1}
    # a new failure flags it again
    _fail_offline(counts, 32)
    assert one_by_one(reg) == [32]
    assert counts.snapshot()[1] == {("32", "notifier failure"): 2}


def test_offline_uevent_clears_the_flag_between_scrapes(tmp_path):
    """Offline and online again between two scrapes: only the uevent saw it."""
    root = unpack(FIXTURES / "memmap-on-memory-partial.tar.gz", tmp_path / "root")
    counts = FailureCounts(100)
    reg = registry(root, BlocksCollector(failures=counts))
    _fail_offline(counts, 32)
    assert one_by_one(reg) == [32]
    counts.offlined(32)  # what LiveBlocks calls on memory32's "offline" uevent
    assert one_by_one(reg) == []


def test_online_failure_lines_are_parsed():
    f = parse_online_failure("6,812,5123456,-;" + ONLINE_LINE)
    assert (f.start, f.end) == (0x148000000, 0x14FFFFFFF)
    assert list(f.blocks(SIZE)) == [41]
    assert parse_online_failure("[   12.3] " + ONLINE_LINE) == f
    assert parse_online_failure("online_pages [mem 0x2-0x1] failed") is None
    assert parse_online_failure("memory offlining [mem 0x0-0x1] failed due to x") is None


def test_online_failures_are_counted_from_the_log(tmp_path):
    log = tmp_path / "kmsg"
    log.write_text("")
    counts = FailureCounts(block_limit=1)
    w = KmsgWatcher(str(log), counts, lambda: SIZE, poll_interval=0.05)
    reg = registry(tmp_path, OfflineFailuresCollector(w, counts))
    # born at 0: the first failure is an increase
    assert reg.get_sample_value("memhp_online_failures_total") == 0
    assert reg.get_sample_value("memhp_online_failure_last_timestamp_seconds") is None
    w.start()
    try:
        wait_until(lambda: w.up, 10, desc="the watcher to follow the log")
        with open(log, "a") as f:
            f.write(
                ONLINE_LINE
                + "\n"
                + ONLINE_LINE.replace("0x0000000148", "0x0000000150").replace("0x000000014f", "0x0000000157")
                + "\n"
            )
        wait_until(lambda: counts.online_snapshot()[0] == 2, 10, desc="two online failures")
    finally:
        w.stop()
    assert reg.get_sample_value("memhp_online_failures_total") == 2
    # block 41, then block 42 past the limit of one block
    assert reg.get_sample_value("memhp_block_online_failures_total", {"block": "41"}) == 1
    assert reg.get_sample_value("memhp_block_online_failures_total", {"block": "other"}) == 1
    assert reg.get_sample_value("memhp_online_failure_last_timestamp_seconds") > 0
    # an online failure is not an offline failure, and flags nothing
    assert sum(counts.snapshot()[0].values()) == 0
    assert counts.failing() == frozenset()


def test_online_failure_counts_are_bounded():
    counts = FailureCounts(block_limit=2)
    for block in range(10):
        counts.add_online(OnlineFailure(block * SIZE, (block + 1) * SIZE - 1), SIZE, 0.0)
    total, by_block, _ = counts.online_snapshot()
    assert total == 10
    assert by_block == {"0": 1, "1": 1, "other": 8}
