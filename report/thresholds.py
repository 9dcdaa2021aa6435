"""What the review is written against: the alerts' thresholds and the runbook
links come from their one home, memhp/thresholds.yaml (memhp.thresholds), so
the report flags what the alerts flag.

Every figure, query and label that names a line reads ``LINES`` when it runs
(never a number written in the code), so the report follows the file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memhp.thresholds import RUNBOOK_BASE, load_thresholds

# Kernel zones as the recording rules' zone label names them (DMA+DMA32+Normal, "kernel" in the charts).
KERNEL_ZONES = ("DMA", "DMA32", "Normal")


@dataclass(frozen=True)
class Lines:
    """The two MOVABLE:KERNEL lines of the alerts: warning
    (MemhpMovableKernelRatioHigh) and critical (MemhpMovableKernelRatioCritical)."""

    warning: float
    critical: float

    @classmethod
    def from_thresholds(cls, thresholds: Mapping[str, Any]) -> Lines:
        r = thresholds["movable_kernel_ratio"]
        return cls(float(r["warning"]), float(r["critical"]))

    @classmethod
    def load(cls, path: str | None = None) -> Lines:
        """The lines of the thresholds file at ``path`` (default: the packaged one)."""
        return cls.from_thresholds(load_thresholds(path))

    @property
    def warning_label(self) -> str:
        return ratio_label(self.warning)

    @property
    def critical_label(self) -> str:
        return ratio_label(self.critical)


def ratio_label(value: float) -> str:
    """A line as people write it: 3 is "3:1", 2.5 is "2.5:1"."""
    return f"{value:g}:1"


LINES = Lines.load()

__all__ = ["KERNEL_ZONES", "LINES", "RUNBOOK_BASE", "Lines", "ratio_label"]
