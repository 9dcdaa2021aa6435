"""Every fixture captured from a real kernel: golden /metrics, promtool, lsmem.

Refresh the golden files after an intended change with
``.venv/bin/python -m pytest tests/exporter/test_fixtures.py --update-golden``
and review the diff.
"""

import json
import re
import subprocess
import sys

import pytest

from memhp.cli import main as memhp_main
from tests.helpers.trees import FIXTURES, fixture_archives, lsmem, unpack

GOLDEN = FIXTURES / "golden"
# Timings differ on every run; everything else is a function of the tree.
VOLATILE = re.compile(r"^memhp_collector_duration_seconds\{")
NAMES = [a.name.removesuffix(".tar.gz") for a in fixture_archives()]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("fixtures")
    return {
        a.name.removesuffix(".tar.gz"): unpack(a, base / a.name.removesuffix(".tar.gz")) for a in fixture_archives()
    }


def exposition(root) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "memhp.exporter.cli",
            "--once",
            "--path.sysfs",
            str(root / "sys"),
            "--path.procfs",
            str(root / "proc"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    # memhp_source_available names the paths read: the fixture's root stands for wherever it was unpacked
    text = out.stdout.replace(str(root), "ROOT")
    return "".join(line for line in text.splitlines(keepends=True) if not VOLATILE.match(line))


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_all_scenarios_are_captured():
    assert set(NAMES) >= {
        "two-node-dimm-offline",
        "auto-movable-virtio-mem",
        "movablecore-mixed",
        "imbalanced",
        "memmap-on-memory-partial",
        "going-offline",
    }


@pytest.mark.parametrize("name", NAMES)
def test_golden_metrics(name, roots, request):
    text = exposition(roots[name])
    golden = GOLDEN / f"{name}.prom"
    if request.config.getoption("--update-golden"):
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"no golden file for {name}: run with --update-golden"
    assert text == golden.read_text()


@pytest.mark.parametrize("name", NAMES)
def test_golden_passes_promtool(name):
    check = subprocess.run(
        ["promtool", "check", "metrics"], stdin=open(GOLDEN / f"{name}.prom"), capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


LSMEM_STATES = {"on->off": "going-offline"}  # lsmem's short word for the kernel's state


def _view(doc):
    rows = []
    for m in json.loads(doc)["memory"]:
        state = LSMEM_STATES.get(m["state"], m["state"])
        removable = m["removable"] if state == "online" else None
        rows.append((m["block"], state, m["node"], m["zones"], removable))
    return rows


@pytest.mark.parametrize("name", NAMES)
def test_listing_agrees_with_lsmem(name, roots, capsys):
    root = roots[name]
    assert memhp_main(["blocks", "-a", "--json", "--path.sysfs", str(root / "sys")]) == 0
    ours = capsys.readouterr().out
    ref = lsmem(root)
    assert _view(ours) == _view(ref)
    # and the archive's own record of what lsmem said inside the live guest
    assert _view(ours) == _view((root / "lsmem.json").read_text())


def _present_pages(zoneinfo: str):
    """Independent reading of zoneinfo: (node, zone) -> (present, cma)."""
    out = {}
    for m in re.finditer(r"Node (\d+), zone\s+(\S+)\n(.*?)(?=\nNode |\Z)", zoneinfo, re.S):
        body = m.group(3)
        present = int(re.search(r"\n\s+present\s+(\d+)", body).group(1))
        cma = re.search(r"\n\s+cma\s+(\d+)", body)
        out[(m.group(1), m.group(2))] = (present, int(cma.group(1)) if cma else 0)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_ratio_follows_the_kernels_accounting(name, roots):
    root = roots[name]
    zones = _present_pages((root / "proc/zoneinfo").read_text())
    movable = sum(p + (0 if z == "Movable" else c) for (n, z), (p, c) in zones.items() if z == "Movable" or c)
    kernel = sum(p - c for (n, z), (p, c) in zones.items() if z != "Movable")
    got = samples(exposition(root))
    assert got["memhp_system_movable_kernel_ratio"] == pytest.approx(movable / kernel)
    ratio_pct = int((root / "sys/module/memory_hotplug/parameters/auto_movable_ratio").read_text())
    assert got["memhp_system_auto_movable_headroom_bytes"] == max(0, ratio_pct * kernel // 100 - movable) * 4096


def test_two_node_dimm_offline(roots):
    got = samples(exposition(roots["two-node-dimm-offline"]))
    assert got['memhp_blocks{node="1",state="offline",zone="Normal"}'] == 4
    assert got['memhp_blocks_bytes{node="1",state="offline",zone="Normal"}'] == 4 * 128 << 20
    assert got['memhp_auto_online_blocks_info{state="offline"}'] == 1
    # a healthy offline DIMM: one lsmem-style range, not four blocks one by one
    rng = 'memhp_block_range_blocks{first_block="32",last_block="35",node="1",state="offline",'
    assert got[rng + 'valid_zones="Normal Movable",zone="Normal"}'] == 4
    assert not [k for k in got if k.startswith('memhp_block_info{block="32"')]
    assert got['memhp_hot_unpluggable_bytes{node="1"}'] == 0


def test_imbalanced(roots):
    got = samples(exposition(roots["imbalanced"]))
    assert got['memhp_node_movable_kernel_ratio{node="0"}'] > 4
    assert got['memhp_node_auto_movable_headroom_bytes{node="0"}'] == 0
    assert got['memhp_hot_unpluggable_bytes{node="0"}'] == 48 * 128 << 20


def test_movablecore_mixed_block_cannot_be_offlined(roots):
    got = samples(exposition(roots["movablecore-mixed"]))
    # block 0 (DMA/DMA32: boot memory) and block 5 (DMA32/Movable boundary) are in two zones
    assert got['memhp_blocks_unofflinable{node="0",reason="boot_dma"}'] == 1
    assert got['memhp_blocks_unofflinable{node="0",reason="other"}'] == 1
    assert got['memhp_block_info{block="5",node="0",removable="1",valid_zones="none",zone="none"}'] == 1


def test_auto_movable_virtio_mem(roots):
    got = samples(exposition(roots["auto-movable-virtio-mem"]))
    assert got['memhp_online_policy_info{policy="auto-movable"}'] == 1
    assert got['memhp_blocks{node="0",state="online",zone="Movable"}'] == 8
    assert got['memhp_auto_online_blocks_info{state="online"}'] == 1


def test_memmap_on_memory_partial(roots):
    got = samples(exposition(roots["memmap-on-memory-partial"]))
    assert got['memhp_memmap_on_memory_info{mode="Y"}'] == 1
    assert got['memhp_blocks{node="0",state="offline",zone="Normal"}'] == 2
    assert got['memhp_blocks{node="0",state="online",zone="Movable"}'] == 1


def test_going_offline(roots, capsys):
    root = roots["going-offline"]
    got = samples(exposition(root))
    assert got['memhp_block_state{block="35",node="0",state="going-offline"}'] == 1
    assert got['memhp_block_going_offline_seconds{block="35",node="0"}'] == 0  # first scrape that saw it
    assert got["memhp_going_offline_observed_total"] == 1
    assert got['memhp_blocks{node="0",state="going-offline",zone="Movable"}'] == 1
    # the capture could not read `online` (it blocks on the device lock); the
    # detailed reader must not even try
    assert not (root / "sys/devices/system/memory/memory35/online").exists()
    from memhp.exporter.kernel.fsread import ParseErrors
    from memhp.exporter.kernel.paths import Paths
    from memhp.exporter.kernel.snapshot import read_snapshot

    errors = ParseErrors()
    snap = read_snapshot(Paths(str(root / "sys"), str(root / "proc")), errors, details=True)
    b35 = snap.block(35)
    assert (b35.state, b35.online, b35.zone) == ("going-offline", None, "Movable")
    assert errors.counts() == {}


def test_snapshot_block_lookup(roots):
    from memhp.exporter.kernel.paths import Paths
    from memhp.exporter.kernel.snapshot import read_snapshot

    root = roots["two-node-dimm-offline"]
    snap = read_snapshot(Paths(str(root / "sys"), str(root / "proc")))
    assert [snap.block(b.id) for b in snap.blocks] == snap.blocks
    assert snap.block(8) is None and snap.block(-1) is None and snap.block(10**6) is None  # holes and outside
