"""The exporter's collectors, by ``--collector.NAME``.

Each module registers its collector on import (:mod:`.registry`); the import
order below is the exposition order.
"""

from __future__ import annotations

# isort: off
from . import config, blocks, zones, meminfo, events  # noqa: F401 - registration order

# isort: on
from .base import MemhpCollector, SubCollector
from .blocks import (
    DEFAULT_BLOCK_LIMIT,
    DEFAULT_NOTABLE_LIMIT,
    DEFAULT_RANGES_LIMIT,
    BlocksCollector,
    GoingOfflineTracker,
)
from .config import ConfigCollector
from .events import OfflineFailuresCollector, UeventsCollector
from .meminfo import MeminfoCollector
from .registry import REGISTERED, BuildContext, CollectorSpec, build_enabled, register_collector
from .zones import ZonesCollector

# name -> one-line description, in exposition order
COLLECTORS = {name: spec.help for name, spec in REGISTERED.items()}

__all__ = [
    "COLLECTORS",
    "DEFAULT_BLOCK_LIMIT",
    "DEFAULT_NOTABLE_LIMIT",
    "DEFAULT_RANGES_LIMIT",
    "REGISTERED",
    "BlocksCollector",
    "BuildContext",
    "CollectorSpec",
    "ConfigCollector",
    "GoingOfflineTracker",
    "MemhpCollector",
    "MeminfoCollector",
    "OfflineFailuresCollector",
    "SubCollector",
    "UeventsCollector",
    "ZonesCollector",
    "build_enabled",
    "register_collector",
]
