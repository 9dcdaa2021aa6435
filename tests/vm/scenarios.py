"""Fixture scenarios: a guest configuration plus the steps that bring a real
kernel into the state a fixture archive records.

Each scenario's ``setup(guest)`` returns a dict of facts that end up in the
archive's ``capture.json`` (and that ``tests/vm/test_fixtures.py`` checks
against the archive).  Refresh with ``scripts/refresh-fixtures`` (or
``make fixtures``).
"""

from __future__ import annotations

import dataclasses
import errno
import inspect
from collections.abc import Callable

from .guest import Guest, VirtioMem, VMConfig


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    config: VMConfig
    setup: Callable[[Guest], dict]

    @property
    def archive(self) -> str:
        return f"{self.name}.tar.gz"


def _online(g: Guest, blocks, state="online_movable"):
    for b in blocks:
        e = g.set_state(b, state)
        if e:
            raise RuntimeError(f"{state} of memory{b} failed: {errno.errorcode.get(e, e)}")


def two_node_dimm_offline(g: Guest) -> dict:
    dimm = g.hotplug_dimm("512M", node=1)
    blocks = g.dimm_blocks(dimm)
    g.wait_for(lambda: all(g.block_state(b) == "offline" for b in blocks), 60, "hot-added blocks to be offline")
    return {"dimm": dimm, "dimm_node": 1, "dimm_blocks": blocks, "dimm_state": "offline"}


def auto_movable_virtio_mem(g: Guest) -> dict:
    g.virtio_mem_resize("vmem0", "1G")
    info = g.block_info()
    boot = set(range(8))
    added = sorted(b for b in info if b not in boot)
    g.wait_for(lambda: all(g.block_state(b) == "online" for b in added), 60, "virtio-mem blocks to be auto-onlined")
    return {
        "virtio_mem": "vmem0",
        "requested_size": 1 << 30,
        "virtio_mem_blocks": added,
        "zones": {b: g.valid_zones(b) for b in added},
    }


def movablecore_mixed(g: Guest) -> dict:
    info = g.block_info()
    none = sorted(b for b, r in info.items() if r["valid_zones"] == "none")
    return {"valid_zones_none": none}


def imbalanced(g: Guest) -> dict:
    dimms, blocks = [], []
    for _ in range(3):
        d = g.hotplug_dimm("2G")
        dimms.append(d)
        blocks += g.dimm_blocks(d)
    _online(g, blocks, "online_movable")
    return {"dimms": dimms, "movable_blocks": blocks}


def memmap_on_memory_partial(g: Guest) -> dict:
    # Linux 6.1 only puts the memmap on the hot-added memory when one
    # add_memory() call covers exactly one memory block
    # (mhp_supports_memmap_on_memory), so hot-add four single-block DIMMs.
    dimms = [g.hotplug_dimm(g.block_size) for _ in range(4)]
    blocks = [g.dimm_blocks(d)[0] for d in dimms]
    _online(g, blocks[:1], "online_movable")
    _online(g, blocks[1:2], "online_kernel")
    zones = {b: g.valid_zones(b) for b in blocks}
    return {
        "dimms": dimms,
        "dimm_blocks": blocks,
        "online": blocks[:2],
        "offline": blocks[2:],
        "zones": zones,
        "memmap_on_memory": g.read("/sys/module/memory_hotplug/parameters/memmap_on_memory").strip(),
    }


def going_offline(g: Guest):
    """A generator: the capture happens while the block is held going-offline."""
    d = g.hotplug_dimm("512M")
    blocks = g.dimm_blocks(d)
    _online(g, blocks, "online_movable")
    with g.stuck_offline(blocks[-1]):
        yield {"dimm": d, "dimm_blocks": blocks, "going_offline": [blocks[-1]], "online_movable": blocks[:-1]}


def run_scenario(g: Guest, sc: Scenario, capture_name: str | None = None, extra: dict | None = None):
    """Bring ``g`` into ``sc``'s state and capture it: (facts, host archive path)."""
    res = sc.setup(g)
    if inspect.isgenerator(res):
        try:
            facts = next(res)
            archive = g.capture(capture_name or sc.name, sc.description, extra={"facts": facts, **(extra or {})})
        finally:
            res.close()
    else:
        facts = res
        archive = g.capture(capture_name or sc.name, sc.description, extra={"facts": facts, **(extra or {})})
    return facts, archive


SCENARIOS = {
    s.name: s
    for s in [
        Scenario(
            "two-node-dimm-offline",
            "2 NUMA nodes (512M each); a 512M DIMM hot-added on node 1 and left "
            "offline (Debian's kernel does not auto-online)",
            VMConfig(memory="1G", numa=("512M", "512M")),
            two_node_dimm_offline,
        ),
        Scenario(
            "auto-movable-virtio-mem",
            "memory_hotplug.online_policy=auto-movable memhp_default_state=online; "
            "a 2G virtio-mem device grown to 1G with qom-set requested-size",
            VMConfig(
                cmdline=("memhp_default_state=online", "memory_hotplug.online_policy=auto-movable"),
                virtio_mem=(VirtioMem("vmem0", "2G", 0, "0"),),
            ),
            auto_movable_virtio_mem,
        ),
        Scenario(
            "movablecore-mixed",
            "movablecore=300M at boot: ZONE_MOVABLE starts inside a memory block, "
            "which then spans two zones (valid_zones none)",
            VMConfig(cmdline=("movablecore=300M",)),
            movablecore_mixed,
        ),
        Scenario(
            "imbalanced",
            "1G boot memory plus three 2G DIMMs onlined movable: MOVABLE:KERNEL ~6:1",
            VMConfig(),
            imbalanced,
        ),
        Scenario(
            "memmap-on-memory-partial",
            "memory_hotplug.memmap_on_memory=1; four single-block (128M) DIMMs "
            "hot-added (memmap on the hot-added memory itself), one onlined movable, "
            "one onlined kernel (Normal), two left offline",
            VMConfig(cmdline=("memory_hotplug.memmap_on_memory=1",)),
            memmap_on_memory_partial,
        ),
        Scenario(
            "going-offline",
            "a 512M DIMM onlined movable; its last block held in going-offline "
            "(a page pinned with vmsplice, echo offline > state retrying) while captured",
            VMConfig(),
            going_offline,
        ),
    ]
}
