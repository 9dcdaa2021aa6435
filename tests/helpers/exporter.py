"""The exporter's registry over a tree, as ``--once`` builds it: shared by tests/exporter."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from memhp.exporter.cli import ExporterConfig, build_registry
from memhp.exporter.kernel.paths import Paths


def registry_for(root, **kw) -> CollectorRegistry:
    cfg = ExporterConfig(paths=Paths(str(root / "sys"), str(root / "proc")), once=True, **kw)
    return build_registry(cfg)[0]
