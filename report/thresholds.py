"""The thresholds and links the review is written against, in one place
(re-point these imports when memhp has a single home for them)."""

from __future__ import annotations

RUNBOOK_BASE = "https://github.com/memhp/memhp/blob/main/docs/runbooks.md"
RATIO_WARNING = 3.0  # MOVABLE:KERNEL warning line of MemhpMovableKernelRatioHigh
RATIO_CRITICAL = 4.0  # critical line of MemhpMovableKernelRatioCritical
KERNEL_ZONES = ("DMA", "DMA32", "Normal")
