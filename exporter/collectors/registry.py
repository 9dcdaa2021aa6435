"""Where collectors register themselves, as node_exporter's ``registerCollector``.

Each collector module calls :func:`register_collector` once at import with its
name, whether it is on by default, and a factory; ``--collector.NAME`` flags
and the set of collectors a run builds both come from :data:`REGISTERED`, so
adding a collector is one new module and one import line, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..events.kmsg import FailureCounts
    from ..kernel.fsread import ParseErrors
    from ..kernel.paths import Paths
    from .base import SubCollector


@dataclass
class BuildContext:
    """What a factory may use: the run's settings, parsed once by the CLI."""

    paths: Paths
    errors: ParseErrors
    once: bool = False
    block_limit: int = 4096
    blocks_all: bool = False
    notable_limit: int = 32
    ranges_limit: int = 256
    resync_interval: float = 600.0
    state_interval: float = 60.0
    snapshot_mode: str = "auto"
    kmsg_replay: bool = False
    uevent_source: str = "kernel"
    enabled: frozenset[str] = frozenset()
    _failures: FailureCounts | None = None

    def failures(self) -> FailureCounts:
        """The kernel-log failure counts, shared by the collectors that use them
        (offline_failures counts them; blocks exports the failing blocks)."""
        if self._failures is None:
            from ..events.kmsg import FailureCounts

            self._failures = FailureCounts(self.block_limit)
        return self._failures


@dataclass(frozen=True)
class CollectorSpec:
    name: str
    help: str
    default_enabled: bool
    factory: Callable[[BuildContext], SubCollector | None]
    # Event collectors follow a source between scrapes: they make no sense in
    # --once mode and are not built there.
    needs_events: bool = False


# name -> spec, in registration (= exposition) order
REGISTERED: dict[str, CollectorSpec] = {}


def register_collector(
    name: str,
    help: str,
    factory: Callable[[BuildContext], SubCollector | None],
    *,
    default_enabled: bool = True,
    needs_events: bool = False,
) -> None:
    if name in REGISTERED:
        raise ValueError(f"collector {name!r} registered twice")
    REGISTERED[name] = CollectorSpec(name, help, default_enabled, factory, needs_events)


def build_enabled(enabled: frozenset[str], ctx: BuildContext) -> list[SubCollector]:
    """Instantiate the enabled collectors in registration order."""
    out: list[SubCollector] = []
    for spec in REGISTERED.values():
        if spec.name not in enabled or (spec.needs_events and ctx.once):
            continue
        collector = spec.factory(ctx)
        if collector is not None:
            out.append(collector)
    return out
