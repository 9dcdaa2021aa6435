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

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..kernel.fsread import ParseErrors
from ..kernel.paths import Paths
from ..kernel.snapshot import ScrapeContext

log = logging.getLogger(__name__)


class SubCollector:
    """One ``--collector.NAME``: yields metric families from a scrape context.

    ``metrics`` declares every family it can yield, as (name, type): the
    registry maps names to collectors with it, which is what ``name[]``
    filtering needs (tests check it against what is emitted).
    """

    name: str = ""
    help: str = ""
    metrics: tuple[tuple[str, str], ...] = ()

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Stop background work (monitors, watchers)."""


class MemhpCollector(Collector):
    def __init__(
        self,
        paths: Paths,
        collectors: Sequence[SubCollector],
        errors: ParseErrors | None = None,
        version: str = "",
        per_block_limit: int | None = None,
    ) -> None:
        self.paths = paths
        self.per_block_limit = per_block_limit
        self.collectors = list(collectors)
        self.errors = errors or ParseErrors()
        self.version = version

    # Families of the wrapper itself, besides the sub-collectors'.
    metrics: tuple[tuple[str, str], ...] = (
        ("memhp_collector_duration_seconds", "gauge"),
        ("memhp_collector_success", "gauge"),
        ("memhp_parse_errors", "counter"),
        ("memhp_exporter_build_info", "gauge"),
    )

    def describe(self) -> list[Metric]:
        """Empty families for every declared metric: no scrape on register."""
        declared = list(self.metrics)
        for c in self.collectors:
            declared += c.metrics
        return [Metric(name, "", typ) for name, typ in declared]

    def collect(self) -> Iterable[Metric]:
        ctx = ScrapeContext(self.paths, self.errors, removable_limit=self.per_block_limit)
        duration = GaugeMetricFamily(
            "memhp_collector_duration_seconds", "Time a collector took in this scrape.", labels=["collector"]
        )
        success = GaugeMetricFamily(
            "memhp_collector_success",
            "1 if the collector finished without an exception in this scrape.",
            labels=["collector"],
        )
        for c in self.collectors:
            start = time.perf_counter()
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
        errors = CounterMetricFamily(
            "memhp_parse_errors", "Files that could not be read or parsed, by file kind.", labels=["file"]
        )
        for kind, count in sorted(self.errors.counts().items()):
            errors.add_metric([kind], count)
        yield errors
        info = GaugeMetricFamily("memhp_exporter_build_info", "memhp exporter version.", labels=["version"])
        info.add_metric([self.version], 1)
        yield info

    def close(self) -> None:
        for c in self.collectors:
            c.close()


def node_label(node: int | None) -> str:
    return "unknown" if node is None else str(node)


def gauge(name: str, doc: str, value: float | None) -> list[Metric]:
    """A single unlabelled gauge, or nothing when the kernel did not say."""
    if value is None:
        return []
    return [GaugeMetricFamily(name, doc, value=value)]
