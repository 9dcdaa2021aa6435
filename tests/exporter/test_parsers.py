"""The typed parsing layer, on real kernel text and on the traps in it."""

from memhp.exporter.kernel.fsread import ParseErrors, parse_bool, parse_int, read_attr
from memhp.exporter.kernel.meminfo import parse_meminfo
from memhp.exporter.kernel.memory_blocks import parse_state, parse_valid_zones
from memhp.exporter.kernel.nodes import parse_nodelist
from memhp.exporter.kernel.zoneinfo import parse_zoneinfo, read_zoneinfo

# Shape of a 6.x /proc/zoneinfo: per-node stats under the first zone, per-CPU
# pagesets whose "high:" and "vm stats threshold" must not leak into the zone.
ZONEINFO = """\
Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 369
      nr_active_anon 377
  pages free     3840
        boost    0
        min      34
        low      42
        high     50
        spanned  4095
        present  3998
        managed  3840
        cma      0
        protection: (0, 2991, 23997, 23997)
      nr_free_pages 3840
  pagesets
    cpu: 0
              count: 0
              high:  0
              batch: 1
  vm stats threshold: 6
    cpu: 1
              count: 7
              high:  999
              batch: 1
  vm stats threshold: 6
  node_unreclaimable:  0
  start_pfn:           1
Node 0, zone  Movable
  pages free     0
        boost    0
        min      0
        low      0
        high     0
        spanned  0
        present  0
        managed  0
        cma      0
        protection: (0, 0, 0, 0)
Node 1, zone   Normal
  per-node stats
      nr_inactive_anon 5
  pages free     1000
        min      10
        low      20
        high     30
        spanned  32768
        present  32768
        managed  30000
        cma      512
        protection: (0, 0, 0, 0)
"""


def test_zoneinfo_by_field_name():
    errors = ParseErrors()
    info = parse_zoneinfo(ZONEINFO, errors)
    assert errors.counts() == {}
    dma, movable, normal1 = info.zones
    assert (dma.node, dma.name, dma.free, dma.min, dma.low, dma.high) == (0, "DMA", 3840, 34, 42, 50)
    assert (dma.spanned, dma.present, dma.managed, dma.cma) == (4095, 3998, 3840, 0)
    assert dma.fields["start_pfn"] == 1 and dma.fields["node_unreclaimable"] == 0
    assert "count" not in dma.fields and "batch" not in dma.fields
    assert dma.populated and not movable.populated and movable.movable
    assert (normal1.node, normal1.cma) == (1, 512)
    assert info.node_stats == {0: {"nr_inactive_anon": 369, "nr_active_anon": 377}, 1: {"nr_inactive_anon": 5}}


def test_zoneinfo_real_machine_matches_field_lines():
    errors = ParseErrors()
    info = read_zoneinfo("/proc/zoneinfo", errors)
    assert errors.counts() == {}
    text = open("/proc/zoneinfo").read()
    # Every zone's "high" watermark, found independently: the first "high"
    # line after "pages free" in each zone section.
    expected = []
    for section in text.split("Node ")[1:]:
        lines = section.splitlines()
        i = next(n for n, line in enumerate(lines) if line.strip().startswith("pages free"))
        expected.append(next(int(line.split()[1]) for line in lines[i:] if line.split()[0] == "high"))
    assert [z.high for z in info.zones] == expected
    assert len(info.zones) == text.count("Node ")


def test_zoneinfo_garbage_counts_but_keeps_the_rest():
    errors = ParseErrors()
    info = parse_zoneinfo("garbage first\n" + ZONEINFO.replace("low      42", "low      4x2"), errors)
    assert errors.counts() == {"proc/zoneinfo": 1}
    assert errors.last_reason("proc/zoneinfo") == "2 unparsable line(s)"
    assert info.zones[0].low is None and info.zones[0].high == 50


def test_meminfo_bytes():
    errors = ParseErrors()
    info = parse_meminfo("MemTotal:       1000 kB\nHugePages_Total:       3\nBad line\nX: 1 MB\n", errors)
    assert info == {"MemTotal": 1024000, "HugePages_Total": 3}
    assert errors.counts() == {"proc/meminfo": 1}
    assert "2 unparsable" in errors.last_reason("proc/meminfo")


def test_attribute_values():
    e = ParseErrors()
    assert parse_state("going-offline", e) == "going-offline"
    assert parse_state("online_movable", e) is None  # a write value, never read back
    assert parse_valid_zones("Normal Movable", e) == ("Normal", "Movable")
    assert parse_valid_zones("", e) is None
    assert parse_int("8000000", e, "x", base=16) == 128 << 20
    assert parse_int("-1", e, "x") is None
    assert parse_bool("Y", e, "b") is True and parse_bool("0", e, "b") is False and parse_bool("2", e, "b") is None
    assert parse_nodelist("0-2,4", e, "n") == {0, 1, 2, 4}
    assert parse_nodelist("", e, "n") == set()
    assert e.counts() == {"memoryN/state": 1, "memoryN/valid_zones": 1, "x": 1, "b": 1}


def test_read_attr_bounds_and_absence(tmp_path):
    e = ParseErrors()
    assert read_attr(str(tmp_path / "missing"), e, "k") is None and e.total() == 0
    (tmp_path / "big").write_bytes(b"1" * 5000)
    assert read_attr(str(tmp_path / "big"), e, "big") is None
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    assert read_attr(str(tmp_path / "bin"), e, "bin") is None
    (tmp_path / "dir").mkdir()
    assert read_attr(str(tmp_path / "dir"), e, "dir") is None
    assert e.counts() == {"big": 1, "bin": 1, "dir": 1}
