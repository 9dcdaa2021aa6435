"""The blocks collector's series budget: ranges always, one by one only the
blocks worth a look (most urgent first, within the limit), every block only
when asked for."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from memhp.exporter.collectors import BlocksCollector, MemhpCollector
from memhp.exporter.events.kmsg import FailureCounts, OfflineFailure
from memhp.exporter.kernel.paths import Paths
from tests.helpers.trees import FIXTURES, block_dirs, unpack, write


def scrape(root, collector: BlocksCollector) -> dict[str, list]:
    reg = CollectorRegistry()
    reg.register(MemhpCollector(Paths(str(root / "sys"), str(root / "proc")), [collector]))
    out: dict[str, list] = {}
    for fam in reg.collect():
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def exported(samples) -> list[str]:
    return [s.labels["block"] for s in samples.get("memhp_block_info", [])]


def test_notable_blocks_most_urgent_first_within_the_limit(tmp_path):
    root = unpack(FIXTURES / "movablecore-mixed.tar.gz", tmp_path / "root")
    blocks = [int(p.name[6:]) for p in block_dirs(root)]
    healthy = [b for b in blocks if (root / f"sys/devices/system/memory/memory{b}/valid_zones").read_text() != "none\n"]
    going, failing = healthy[-1], healthy[-2]
    write(root / f"sys/devices/system/memory/memory{going}/state", "going-offline\n")
    counts = FailureCounts(100)
    size = int((root / "sys/devices/system/memory/block_size_bytes").read_text(), 16)
    counts.add(OfflineFailure(failing * size, (failing + 1) * size - 1, "notifier failure"), size, 0.0)

    got = scrape(root, BlocksCollector(failures=counts))
    # block 0 is "none" too, but boot DMA memory: not worth a look
    unofflinable = [b for b in blocks if b not in healthy and b != 0]
    assert sorted(map(int, exported(got))) == sorted([going, failing, *unofflinable])
    assert got["memhp_block_series_capped"][0].value == 0

    # the limit keeps the most urgent: going-offline, then failing to offline
    got = scrape(root, BlocksCollector(failures=counts, notable_limit=2))
    assert exported(got) == [str(b) for b in sorted([going, failing])]
    assert got["memhp_block_series_capped"][0].value == 1
    assert got["memhp_block_series_exported"][0].value == 2
    # ranges still describe every block
    assert sum(s.value for s in got["memhp_block_range_blocks"]) == len(blocks)


def test_ranges_are_bounded_and_say_so(tmp_path):
    root = unpack(FIXTURES / "two-node-dimm-offline.tar.gz", tmp_path / "root")
    got = scrape(root, BlocksCollector(ranges_limit=2))
    assert len(got["memhp_block_range_blocks"]) == 2
    assert got["memhp_block_ranges_truncated"][0].value == 1
    # the counts stay exact
    assert sum(s.value for s in got["memhp_blocks"]) == len(block_dirs(root))


def test_every_block_one_by_one_on_request(tmp_path):
    root = unpack(FIXTURES / "two-node-dimm-offline.tar.gz", tmp_path / "root")
    n = len(block_dirs(root))
    got = scrape(root, BlocksCollector(all_blocks=True))
    assert len(exported(got)) == n and len(got["memhp_block_state"]) == 3 * n
    assert all(s.labels["removable"] == "1" for s in got["memhp_block_info"])
