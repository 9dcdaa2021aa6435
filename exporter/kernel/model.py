"""The typed model of memory hot(un)plug state, as the kernel exposes it.

Plain data only: readers fill it (``memory_blocks``, ``nodes``, ``hotplug_params``,
``zoneinfo``, ``meminfo``), the collectors and the controller consume it.
``None`` always means "the kernel did not tell us" (a file that is absent on
this kernel, or that could not be read or parsed), never zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BLOCK_STATES = ("online", "offline", "going-offline")
# Block ids are physical address / block size: 8 digits cover 2^52 bytes at 128 MiB blocks.
MAX_BLOCK_DIGITS = 10


def parse_block_name(name: str) -> int | None:
    """N of a ``memoryN`` name, N 1-10 ASCII digits; None for anything else: ``memory_failure``,
    ``memory²`` (``str.isdigit`` says yes, ``int`` raises) or 5,000 digits (``int`` refuses)."""
    digits = name[6:]
    if name.startswith("memory") and 0 < len(digits) <= MAX_BLOCK_DIGITS and digits.isascii() and digits.isdigit():
        return int(digits)
    return None


MOVABLE = "Movable"
NONE_ZONE = "none"


# Not frozen: a scrape builds up to 100k of these, and a frozen dataclass takes
# six times longer to construct. Treat instances as read-only all the same.
@dataclass(slots=True)
class MemoryBlock:
    """One ``/sys/devices/system/memory/memoryN`` directory."""

    id: int
    state: str | None = None
    removable: bool | None = None
    # For an online block: the managing zone, or ("none",) when the block spans
    # several zones or nodes (it cannot be offlined).  For an offline block: the
    # zone the kernel would pick right now first, then the alternatives.
    valid_zones: tuple[str, ...] | None = None
    node: int | None = None
    # Detail attributes, read only when asked for (they cost a read per block
    # and no metric needs them): ``online`` duplicates ``state``, ``phys_index``
    # is the block id, ``phys_device`` is an s390x legacy.
    online: bool | None = None
    phys_index: int | None = None
    phys_device: int | None = None

    @property
    def zone(self) -> str | None:
        """Current zone (online) or the kernel's default candidate (offline)."""
        return self.valid_zones[0] if self.valid_zones else None

    @property
    def offlinable(self) -> bool:
        """False when ``valid_zones`` is ``none``: mixed zones, mixed nodes or holes."""
        return self.zone != NONE_ZONE

    def start(self, block_size: int) -> int:
        return self.id * block_size

    def end(self, block_size: int) -> int:
        """Last byte address, inclusive, as lsmem prints ranges."""
        return (self.id + 1) * block_size - 1


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """Top-level files of ``/sys/devices/system/memory``."""

    block_size_bytes: int | None = None
    auto_online_blocks: str | None = None
    crash_hotplug: bool | None = None
    probe_present: bool = False


@dataclass(frozen=True, slots=True)
class HotplugParams:
    """``/sys/module/memory_hotplug/parameters``."""

    online_policy: str | None = None
    auto_movable_ratio: int | None = None  # percent, kernel default 301
    auto_movable_numa_aware: bool | None = None
    memmap_on_memory: str | None = None  # "Y", "N" or "force" on newer kernels


@dataclass(frozen=True, slots=True)
class Node:
    """``/sys/devices/system/node/nodeN``."""

    id: int
    blocks: tuple[int, ...] = ()
    has_memory: bool | None = None
    has_normal_memory: bool | None = None
    online: bool | None = None


@dataclass(slots=True)
class Zone:
    """One ``Node N, zone NAME`` section of ``/proc/zoneinfo``, in pages."""

    node: int
    name: str
    free: int | None = None
    min: int | None = None
    low: int | None = None
    high: int | None = None
    spanned: int | None = None
    present: int | None = None
    managed: int | None = None
    cma: int | None = None
    fields: dict[str, int] = field(default_factory=dict)

    @property
    def populated(self) -> bool:
        # populated_zone() in the kernel: present_pages != 0
        return bool(self.present)

    @property
    def movable(self) -> bool:
        return self.name == MOVABLE


@dataclass(slots=True)
class ZoneInfo:
    zones: list[Zone] = field(default_factory=list)
    # The "per-node stats" block printed under each node's first zone.
    node_stats: dict[int, dict[str, int]] = field(default_factory=dict)

    def by_node(self) -> dict[int, list[Zone]]:
        out: dict[int, list[Zone]] = {}
        for z in self.zones:
            out.setdefault(z.node, []).append(z)
        return out
