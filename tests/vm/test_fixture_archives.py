"""The captured fixture archives (tests/fixtures) are what the scenarios say
they are, and each unpacked tree is a valid ``lsmem --sysroot``.  Host only:
no guest is booted here (refresh them with scripts/refresh-fixtures)."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from .capture import LSMEM_COLUMNS
from .scenarios import SCENARIOS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MEM = "sys/devices/system/memory"


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("archives")
    out = {}
    for name, sc in SCENARIOS.items():
        archive = FIXTURES / sc.archive
        if archive.exists():
            with tarfile.open(archive) as t:
                t.extractall(base / name, filter="data")
            out[name] = base / name
    return out


def zoneinfo(root: Path) -> dict[tuple[int, str], dict[str, int]]:
    zones = {}
    text = (root / "proc/zoneinfo").read_text()
    for m in re.finditer(r"Node (\d+), zone\s+(\S+)\n(.*?)(?=\nNode |\Z)", text, re.S):
        fields = {k: int(v) for k, v in re.findall(r"^\s+(spanned|present|managed)\s+(\d+)$", m.group(3), re.M)}
        zones[(int(m.group(1)), m.group(2))] = fields
    return zones


def blocks(root: Path) -> dict[int, dict]:
    out = {}
    for d in (root / MEM).glob("memory*"):
        if not re.fullmatch(r"memory\d+", d.name):
            continue
        node = [p.name for p in d.iterdir() if re.fullmatch(r"node\d+", p.name)]
        out[int(d.name[6:])] = {
            "state": (d / "state").read_text().strip(),
            "zones": (d / "valid_zones").read_text().strip(),
            "node": int(node[0][4:]) if node else None,
        }
    return out


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_archive_exists_and_lsmem_agrees(name, trees):
    assert name in trees, f"missing {SCENARIOS[name].archive}: run scripts/refresh-fixtures {name}"
    root = trees[name]
    meta = json.loads((root / "capture.json").read_text())
    assert meta["scenario"] == name and meta["lsmem_stable"] and not meta["unreadable"]
    assert "Debian" in (root / "proc/version").read_text()
    out = subprocess.run(
        ["lsmem", "--sysroot", str(root), "-J", "-a", "-o", LSMEM_COLUMNS], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == json.loads((root / "lsmem.json").read_text())
    for b, info in blocks(root).items():  # every block has its node link
        assert info["node"] is not None, b
        assert (root / f"sys/devices/system/node/node{info['node']}/memory{b}").is_symlink()


def test_two_node_dimm_offline(trees):
    root = trees["two-node-dimm-offline"]
    facts = json.loads((root / "capture.json").read_text())["facts"]
    bl = blocks(root)
    assert (root / "sys/devices/system/node/has_memory").read_text().strip() == "0-1"
    assert len(facts["dimm_blocks"]) == 4
    for b in facts["dimm_blocks"]:
        assert bl[b] == {"state": "offline", "zones": bl[b]["zones"], "node": 1}
        assert "Movable" in bl[b]["zones"].split()
    assert (root / f"{MEM}/auto_online_blocks").read_text().strip() == "offline"


def test_auto_movable_virtio_mem(trees):
    root = trees["auto-movable-virtio-mem"]
    facts = json.loads((root / "capture.json").read_text())["facts"]
    params = root / "sys/module/memory_hotplug/parameters"
    assert (params / "online_policy").read_text().strip() == "auto-movable"
    assert (root / f"{MEM}/auto_online_blocks").read_text().strip() == "online"
    bl = blocks(root)
    assert len(facts["virtio_mem_blocks"]) == 8
    assert all(bl[b]["state"] == "online" and bl[b]["zones"] == "Movable" for b in facts["virtio_mem_blocks"])
    assert zoneinfo(root)[(0, "Movable")]["present"] * 4096 == 1 << 30


def test_movablecore_mixed(trees):
    root = trees["movablecore-mixed"]
    assert "movablecore=" in (root / "proc/cmdline").read_text()
    bl = blocks(root)
    mixed = [b for b, i in bl.items() if i["zones"] == "none" and b != 0]
    assert mixed, "movablecore= left no mixed-zone block besides memory0"
    assert zoneinfo(root)[(0, "Movable")]["present"] > 0


def test_imbalanced(trees):
    root = trees["imbalanced"]
    z = zoneinfo(root)
    movable = sum(f["present"] for (n, name), f in z.items() if name == "Movable")
    kernel = sum(f["present"] for (n, name), f in z.items() if name in ("DMA", "DMA32", "Normal"))
    assert movable / kernel > 4


def test_memmap_on_memory_partial(trees):
    root = trees["memmap-on-memory-partial"]
    facts = json.loads((root / "capture.json").read_text())["facts"]
    params = root / "sys/module/memory_hotplug/parameters"
    assert (params / "memmap_on_memory").read_text().strip() == "Y"
    bl = blocks(root)
    assert [bl[b]["state"] for b in facts["dimm_blocks"]] == ["online", "online", "offline", "offline"]
    assert [bl[b]["zones"] for b in facts["online"]] == ["Movable", "Normal"]
    z = zoneinfo(root)
    # the memmap of each onlined block lives in the block itself
    for zone in ("Movable", "Normal"):
        assert z[(0, zone)]["managed"] < z[(0, zone)]["present"]


def test_going_offline(trees):
    root = trees["going-offline"]
    meta = json.loads((root / "capture.json").read_text())
    b = meta["facts"]["going_offline"][0]
    assert blocks(root)[b]["state"] == "going-offline"
    assert not (root / f"{MEM}/memory{b}/online").exists()
    assert any(s.startswith(f"{MEM}/memory{b}/online") for s in meta["skipped"])
