"""Counts kernel uevents of the ``memory`` subsystem with a pyudev netlink
monitor in a background thread, restarted on error."""

from __future__ import annotations

import logging
import threading
from collections import Counter

log = logging.getLogger(__name__)


class UeventMonitor:
    def __init__(self, source: str = "kernel", poll_timeout: float = 1.0) -> None:
        # "kernel" listens to the kernel's own broadcast and needs no udev
        # daemon (VM guests and containers often have none); "udev" sees events
        # only after udevd processed them.
        self.source = source
        self.poll_timeout = poll_timeout
        self.up = False
        self.restarts = 0
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memhp-uevents", daemon=True)

    def start(self) -> "UeventMonitor":
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _run(self) -> None:
        import pyudev  # imported here: libudev is only needed when the collector is on

        backoff = 1.0
        while not self._stop.is_set():
            try:
                monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=self.source)
                monitor.filter_by(subsystem="memory")
                monitor.start()
                self.up = True
                backoff = 1.0
                while not self._stop.is_set():
                    device = monitor.poll(timeout=self.poll_timeout)
                    if device is not None and device.action:
                        with self._lock:
                            self._counts[device.action] += 1
            except Exception as e:  # noqa: BLE001 - any failure: count, back off, restart
                self.up = False
                self.restarts += 1
                log.warning("uevent monitor failed: %s; restarting in %.0fs", e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
        self.up = False
