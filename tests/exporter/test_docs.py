"""Every metric family the exporter can emit is documented in docs/metrics.md,
and nothing documented is stale."""

import re

import pytest
from prometheus_client import CollectorRegistry

from memhp.exporter.cli import ExporterConfig, build_registry
from memhp.exporter.collectors import MemhpCollector
from memhp.exporter.collectors.blocks import BLOCK_LIMIT, BLOCKS_ALL
from memhp.exporter.collectors.events import OfflineFailuresCollector, UeventsCollector
from memhp.exporter.events.kmsg import FailureCounts, KmsgWatcher
from memhp.exporter.events.uevent_monitor import UeventMonitor
from memhp.exporter.kernel.paths import Paths
from tests.helpers.trees import FIXTURES, REPO, block_dirs, unpack

DOC = (REPO / "docs" / "metrics.md").read_text()


def _names(reg) -> set[str]:
    names = set()
    for fam in reg.collect():
        names |= {s.name for s in fam.samples}
        names.add(f"{fam.name}_total" if fam.type == "counter" else fam.name)
    return {n for n in names if not n.endswith("_created")}


@pytest.fixture(scope="module")
def emitted(tmp_path_factory):
    # A captured guest, plus what 6.1 guests lack: crash_hotplug (6.5+) and probe.
    root = unpack(FIXTURES / "two-node-dimm-offline.tar.gz", tmp_path_factory.mktemp("docs") / "root")
    (root / "sys/devices/system/memory/crash_hotplug").write_text("0\n")
    (root / "sys/devices/system/memory/probe").write_text("")
    paths = Paths(str(root / "sys"), str(root / "proc"))
    names = _names(build_registry(ExporterConfig(paths=paths, once=True))[0])
    capped_flags = {BLOCKS_ALL: True, BLOCK_LIMIT: len(block_dirs(root)) - 1}
    capped = build_registry(ExporterConfig(paths=paths, once=True, flags=capped_flags))[0]
    names |= _names(capped)
    # the event collectors are off in --once mode: collect them directly
    watcher = KmsgWatcher("/nonexistent", FailureCounts(1), lambda: None)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(
        MemhpCollector(paths, [OfflineFailuresCollector(watcher, watcher.counts), UeventsCollector(UeventMonitor())])
    )
    names |= _names(reg)
    return names


def test_crash_hotplug_and_probe_are_read(tmp_path):
    root = unpack(FIXTURES / "two-node-dimm-offline.tar.gz", tmp_path / "root")
    (root / "sys/devices/system/memory/crash_hotplug").write_text("0\n")
    (root / "sys/devices/system/memory/probe").write_text("")
    reg = build_registry(ExporterConfig(paths=Paths(str(root / "sys"), str(root / "proc")), once=True))[0]
    assert reg.get_sample_value("memhp_crash_hotplug") == 0
    assert reg.get_sample_value("memhp_probe_interface_present") == 1


def test_every_metric_is_documented(emitted):
    documented = set(re.findall(r"`(memhp_[a-z_]+)", DOC))
    missing = {n for n in emitted if n not in documented}
    assert not missing, f"undocumented metrics: {sorted(missing)}"


def test_no_documented_metric_is_stale(emitted):
    documented = set(re.findall(r"`(memhp_[a-z_]+)", DOC))
    stale = {n for n in documented if n not in emitted}
    assert not stale, f"documented but never emitted: {sorted(stale)}"
