"""Counts kernel uevents of the ``memory`` subsystem with a pyudev netlink
monitor in a background thread, restarted on error."""

from __future__ import annotations

import threading
from collections import Counter

from memhp.background import RestartingThread


class UeventMonitor(RestartingThread):
    name = "memhp-uevents"

    def __init__(self, source: str = "kernel", poll_timeout: float = 1.0) -> None:
        super().__init__()
        # "kernel" listens to the kernel's own broadcast and needs no udev
        # daemon (VM guests and containers often have none); "udev" sees events
        # only after udevd processed them.
        self.source = source
        self.poll_timeout = poll_timeout
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def follow(self, first: bool) -> None:
        import pyudev  # imported here: libudev is only needed when the collector is on

        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=self.source)
        monitor.filter_by(subsystem="memory")
        monitor.start()
        self.up = True
        while not self._stop.is_set():
            device = monitor.poll(timeout=self.poll_timeout)
            if device is not None and device.action:
                with self._lock:
                    self._counts[device.action] += 1
