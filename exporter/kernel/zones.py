"""Zone constants and predicates of memory-hotplug.rst, shared by the read side and the controller."""

from __future__ import annotations

import os

from .model import MOVABLE, NONE_ZONE, ZoneInfo

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Percent; mm/memory_hotplug.c's default for memory_hotplug.auto_movable_ratio.
KERNEL_DEFAULT_RATIO = 301
# ZONE_DEVICE memory is neither kernel nor movable memory for the accounting.
DEVICE_ZONE = "Device"


def is_kernel_zone(zone: str | None) -> bool:
    """A zone that serves unmovable (kernel) allocations: not Movable, not Device, not ``none``."""
    return zone is not None and zone not in (MOVABLE, NONE_ZONE, DEVICE_ZONE)


# Zones of boot memory: the kernel sizes them at boot to the lowest physical
# addresses (x86: below 16 MiB and 4 GiB), under the memory that can be
# hot-added.  A block there that also spans holes or both of them (x86's
# first block: DMA, DMA32 and the BIOS holes) has valid_zones "none" on every
# healthy host: the kernel will never offline it, and nobody asks it to.
BOOT_DMA_ZONES = ("DMA", "DMA32")

# (zone name, first byte, end byte) of a zone's span
Span = tuple[str, int, int]


def zone_spans(zoneinfo: ZoneInfo | None, page_size: int = PAGE_SIZE) -> tuple[Span, ...]:
    """Physical byte ranges ``[start, end)`` spanned by each populated-span zone
    on every node, from zoneinfo's ``start_pfn`` and ``spanned``; empty when
    zoneinfo could not be read."""
    if zoneinfo is None:
        return ()
    spans = []
    for z in zoneinfo.zones:
        start = z.fields.get("start_pfn")
        if z.spanned and start is not None:
            spans.append((z.name, start * page_size, (start + z.spanned) * page_size))
    return tuple(sorted(spans))


def is_boot_dma(start: int, end: int, spans: tuple[Span, ...]) -> bool:
    """``[start, end)`` overlaps ZONE_DMA or ZONE_DMA32 and no other zone: boot
    memory.  A block that also reaches into ZONE_MOVABLE (``movablecore=`` not
    a multiple of the block size) is not: part of it was meant to be
    hot-unpluggable and never will be."""
    touched = {name for name, s_start, s_end in spans if start < s_end and s_start < end}
    return bool(touched) and touched <= set(BOOT_DMA_ZONES)
