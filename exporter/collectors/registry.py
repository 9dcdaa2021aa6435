"""Where collectors register themselves, as node_exporter's ``registerCollector``.

Each collector module calls :func:`register_collector` once at import with its
class, whether it is on by default, its own ``--collector.NAME.*`` flags and a
factory; ``--collector.NAME`` flags, the flags of each collector and the set of
collectors a run builds all come from :data:`REGISTERED`, so adding a
collector is one new module and one import line, nothing else.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from memhp.program import duration
from memhp.units import format_duration

if TYPE_CHECKING:
    from ..events.kmsg import FailureCounts
    from ..kernel.fsread import ParseErrors
    from ..kernel.paths import Paths
    from .base import SubCollector
    from .family import Family

T = TypeVar("T", bool, int, float, str)


@dataclass(frozen=True)
class Flag(Generic[T]):
    """``--collector.NAME``, declared in its collector's module: its default
    is the one the flag shows and the one that runs."""

    name: str  # after "--collector.", e.g. "blocks.limit"
    default: T
    help: str
    choices: tuple[str, ...] = ()
    bounds: tuple[T, T] | None = None
    unit: str = ""  # of the bounds, in the error
    duration: bool = False  # seconds, given as a duration (90s, 10m) and shown as one

    @property
    def option(self) -> str:
        return f"--collector.{self.name}"

    @property
    def dest(self) -> str:
        # A dot: cannot clash with the collector_NAME switches.
        return f"collector.{self.name}"

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        kw: dict[str, Any] = {"dest": self.dest, "default": self.default, "help": self.help}
        if self.duration:
            # A string default goes through parse_duration too: --help shows "10m", the code gets 600.0.
            kw.update(type=duration, default=format_duration(float(self.default)), metavar="DURATION")
        elif isinstance(self.default, bool):
            kw["action"] = argparse.BooleanOptionalAction if self.default else "store_true"
        else:
            kw["type"] = type(self.default)
            kw["metavar"] = self.name.rsplit(".", 1)[-1].upper().replace("-", "_")
            if self.choices:
                kw["choices"] = self.choices
                del kw["metavar"]
        parser.add_argument(self.option, **kw)

    def check(self, value: T) -> T:
        if self.bounds is not None and not self.bounds[0] <= value <= self.bounds[1]:
            if self.duration:
                low, high = (format_duration(float(b)) for b in self.bounds)
                raise ValueError(f"{self.option} must be between {low} and {high}")
            raise ValueError(f"{self.option} must be between {self.bounds[0]} and {self.bounds[1]}{self.unit}")
        return value


# flag -> value; a flag left out runs with its default
FlagValues = Mapping[Flag[Any], Any]


@dataclass
class BuildContext:
    """What a factory may use: the paths, the mode, and the collectors' flags."""

    paths: Paths
    errors: ParseErrors
    once: bool = False
    enabled: frozenset[str] = frozenset()
    flags: FlagValues = field(default_factory=dict)
    _failures: FailureCounts | None = None

    def value(self, flag: Flag[T]) -> T:
        return cast("T", self.flags.get(flag, flag.default))

    def failures(self) -> FailureCounts:
        """The kernel-log failure counts, shared by the collectors that use them
        (offline_failures counts them; blocks exports the failing blocks)."""
        if self._failures is None:
            from ..events.kmsg import FailureCounts
            from .blocks import BLOCK_LIMIT

            self._failures = FailureCounts(self.value(BLOCK_LIMIT))
        return self._failures


@dataclass(frozen=True)
class CollectorSpec:
    name: str
    help: str
    default_enabled: bool
    factory: Callable[[BuildContext], SubCollector | None]
    families: tuple[Family, ...] = ()
    flags: tuple[Flag[Any], ...] = ()
    # Event collectors follow a source between scrapes: they make no sense in
    # --once mode and are not built there.
    needs_events: bool = False


# name -> spec, in registration (= exposition) order
REGISTERED: dict[str, CollectorSpec] = {}


def register_collector(
    cls: type[SubCollector],
    factory: Callable[[BuildContext], SubCollector | None],
    *,
    flags: tuple[Flag[Any], ...] = (),
    default_enabled: bool = True,
    needs_events: bool = False,
) -> None:
    if cls.name in REGISTERED:
        raise ValueError(f"collector {cls.name!r} registered twice")
    REGISTERED[cls.name] = CollectorSpec(
        cls.name, cls.help, default_enabled, factory, cls.families, flags, needs_events
    )


def all_flags() -> list[Flag[Any]]:
    return [f for spec in REGISTERED.values() for f in spec.flags]


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
