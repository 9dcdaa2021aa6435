"""The exporter's collectors, by ``--collector.NAME``."""

from __future__ import annotations

from .base import MemhpCollector, SubCollector
from .blocks import DEFAULT_BLOCK_LIMIT, BlocksCollector, GoingOfflineTracker
from .config import ConfigCollector
from .events import OfflineFailuresCollector, UeventsCollector
from .meminfo import MeminfoCollector
from .zones import ZonesCollector

# name -> one-line description, in exposition order
COLLECTORS = {
    c.name: c.help
    for c in (
        ConfigCollector,
        BlocksCollector,
        ZonesCollector,
        MeminfoCollector,
        OfflineFailuresCollector,
        UeventsCollector,
    )
}

__all__ = [
    "COLLECTORS",
    "DEFAULT_BLOCK_LIMIT",
    "BlocksCollector",
    "ConfigCollector",
    "GoingOfflineTracker",
    "MemhpCollector",
    "MeminfoCollector",
    "OfflineFailuresCollector",
    "SubCollector",
    "UeventsCollector",
    "ZonesCollector",
]
