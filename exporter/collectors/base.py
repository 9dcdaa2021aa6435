"""The exporter's one registered collector, and the sub-collectors it runs.

Every scrape builds fresh metric families (client_python's custom-collector
pattern) from one :class:`ScrapeContext`, so each file is read at most once
per scrape.  A sub-collector that raises loses only its own metrics: its
``memhp_collector_success`` is 0 and the scrape still answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ..kernel.fsread import ParseErrors
from ..kernel.paths import Paths
from ..kernel.snapshot import ScrapeContext
from .family import Family
from .sources import SOURCE_AVAILABLE, SourceWatch, source_families

log = logging.getLogger(__name__)


class SubCollector:
    """One ``--collector.NAME``: yields metric families from a scrape context.

    ``families`` declares every family it can yield, and it yields only
    families made from them: the registry maps names to collectors with it
    (``describe()``, which is what ``name[]`` filtering needs), and
    docs/metrics.md has their table.
    """

    name: str = ""
    help: str = ""
    families: tuple[Family, ...] = ()
    # Blocks whose ``removable`` the scrape context reads with the rest.
    removable_limit: int = 0
    # What it reads (kernel.sources.SOURCES): while one is unavailable it does not run, and its
    # memhp_collector_success is 0, so an empty answer from a wrong path never looks like success.
    sources: tuple[str, ...] = ()

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Stop background work (monitors, watchers)."""


DURATION = Family("memhp_collector_duration_seconds", "gauge", "Time a collector took in this scrape.", ("collector",))
SUCCESS = Family(
    "memhp_collector_success",
    "gauge",
    "1 if the collector finished without an exception in this scrape.",
    ("collector",),
    doc="1 if the collector finished without an exception in this scrape. A failed collector loses only its own "
    "metrics.",
)
PARSE_ERRORS = Family(
    "memhp_parse_errors",
    "counter",
    "Files that could not be read or parsed, by file kind.",
    ("file",),
    doc="Files that could not be read or parsed, by kind (`memoryN/state`, `proc/zoneinfo`, …). The value is "
    "skipped, never replaced by 0.",
)
BUILD_INFO = Family("memhp_exporter_build_info", "gauge", "memhp exporter version.", ("version",), doc="Always 1.")


class MemhpCollector(Collector):
    def __init__(
        self,
        paths: Paths,
        collectors: Sequence[SubCollector],
        errors: ParseErrors | None = None,
        version: str = "",
    ) -> None:
        self.paths = paths
        self.collectors = list(collectors)
        self.errors = errors or ParseErrors()
        self.version = version
        self.removable_limit = max((c.removable_limit for c in self.collectors), default=0)
        self.source_watch = SourceWatch(paths, {s for c in self.collectors for s in c.sources})

    # Families of the wrapper itself, besides the sub-collectors'.
    families = (DURATION, SUCCESS, PARSE_ERRORS, BUILD_INFO, SOURCE_AVAILABLE)

    def describe(self) -> list[Metric]:
        """Empty families for every declared metric: no scrape on register."""
        declared = list(self.families)
        for c in self.collectors:
            declared += c.families
        return [f.describe() for f in declared]

    def collect(self) -> Iterable[Metric]:
        ctx = ScrapeContext(self.paths, self.errors, removable_limit=self.removable_limit)
        duration = DURATION.new()
        success = SUCCESS.new()
        statuses = self.source_watch.check()
        for c in self.collectors:
            start = time.perf_counter()
            if not all(statuses[s].available for s in c.sources):
                duration.add_metric([c.name], time.perf_counter() - start)
                success.add_metric([c.name], 0.0)
                continue
            try:
                # Materialise inside the try: a generator that fails half-way
                # must not leave half its families in the exposition.
                families = list(c.collect(ctx))
                ok = 1.0
            except Exception:
                log.exception("collector %s failed", c.name)
                families = []
                ok = 0.0
            duration.add_metric([c.name], time.perf_counter() - start)
            success.add_metric([c.name], ok)
            yield from families
        yield duration
        yield success
        errors = PARSE_ERRORS.new()
        for kind, count in sorted(self.errors.counts().items()):
            errors.add_metric([kind], count)
        yield errors
        info = BUILD_INFO.new()
        info.add_metric([self.version], 1)
        yield info
        yield from source_families(statuses.values())

    def close(self) -> None:
        for c in self.collectors:
            c.close()


def node_label(node: int | None) -> str:
    return "unknown" if node is None else str(node)
