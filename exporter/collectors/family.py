"""A metric family declared once: what a collector emits, what ``describe()``
says and the row of docs/metrics.md all come from one :class:`Family`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..exposition import PrerenderedFamily

Kind = Literal["gauge", "counter"]


@dataclass(frozen=True)
class Family:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    # The meaning in docs/metrics.md, where it says more than HELP does.
    doc: str = ""

    def new(self) -> GaugeMetricFamily | CounterMetricFamily:
        """The family, empty: add one sample per label set."""
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, labels=self.labels)
        return GaugeMetricFamily(self.name, self.help, labels=self.labels)

    def value(self, value: float) -> Metric:
        """The family with its one unlabelled sample."""
        if self.labels:
            raise ValueError(f"{self.name} has labels {self.labels}: use new()")
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, value=value)
        return GaugeMetricFamily(self.name, self.help, value=value)

    def optional(self, value: float | None) -> list[Metric]:
        """The family, or nothing when the kernel did not say."""
        return [] if value is None else [self.value(value)]

    def prerendered(self, rows: Sequence[tuple[Sequence[str], float]]) -> PrerenderedFamily:
        if self.kind != "gauge":
            raise ValueError(f"{self.name}: only gauges are prerendered")
        return PrerenderedFamily(self.name, self.help, self.labels, rows)

    def describe(self) -> Metric:
        return Metric(self.name, self.help, self.kind)

    @property
    def exposed_name(self) -> str:
        """The name samples carry: counters with ``_total``."""
        return f"{self.name}_total" if self.kind == "counter" else self.name

    def doc_row(self) -> str:
        labels = "{" + ",".join(self.labels) + "}" if self.labels else ""
        return f"| `{self.exposed_name}{labels}` | {self.kind} | {self.doc or self.help} |"
