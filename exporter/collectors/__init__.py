"""The exporter's collectors, by ``--collector.NAME``.

Each module registers its collector on import (:mod:`.registry`); the import
order below is the exposition order.
"""

from __future__ import annotations

# isort: off
from . import config, blocks, zones, meminfo, events  # noqa: F401 - registration order

# isort: on
from .base import MemhpCollector, SubCollector
from .blocks import BlocksCollector, GoingOfflineTracker
from .config import ConfigCollector
from .events import OfflineFailuresCollector, UeventsCollector
from .family import Family
from .meminfo import MeminfoCollector
from .registry import (
    REGISTERED,
    BuildContext,
    CollectorSpec,
    Flag,
    FlagValues,
    all_flags,
    build_enabled,
    register_collector,
)
from .zones import ZonesCollector

# name -> one-line description, in exposition order
COLLECTORS = {name: spec.help for name, spec in REGISTERED.items()}

__all__ = [
    "COLLECTORS",
    "REGISTERED",
    "BlocksCollector",
    "BuildContext",
    "CollectorSpec",
    "ConfigCollector",
    "Family",
    "Flag",
    "FlagValues",
    "GoingOfflineTracker",
    "MemhpCollector",
    "MeminfoCollector",
    "OfflineFailuresCollector",
    "SubCollector",
    "UeventsCollector",
    "ZonesCollector",
    "all_flags",
    "build_enabled",
    "register_collector",
]
