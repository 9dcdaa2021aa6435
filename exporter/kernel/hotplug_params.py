"""Reader for ``/sys/module/memory_hotplug/parameters``."""

from __future__ import annotations

import os

from .fsread import ParseErrors, parse_bool, parse_int, read_attr
from .model import HotplugParams

ONLINE_POLICIES = ("contig-zones", "auto-movable")


def read_hotplug_params(params_dir: str, errors: ParseErrors) -> HotplugParams:
    def attr(name: str) -> str | None:
        return read_attr(os.path.join(params_dir, name), errors, f"memory_hotplug/{name}")

    policy = attr("online_policy")
    if policy is not None and policy not in ONLINE_POLICIES:
        errors.add("memory_hotplug/online_policy", f"unknown policy {policy[:40]!r}")
        policy = None
    memmap = attr("memmap_on_memory")
    if memmap is not None and memmap not in ("Y", "N", "force"):
        errors.add("memory_hotplug/memmap_on_memory", f"unknown value {memmap[:40]!r}")
        memmap = None
    return HotplugParams(
        online_policy=policy,
        auto_movable_ratio=parse_int(attr("auto_movable_ratio"), errors, "memory_hotplug/auto_movable_ratio"),
        auto_movable_numa_aware=parse_bool(
            attr("auto_movable_numa_aware"), errors, "memory_hotplug/auto_movable_numa_aware"
        ),
        memmap_on_memory=memmap,
    )
