"""The metrics every memhp server exports about itself: ``process_*``,
``python_info`` (prometheus_client's standard collectors) and ``memhp_build_info``."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from . import buildinfo

BUILD_INFO_NAME = "memhp_build_info"
BUILD_INFO_HELP = "Always 1; the labels say which memhp build runs: version, git revision, Python version."


class BuildInfoCollector(Collector):
    def __init__(self) -> None:
        self._labels = buildinfo.labels()

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(BUILD_INFO_NAME, BUILD_INFO_HELP, labels=list(self._labels))
        family.add_metric(list(self._labels.values()), 1)
        yield family


def register_self_metrics(registry: CollectorRegistry) -> None:
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(BuildInfoCollector())
