"""Property tests: no sysfs/procfs content, however broken, escapes a scrape."""

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memhp.exporter.cli import ExporterConfig, build_registry
from memhp.exporter.collectors.blocks import BLOCKS_ALL
from memhp.exporter.events.kmsg import parse_failure
from memhp.exporter.kernel.fsread import ParseErrors
from memhp.exporter.kernel.meminfo import parse_meminfo
from memhp.exporter.kernel.memory_blocks import parse_state, parse_valid_zones
from memhp.exporter.kernel.nodes import parse_nodelist
from memhp.exporter.kernel.paths import Paths
from memhp.exporter.kernel.zoneinfo import parse_zoneinfo
from tests.helpers.trees import FIXTURES, unpack

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

text = st.text(max_size=300)
binary = st.binary(max_size=300)


@SETTINGS
@given(text)
def test_text_parsers_never_raise(s):
    e = ParseErrors()
    parse_zoneinfo(s, e)
    parse_meminfo(s, e)
    parse_state(s, e)
    parse_valid_zones(s, e)
    parse_nodelist(s, e, "n")
    parse_failure(s)


@SETTINGS
@given(
    st.lists(
        st.sampled_from(
            [
                "Node 0, zone Normal",
                "Node x, zone",
                "  pages free 12",
                "  pagesets",
                "        min 3",
                "  per-node stats",
                "      nr_x 5",
                "    cpu: 0",
                "              high: 9",
                "  start_pfn: 1",
                "        protection: (0, 1)",
            ]
        ),
        max_size=40,
    )
)
def test_zoneinfo_shuffled_structure_never_raises(lines):
    info = parse_zoneinfo("\n".join(lines), ParseErrors())
    for z in info.zones:
        assert z.high is None or isinstance(z.high, int)


# Files the exporter reads, relative to a fixture root: one of each kind.
TARGETS = [
    "sys/devices/system/memory/block_size_bytes",
    "sys/devices/system/memory/auto_online_blocks",
    "sys/devices/system/memory/memory32/state",
    "sys/devices/system/memory/memory32/valid_zones",
    "sys/devices/system/memory/memory32/removable",
    "sys/devices/system/memory/memory4/state",
    "sys/devices/system/node/has_memory",
    "sys/module/memory_hotplug/parameters/online_policy",
    "sys/module/memory_hotplug/parameters/auto_movable_ratio",
    "sys/module/memory_hotplug/parameters/auto_movable_numa_aware",
    "proc/zoneinfo",
    "proc/meminfo",
]
# The procfs files memhp_source_available checks, and the collector that reads each.
SOURCE_FILES = {"proc/zoneinfo": "zones", "proc/meminfo": "meminfo"}
CORRUPTIONS = ["bytes", "text", "empty", "huge", "non_utf8", "directory", "vanished", "block_vanished"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return unpack(FIXTURES / "two-node-dimm-offline.tar.gz", tmp_path_factory.mktemp("prop") / "root")


def _corrupt(path: Path, how: str, payload: bytes, root: Path):
    if how == "block_vanished":
        block = path.parent
        shutil.rmtree(block)
        for link in root.glob(f"sys/devices/system/node/node*/{block.name}"):
            link.unlink()
        return
    if path.is_dir():
        path.rmdir()
    elif path.exists():
        path.unlink()
    if how == "vanished":
        return
    if how == "directory":
        path.mkdir()
        return
    data = {
        "bytes": payload,
        "text": payload.decode("latin-1").encode("utf-8", "replace"),
        "empty": b"",
        "huge": b"1" * (70 << 10),
        "non_utf8": b"\xff\xfe" + payload,
    }[how]
    path.write_bytes(data)


@SETTINGS
@given(target=st.sampled_from(TARGETS), how=st.sampled_from(CORRUPTIONS), payload=binary)
def test_no_corruption_escapes_a_scrape(tree, tmp_path_factory, target, how, payload):
    root = tmp_path_factory.mktemp("case") / "root"
    shutil.copytree(tree, root, symlinks=True)
    if how == "block_vanished" and "/memory" not in target.rsplit("/", 2)[-2]:
        how = "vanished"
    _corrupt(root / target, how, payload, root)
    errors = ParseErrors()
    # every block one by one, so that every per-block file is read
    cfg = ExporterConfig(paths=Paths(str(root / "sys"), str(root / "proc")), once=True, flags={BLOCKS_ALL: True})
    reg, _ = build_registry(cfg, errors)
    families = list(reg.collect())  # must not raise
    success = {
        s.labels["collector"]: s.value for f in families for s in f.samples if s.name == "memhp_collector_success"
    }
    expected = {"config": 1.0, "blocks": 1.0, "zones": 1.0, "meminfo": 1.0}
    if how in ("directory", "vanished") and target in SOURCE_FILES:
        # no procfs file, no data: the collector does not run, and says so (issue 21 §2)
        expected[SOURCE_FILES[target]] = 0.0
        available = [s for f in families for s in f.samples if s.name == "memhp_source_available"]
        assert [s.labels["reason"] for s in available if s.value == 0] == [
            "unreadable" if how == "directory" else "missing"
        ]
        assert success == expected
        shutil.rmtree(root.parent)
        return
    assert success == expected
    kind_counted = errors.total() > 0
    if how in ("non_utf8", "directory") or (how == "huge" and target.startswith("sys/")):
        assert kind_counted, f"{how} {target} was not counted"
    if how in ("vanished", "block_vanished"):
        assert not kind_counted, errors.counts()
    shutil.rmtree(root.parent)
