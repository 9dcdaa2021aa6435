"""Collectors on captured trees, including trees broken on purpose."""

import os
import threading

from prometheus_client import CollectorRegistry

from memhp.exporter.collectors import BlocksCollector, MemhpCollector, SubCollector
from memhp.exporter.collectors.blocks import BLOCK_LIMIT, BLOCKS_ALL, GoingOfflineTracker
from memhp.exporter.kernel.fsread import ParseErrors
from memhp.exporter.kernel.paths import Paths
from memhp.exporter.kernel.snapshot import read_snapshot
from tests.helpers.exporter import registry_for
from tests.helpers.trees import block_dirs, remove_block, write


def test_counts_match_the_tree(host_archive_root):
    reg = registry_for(host_archive_root)
    snap = read_snapshot(Paths(str(host_archive_root / "sys"), str(host_archive_root / "proc")))
    online = [b for b in snap.blocks if b.state == "online"]
    total = sum(
        reg.get_sample_value("memhp_blocks", {"node": str(b.node), "zone": z, "state": "online"}) or 0
        for z in {b.zone for b in online}
        for b in online[:1]
    )
    by_zone = {}
    for b in online:
        by_zone[(str(b.node), b.zone)] = by_zone.get((str(b.node), b.zone), 0) + 1
    for (node, zone), n in by_zone.items():
        assert reg.get_sample_value("memhp_blocks", {"node": node, "zone": zone, "state": "online"}) == n
    assert total >= 1
    size = snap.config.block_size_bytes
    assert reg.get_sample_value("memhp_block_size_bytes") == size
    b0 = snap.blocks[0]
    b0_state = {"block": str(b0.id), "node": str(b0.node), "state": b0.state}
    every = registry_for(host_archive_root, flags={BLOCKS_ALL: True})
    assert every.get_sample_value("memhp_block_state", b0_state) == 1
    if b0.zone == "none":  # x86: DMA, DMA32 and holes, boot memory; counted, but not worth a look
        assert reg.get_sample_value("memhp_blocks_unofflinable", {"node": str(b0.node), "reason": "boot_dma"}) >= 1
        assert reg.get_sample_value("memhp_block_state", b0_state) is None
    assert reg.get_sample_value("memhp_collector_success", {"collector": "blocks"}) == 1


def test_every_block_is_opt_in_and_capped(host_archive_root):
    n = len(block_dirs(host_archive_root))
    reg = registry_for(host_archive_root, flags={BLOCKS_ALL: True, BLOCK_LIMIT: n - 1})
    assert reg.get_sample_value("memhp_block_series_capped") == 1
    samples = [s for m in reg.collect() for s in m.samples]
    # past the limit only the blocks worth a look remain one by one (on a healthy host: none of
    # them, boot DMA memory is not worth a look)
    per_block = {s.labels["block"] for s in samples if s.name == "memhp_block_state"}
    assert len(per_block) < n
    assert all(s.labels["zone"] == "none" for s in samples if s.name == "memhp_block_info")
    # ranges are there at every size: no cliff
    ranges = [s for s in samples if s.name == "memhp_block_range_blocks"]
    assert ranges and sum(s.value for s in ranges) == n
    reg = registry_for(host_archive_root, flags={BLOCKS_ALL: True, BLOCK_LIMIT: n})
    assert reg.get_sample_value("memhp_block_series_capped") == 0
    assert reg.get_sample_value("memhp_block_series_exported") == n


def test_garbage_values_are_counted_and_skipped(host_tree):
    blocks = block_dirs(host_tree)
    write(blocks[0] / "state", b"\xff\xfe\x00garbage")
    write(blocks[1] / "valid_zones", "")
    write(blocks[2] / "removable", "x" * 10000)
    os.chmod(blocks[3] / "state", 0)  # root still reads it: make it a directory instead
    os.unlink(blocks[3] / "state")
    os.mkdir(blocks[3] / "state")
    write(host_tree / "sys/devices/system/memory/block_size_bytes", "zz\n")
    write(host_tree / "proc/zoneinfo", "Node 0, zone Normal\n  pages free xyz\n")
    # every block one by one: ``removable`` is read only for blocks exported so
    reg = registry_for(host_tree, flags={BLOCKS_ALL: True})
    for kind in (
        "memoryN/state",
        "memoryN/valid_zones",
        "memoryN/removable",
        "memory/block_size_bytes",
        "proc/zoneinfo",
    ):
        assert reg.get_sample_value("memhp_parse_errors_total", {"file": kind}) >= 1, kind
    for c in ("config", "blocks", "zones", "meminfo"):
        assert reg.get_sample_value("memhp_collector_success", {"collector": c}) == 1
    # Unknown values never become 0: no block size means no bytes metrics at all.
    assert reg.get_sample_value("memhp_block_size_bytes") is None
    unknown = [
        s for m in reg.collect() for s in m.samples if s.name == "memhp_blocks" and s.labels["state"] == "unknown"
    ]
    assert sum(s.value for s in unknown) == 2  # block 0 (garbage) and block 3 (unreadable)
    assert reg.get_sample_value("memhp_blocks", {"node": "0", "zone": "unknown", "state": "online"}) == 1


