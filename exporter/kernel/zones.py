"""Zone constants and predicates of memory-hotplug.rst, shared by the read side and the controller."""

from __future__ import annotations

import os

from .model import MOVABLE, NONE_ZONE

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# Percent; mm/memory_hotplug.c's default for memory_hotplug.auto_movable_ratio.
KERNEL_DEFAULT_RATIO = 301
# ZONE_DEVICE memory is neither kernel nor movable memory for the accounting.
DEVICE_ZONE = "Device"


def is_kernel_zone(zone: str | None) -> bool:
    """A zone that serves unmovable (kernel) allocations: not Movable, not Device, not ``none``."""
    return zone is not None and zone not in (MOVABLE, NONE_ZONE, DEVICE_ZONE)
