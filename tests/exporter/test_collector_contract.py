"""The collector contract: each collector registers itself and declares its
metrics; flags come from the registry; ``name[]`` filters through the real
HTTP server; the prerendered fast path matches prometheus_client's encoders."""

from __future__ import annotations

import gzip
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from memhp.exporter.cli import ExporterConfig, build_collectors, build_registry, config_from_args, get_parser
from memhp.exporter.collectors import REGISTERED, Flag, SubCollector, register_collector
from memhp.exporter.collectors.events import OfflineFailuresCollector, UeventsCollector
from memhp.exporter.events.kmsg import FailureCounts, KmsgWatcher
from memhp.exporter.events.uevent_monitor import UeventMonitor
from memhp.exporter.exposition import PrerenderedFamily, render
from memhp.exporter.kernel.fsread import ParseErrors
from memhp.exporter.kernel.paths import Paths
from memhp.exporter.server import serve


def _paths(root) -> Paths:
    return Paths(str(root / "sys"), str(root / "proc"))


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, dict(r.headers), r.read()


@pytest.fixture
def server(host_archive_root):
    registry, collector = build_registry(ExporterConfig(paths=_paths(host_archive_root), once=True))
    httpd = serve(registry, "127.0.0.1:0")
    yield f"http://127.0.0.1:{httpd.server_address[1]}/metrics"
    httpd.shutdown()
    collector.close()


def test_name_filter_answers_the_named_families(server):
    status, _, body = _get(server + "?name[]=memhp_blocks")
    families = list(text_string_to_metric_families(body.decode()))
    assert status == 200 and [f.name for f in families] == ["memhp_blocks"]
    assert families[0].samples and all(s.name == "memhp_blocks" for s in families[0].samples)
    # a prerendered family and a counter, together
    _, _, body = _get(server + "?name[]=memhp_block_range_blocks&name[]=memhp_going_offline_observed_total")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert names == {"memhp_block_range_blocks", "memhp_going_offline_observed"}


def test_formats_and_gzip_through_the_server(server):
    _, headers, plain = _get(server)
    _, zheaders, zipped = _get(server, {"Accept-Encoding": "gzip"})
    assert zheaders["Content-Encoding"] == "gzip" and "Content-Encoding" not in headers
    unzipped = gzip.decompress(zipped).decode()  # several gzip members: one valid stream

    def stable(text: str) -> set[str]:
        return {line for line in text.splitlines() if "duration_seconds{" not in line}

    assert stable(unzipped) == stable(plain.decode())
    _, oheaders, om = _get(server, {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert oheaders["Content-Type"].startswith("application/openmetrics-text")
    text = om.decode()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    families = {f.name: f for f in parse_openmetrics(text)}  # a strict parser: the splice is valid OpenMetrics
    assert families["memhp_block_range_blocks"].samples and families["memhp_parse_errors"].type == "counter"


def test_prerendered_text_equals_prometheus_client_encoding():
    rows = [(("7", "0", 'we"ird\\zone\n'), 1.0), (("8", "1", "Normal"), 2.5)]
    fam = PrerenderedFamily("memhp_test", "Doc with a \\ backslash.", ("block", "node", "zone"), rows)
    fast = render(_Only([fam]), None)[1]
    slow = render(_Only([_plain(fam)]), None)[1]
    assert fast == slow
    for accept in ("application/openmetrics-text; version=1.0.0", "text/plain; version=0.0.4"):
        assert render(_Only([fam]), accept) == render(_Only([_plain(fam)]), accept)


class _Only:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def _plain(fam):
    from prometheus_client.core import Metric

    m = Metric(fam.name, fam.documentation, fam.type)
    m.samples = list(fam.samples)
    return m


def _families_by_collector(root) -> dict[str, set[str]]:
    """Family names each sub-collector yields, the event collectors included."""
    paths = _paths(root)
    watcher = KmsgWatcher("/nonexistent", FailureCounts(1), lambda: None)
    cfg = ExporterConfig(paths=paths, once=True)
    _, main = build_registry(cfg)
    subs: list[SubCollector] = [*main.collectors, OfflineFailuresCollector(watcher, watcher.counts)]
    subs.append(UeventsCollector(UeventMonitor()))
    out = {}
    from memhp.exporter.kernel.snapshot import ScrapeContext

    for c in subs:
        out[c.name] = {f.name for f in c.collect(ScrapeContext(paths, ParseErrors(), removable_limit=0))}
    return out


def test_every_collector_declares_what_it_emits(host_archive_root):
    emitted = _families_by_collector(host_archive_root)
    assert set(emitted) == set(REGISTERED)
    for name, families in emitted.items():
        collector_cls = {c.name: c for c in SubCollector.__subclasses__()}[name]
        declared = {f.name for f in collector_cls.families}
        assert families <= declared, f"{name} emits undeclared {sorted(families - declared)}"


def test_describe_maps_every_name_to_the_collector(host_archive_root):
    registry, main = build_registry(ExporterConfig(paths=_paths(host_archive_root), once=True))
    names = {m.name for m in main.describe()}
    assert {"memhp_blocks", "memhp_block_state", "memhp_collector_success", "memhp_zone_free_bytes"} <= names
    # what name[] filtering looks up: counters under their _total name too
    assert registry._names_to_collectors["memhp_parse_errors_total"] is main
    assert registry._names_to_collectors["memhp_block_range_blocks"] is main


def test_flags_come_from_the_registry():
    class Probe(SubCollector):
        name = "contract_probe"
        help = "a probe collector, off by default"

    register_collector(Probe, lambda ctx: None, default_enabled=False)
    try:
        args = get_parser().parse_args([])
        assert args.collector_contract_probe is False and args.collector_blocks is True
        assert get_parser().parse_args(["--collector.contract_probe"]).collector_contract_probe is True
        assert "contract_probe" not in ExporterConfig(paths=Paths()).collectors
    finally:
        del REGISTERED["contract_probe"]


def test_a_collector_brings_its_own_flags(tmp_path):
    """A collector's --collector.NAME.* flag is declared in its module; its value
    (checked against its bounds) reaches the factory, its default when not given."""
    size = Flag("contract_probe.size", 3, "Probe size.", bounds=(1, 5))
    seen = []

    class Probe(SubCollector):
        name = "contract_probe"
        help = "a probe collector with a flag"

    def factory(ctx):
        seen.append(ctx.value(size))

    register_collector(Probe, factory, flags=(size,), default_enabled=False)
    base = ["--once", "--path.sysfs", str(tmp_path), "--path.procfs", str(tmp_path), "--collector.contract_probe"]
    try:
        assert "--collector.contract_probe.size SIZE" in get_parser().format_help()
        for argv, want in ((base, 3), ([*base, "--collector.contract_probe.size", "5"], 5)):
            build_collectors(config_from_args(get_parser().parse_args(argv)), ParseErrors())
            assert seen.pop() == want
        with pytest.raises(ValueError, match=r"--collector\.contract_probe\.size must be between 1 and 5"):
            config_from_args(get_parser().parse_args([*base, "--collector.contract_probe.size", "6"]))
    finally:
        del REGISTERED["contract_probe"]
