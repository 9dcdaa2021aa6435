"""What the review is written against: the alerts' thresholds and the runbook
links come from their one home, memhp/thresholds.yaml (memhp.thresholds), so
the report flags what the alerts flag."""

from __future__ import annotations

from memhp.thresholds import RUNBOOK_BASE, ratio_thresholds

RATIO_WARNING, RATIO_CRITICAL = ratio_thresholds()  # MemhpMovableKernelRatioHigh / ...Critical
# Kernel zones as the recording rules' zone label names them (DMA+DMA32+Normal, "kernel" in the charts).
KERNEL_ZONES = ("DMA", "DMA32", "Normal")

__all__ = ["KERNEL_ZONES", "RATIO_CRITICAL", "RATIO_WARNING", "RUNBOOK_BASE"]
