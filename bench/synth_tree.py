"""Synthetic sysfs/procfs trees of N memory blocks, shaped like a captured guest.

Top-level files, module parameters, /proc/zoneinfo and /proc/meminfo are taken
from a real fixture (tests/fixtures/*.tar.gz); the blocks are multiplied: a mix
of online (DMA32, Normal, Movable) blocks, 1 GiB runs of offline (Normal
Movable) blocks as hot-added DIMMs left offline, and a ``none`` block, spread over NODES nodes, with the same attribute files and
node links the kernel creates.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "tests" / "fixtures" / "two-node-dimm-offline.tar.gz"
NODES = 2


def _block(i: int, n: int) -> tuple[str, str]:
    """(state, valid_zones) for block i of n: a deterministic, realistic mix."""
    if i == 0:
        return "online", "none"
    if i < 8:
        return "online", "DMA32"
    if i % 80 >= 72:  # a 1 GiB DIMM left offline every 10 GiB
        return "offline", "Normal Movable"
    if i > n // 2:
        return "online", "Movable"
    return "online", "Normal"


def make_tree(root: Path, n_blocks: int) -> Path:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    with tarfile.open(TEMPLATE) as tar:
        keep = [
            m
            for m in tar.getmembers()
            if not m.name.startswith(("sys/devices/system/memory/memory", "sys/devices/system/node/node"))
        ]
        tar.extractall(root, members=keep, filter="tar")
    mem = root / "sys/devices/system/memory"
    nodes = [root / f"sys/devices/system/node/node{k}" for k in range(NODES)]
    for nd in nodes:
        nd.mkdir(parents=True, exist_ok=True)
    per_node = -(-n_blocks // NODES)
    for i in range(n_blocks):
        state, zones = _block(i, n_blocks)
        d = mem / f"memory{i}"
        d.mkdir()
        node = min(i // per_node, NODES - 1)
        for name, value in (
            ("state", state),
            ("online", "1" if state == "online" else "0"),
            ("phys_index", f"{i:08x}"),
            ("phys_device", "0"),
            ("removable", "1"),
            ("valid_zones", zones),
            ("uevent", ""),
        ):
            with open(d / name, "w") as f:
                f.write(value + "\n" if value else "")
        os.symlink(f"../../node/node{node}", d / f"node{node}")
        os.symlink(f"../../memory/memory{i}", nodes[node] / f"memory{i}")
    return root
