"""Where the exporter looks: every root is injectable so that fixture trees,
captured guests and the real machine are read by the same code."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Paths:
    sysfs: str = "/sys"
    procfs: str = "/proc"
    kmsg: str = "/dev/kmsg"

    @property
    def memory(self) -> str:
        return os.path.join(self.sysfs, "devices", "system", "memory")

    @property
    def node(self) -> str:
        return os.path.join(self.sysfs, "devices", "system", "node")

    @property
    def hotplug_params(self) -> str:
        return os.path.join(self.sysfs, "module", "memory_hotplug", "parameters")

    @property
    def zoneinfo(self) -> str:
        return os.path.join(self.procfs, "zoneinfo")

    @property
    def meminfo(self) -> str:
        return os.path.join(self.procfs, "meminfo")
