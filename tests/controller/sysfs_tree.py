"""Fixture trees shaped like /sys and /proc for the controller's unit tests.

Nothing here touches the machine's own /sys: every path is under the tree's
root (a pytest tmp_path).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from memhp.exporter.kernel.paths import Paths

PAGE = 4096
MiB = 1 << 20


@dataclass
class ZoneSpec:
    node: int
    name: str
    present: int  # pages
    cma: int = 0


@dataclass
class SysTree:
    root: Path
    block_size: int = 128 * MiB
    nodes: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.mem = self.root / "sys/devices/system/memory"
        self.node_dir = self.root / "sys/devices/system/node"
        self.params = self.root / "sys/module/memory_hotplug/parameters"
        self.proc = self.root / "proc"
        for d in (self.mem, self.node_dir, self.params, self.proc):
            d.mkdir(parents=True, exist_ok=True)
        (self.mem / "block_size_bytes").write_text(f"{self.block_size:x}\n")
        (self.mem / "auto_online_blocks").write_text("offline\n")
        self.set_params()
        self.set_meminfo(mem_available=8 << 30)
        self.set_zoneinfo([ZoneSpec(0, "Normal", 262144)])

    @property
    def paths(self) -> Paths:
        return Paths(sysfs=str(self.root / "sys"), procfs=str(self.proc))

    @property
    def pages_per_block(self) -> int:
        return self.block_size // PAGE

    def block_dir(self, i: int) -> Path:
        return self.mem / f"memory{i}"

    def add_block(self, i: int, state: str = "online", zones: str = "Normal", node: int = 0) -> Path:
        d = self.block_dir(i)
        d.mkdir()
        (d / "state").write_text(state + "\n")
        (d / "valid_zones").write_text(zones + "\n")
        (d / "removable").write_text("1\n")
        (d / "online").write_text("1\n" if state == "online" else "0\n")
        (d / "phys_index").write_text(f"{i:08x}\n")
        nd = self.node_dir / f"node{node}"
        nd.mkdir(exist_ok=True)
        self.nodes.add(node)
        os.symlink(f"../../node/node{node}", d / f"node{node}")
        os.symlink(f"../../memory/memory{i}", nd / f"memory{i}")
        (self.node_dir / "has_memory").write_text(",".join(map(str, sorted(self.nodes))) + "\n")
        (self.node_dir / "online").write_text(",".join(map(str, sorted(self.nodes))) + "\n")
        return d

    def state(self, i: int) -> str:
        return (self.block_dir(i) / "state").read_text().strip()

    def zones(self, i: int) -> str:
        return (self.block_dir(i) / "valid_zones").read_text().strip()

    def set_block(self, i: int, state: str, zones: str | None = None) -> None:
        (self.block_dir(i) / "state").write_text(state + "\n")
        if zones is not None:
            (self.block_dir(i) / "valid_zones").write_text(zones + "\n")

    def make_state_fifo(self, i: int) -> Path:
        p = self.block_dir(i) / "state"
        p.unlink()
        os.mkfifo(p)
        return p

    def set_params(self, policy: str = "auto-movable", ratio: int = 301, numa_aware: bool = True) -> None:
        (self.params / "online_policy").write_text(policy + "\n")
        (self.params / "auto_movable_ratio").write_text(f"{ratio}\n")
        (self.params / "auto_movable_numa_aware").write_text("Y\n" if numa_aware else "N\n")
        (self.params / "memmap_on_memory").write_text("N\n")

    def set_meminfo(self, mem_available: int, mem_total: int = 16 << 30) -> None:
        (self.proc / "meminfo").write_text(
            f"MemTotal:       {mem_total // 1024} kB\nMemFree:        {mem_available // 1024} kB\n"
            f"MemAvailable:   {mem_available // 1024} kB\n"
        )

    def set_zoneinfo(self, zones: list[ZoneSpec]) -> None:
        out = []
        for z in zones:
            out.append(
                f"Node {z.node}, zone {z.name:>8}\n"
                f"  pages free     {z.present // 2}\n        min      10\n        low      20\n"
                f"        high     30\n        spanned  {z.present}\n        present  {z.present}\n"
                f"        managed  {z.present}\n        cma      {z.cma}\n"
                f"        protection: (0, 0, 0, 0)\n"
            )
        (self.proc / "zoneinfo").write_text("".join(out))


def kernel_writer(path: str, data: bytes) -> None:
    """Test writer emulating the kernel's ``state`` store on a fixture tree.

    Runs in the actuator's child process like the real writer.  A regular
    file cannot turn ``online_movable`` into ``online`` + ``valid_zones
    Movable``; this does, and answers EINVAL as the kernel does for a state
    the block already has or a zone valid_zones does not offer.
    """
    d = os.path.dirname(path)
    token = data.decode()
    with open(path) as f:
        cur = f.read().strip()
    with open(os.path.join(d, "valid_zones")) as f:
        zones = f.read().split()
    if token == "offline":
        if cur != "online" or zones == ["none"]:
            raise OSError(errno.EINVAL, "Invalid argument")
        new_state, new_zones = "offline", ("Normal Movable" if zones[0] != "Movable" else "Movable Normal")
    elif token in ("online", "online_movable", "online_kernel"):
        if cur not in {"online", "offline"}:
            raise OSError(errno.EINVAL, "Invalid argument")
        if cur == "online":
            raise OSError(errno.EINVAL, "Invalid argument")
        if token == "online_movable":
            if "Movable" not in zones:
                raise OSError(errno.EINVAL, "Invalid argument")
            zone = "Movable"
        elif token == "online_kernel":
            kz = [z for z in zones if z not in ("Movable", "none")]
            if not kz:
                raise OSError(errno.EINVAL, "Invalid argument")
            zone = kz[0]
        else:
            zone = zones[0]
        new_state, new_zones = "online", zone
    else:
        raise OSError(errno.EINVAL, "Invalid argument")
    with open(os.path.join(d, "valid_zones"), "w") as f:
        f.write(new_zones + "\n")
    with open(path, "w") as f:
        f.write(new_state + "\n")


def errno_writer(code: int):
    """A writer failing with ``code``: only for errnos no fixture file can produce
    (EBUSY, EAGAIN, EINTR, EINVAL, EHWPOISON come from the kernel)."""

    def w(path: str, data: bytes) -> None:
        raise OSError(code, os.strerror(code))

    return w
