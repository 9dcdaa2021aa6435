"""Every metric family the exporter can emit is declared once and documented in
docs/metrics.md: what is emitted is the declaration, the tables are written
from the declarations, and nothing documented is stale."""

import re

import pytest
from prometheus_client import CollectorRegistry

from memhp.exporter.cli import ExporterConfig, build_registry
from memhp.exporter.collectors import REGISTERED, Family, MemhpCollector, reference
from memhp.exporter.collectors.blocks import BLOCK_LIMIT, BLOCKS_ALL
from memhp.exporter.collectors.events import OfflineFailuresCollector, UeventsCollector
from memhp.exporter.events.kmsg import FailureCounts, KmsgWatcher
from memhp.exporter.events.uevent_monitor import UeventMonitor
from memhp.exporter.kernel.paths import Paths
from memhp.selfmetrics import register_self_metrics
from tests.helpers.trees import FIXTURES, REPO, block_dirs, unpack

DOC = (REPO / "docs" / "metrics.md").read_text()


def _names(families) -> set[str]:
    names = set()
    for fam in families:
        names |= {s.name for s in fam.samples}
        names.add(f"{fam.name}_total" if fam.type == "counter" else fam.name)
    return {n for n in names if not n.endswith("_created")}


@pytest.fixture(scope="module")
def emitted(families):
    # and memhp's own of what every server adds (docs/metrics.md, "Every server"; process_* are prometheus_client's)
    servers = CollectorRegistry()
    register_self_metrics(servers)
    return _names(families) | {n for n in _names(servers.collect()) if n.startswith("memhp_")}


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> list:
    """Every family a scrape yields: default, capped, and the event collectors."""
    # A captured guest, plus what 6.1 guests lack: crash_hotplug (6.5+) and probe.
    root = unpack(FIXTURES / "two-node-dimm-offline.tar.gz", tmp_path_factory.mktemp("docs") / "root")
    (root / "sys/devices/system/memory/crash_hotplug").write_text("0\n")
    (root / "sys/devices/system/memory/probe").write_text("")
    paths = Paths(str(root / "sys"), str(root / "proc"))
    out = list(build_registry(ExporterConfig(paths=paths, once=True))[0].collect())
    capped_flags = {BLOCKS_ALL: True, BLOCK_LIMIT: len(block_dirs(root)) - 1}
    out += build_registry(ExporterConfig(paths=paths, once=True, flags=capped_flags))[0].collect()
    # the event collectors are off in --once mode: collect them directly
    watcher = KmsgWatcher("/nonexistent", FailureCounts(1), lambda: None)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(
        MemhpCollector(paths, [OfflineFailuresCollector(watcher, watcher.counts), UeventsCollector(UeventMonitor())])
    )
    out += reg.collect()
    return out


def _declared() -> dict[str, Family]:
    declared = [*MemhpCollector.families, *(f for spec in REGISTERED.values() for f in spec.families)]
    by_name = {f.name: f for f in declared}
    assert len(by_name) == len(declared), "a family declared twice"
    return by_name


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


def test_every_emitted_family_is_its_declaration(families):
    declared = _declared()
    for fam in families:
        decl = declared[fam.name]
        assert (fam.type, fam.documentation) == (decl.kind, decl.help), fam.name
        for sample in fam.samples:
            assert tuple(sample.labels) == decl.labels, f"{fam.name}: labels {sorted(sample.labels)}"
    assert {f.name for f in families} == set(declared), "a declared family is never emitted"


def test_the_tables_are_written_from_the_declarations():
    assert reference.render(DOC) == DOC, f"docs/metrics.md is out of date: run {reference.COMMAND}"
    for name, table in reference.tables().items():
        assert f"<!-- metrics:{name} -->\n{table}\n<!-- /metrics:{name} -->" in DOC


def test_a_changed_declaration_shows_in_the_table():
    row = MemhpCollector.families[0].doc_row()
    stale = DOC.replace(row, row.replace("Time a collector took", "Time it took"))
    assert stale != DOC and reference.render(stale) == DOC
    with pytest.raises(ValueError, match="metrics:zones"):
        reference.render(DOC.replace("<!-- /metrics:zones -->", ""))
