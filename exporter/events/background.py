"""A daemon thread that keeps one long-running source going: when it fails it
is restarted after an exponential backoff, and ``up``/``restarts`` say so."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

BACKOFF_START = 1.0
BACKOFF_MAX = 60.0


class RestartingThread:
    name = "memhp-background"

    def __init__(self) -> None:
        self.up = False
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def follow(self, first: bool) -> None:
        """Run until stopped (return) or failed (raise); set ``self.up`` once working."""
        raise NotImplementedError

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = BACKOFF_START
        first = True
        while not self._stop.is_set():
            try:
                self.follow(first)
                backoff = BACKOFF_START
            except Exception as e:  # noqa: BLE001 - any failure: count, back off, restart
                self.up = False
                self.restarts += 1
                log.warning("%s failed: %s; restarting in %.0fs", self.name, e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            first = False
        self.up = False
