"""``memhp_source_available``: whether each source the collectors read is usable.

The check itself is the read model's (:mod:`..kernel.sources`); this module
turns it into the metric, and logs a source once when it becomes unusable
(ERROR; WARN for a kernel without memory hotplug, which is a fact about the
host rather than a mistake) and once when it is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from prometheus_client.core import Metric

from ..kernel.paths import Paths
from ..kernel.sources import NO_MEMORY_HOTPLUG, OK, REASONS, SourceStatus, check_sources
from .family import Family

log = logging.getLogger(__name__)

SOURCE_AVAILABLE = Family(
    "memhp_source_available",
    "gauge",
    "1 if the exporter can read this source; 0 with the reason why not.",
    ("source", "path", "reason"),
    doc="1 if the exporter can read this source (`sysfs_memory`: `<--path.sysfs>/devices/system/memory`; "
    "`zoneinfo`, `meminfo`: files of `--path.procfs`), 0 if not, with the reason: "
    + ", ".join(f"`{r}`" for r in REASONS)
    + ". One series per source an enabled collector reads. The collectors that need an unavailable source do "
    "not run: their `memhp_collector_success` is 0. Alert: MemhpSourceUnavailable.",
)


class SourceWatch:
    """Checks the sources ``wanted`` on each call and logs the changes."""

    def __init__(self, paths: Paths, wanted: Iterable[str]) -> None:
        self.paths = paths
        self.wanted = frozenset(wanted)
        self._lock = threading.Lock()
        self._last: dict[str, str] = {}

    def check(self) -> dict[str, SourceStatus]:
        statuses = {s.source: s for s in check_sources(self.paths, self.wanted)}
        with self._lock:
            changed = [s for s in statuses.values() if self._last.get(s.source, OK) != s.reason]
            first = not self._last
            self._last = {name: s.reason for name, s in statuses.items()}
        for s in changed:
            self._log(s, first)
        return statuses

    @staticmethod
    def _log(s: SourceStatus, first: bool) -> None:
        if s.available:
            log.info("source %s is readable again: %s", s.source, s.path)
            return
        level = logging.WARNING if s.reason == NO_MEMORY_HOTPLUG else logging.ERROR
        log.log(
            level,
            "source %s unavailable (%s): %s; the collectors reading it export nothing%s",
            s.source,
            s.reason,
            s.detail,
            "" if first else " until it is back",
        )


def source_families(statuses: Iterable[SourceStatus]) -> list[Metric]:
    family = SOURCE_AVAILABLE.new()
    for s in statuses:
        family.add_metric([s.source, s.path, s.reason], 1.0 if s.available else 0.0)
    return [family]