def test_vanished_blocks_are_skipped_not_errors(host_tree):
    blocks = block_dirs(host_tree)
    paths = Paths(str(host_tree / "sys"), str(host_tree / "proc"))
    remove_block(host_tree, blocks[-1])
    errors = ParseErrors()
    snap = read_snapshot(paths, errors)
    assert [b.id for b in snap.blocks] == [int(p.name[6:]) for p in blocks[:-1]]
    assert errors.counts() == {}


def test_block_removed_between_listdir_and_read(host_tree, monkeypatch):
    """Hot-remove races: the block disappears after the directory was listed."""
    from memhp.exporter.kernel import memory_blocks

    victim = block_dirs(host_tree)[5]
    real = memory_blocks.list_block_ids

    def list_then_remove(memory_dir, errors):
        ids = real(memory_dir, errors)
        remove_block(host_tree, victim)
        return ids

    monkeypatch.setattr(memory_blocks, "list_block_ids", list_then_remove)
    errors = ParseErrors()
    snap = read_snapshot(Paths(str(host_tree / "sys"), str(host_tree / "proc")), errors)
    assert int(victim.name[6:]) not in [b.id for b in snap.blocks]
    assert errors.counts() == {}


def test_one_failing_collector_does_not_break_the_scrape(host_archive_root):
    class Broken(SubCollector):
        name = "broken"

        def collect(self, ctx):
            yield from ()
            raise RuntimeError("boom")

    paths = Paths(str(host_archive_root / "sys"), str(host_archive_root / "proc"))
    reg = CollectorRegistry(auto_describe=False)
    reg.register(MemhpCollector(paths, [Broken(), BlocksCollector()]))
    assert reg.get_sample_value("memhp_collector_success", {"collector": "broken"}) == 0
    assert reg.get_sample_value("memhp_collector_success", {"collector": "blocks"}) == 1
    assert reg.get_sample_value("memhp_block_size_bytes") is None  # config collector not registered


def test_going_offline_age_and_episodes():
    from memhp.exporter.kernel.model import MemoryBlock

    now = [100.0]
    t = GoingOfflineTracker(clock=lambda: now[0])
    going = [MemoryBlock(7, "going-offline"), MemoryBlock(8, "online")]
    assert t.update(going) == {7: 0.0}
    now[0] = 130.0
    assert t.update(going) == {7: 30.0}
    assert t.update([MemoryBlock(7, "offline")]) == {}
    now[0] = 140.0
    assert t.update(going) == {7: 0.0}
    assert t.episodes == 2


def test_disabled_collectors_emit_nothing(host_archive_root):
    reg = registry_for(host_archive_root, collectors=frozenset({"meminfo"}))
    names = {m.name for m in reg.collect()}
    assert "memhp_memory_available_bytes" in names
    assert not any(n.startswith(("memhp_block", "memhp_zone")) for n in names)


def test_scrapes_while_blocks_are_removed_never_fail(host_tree):
    reg = registry_for(host_tree)
    blocks = block_dirs(host_tree)[10:]
    stop = threading.Event()

    def remover():
        for b in blocks:
            if stop.is_set():
                return
            remove_block(host_tree, b)

    th = threading.Thread(target=remover)
    th.start()
    scrapes = 0
    try:
        while th.is_alive() or scrapes < 3:
            assert reg.get_sample_value("memhp_collector_success", {"collector": "blocks"}) == 1
            scrapes += 1
            if scrapes > 200:
                break
    finally:
        stop.set()
        th.join()
    assert reg.get_sample_value("memhp_parse_errors_total", {"file": "memoryN/state"}) is None
