"""A daemon thread that keeps one long-running source going: when it fails it
is restarted after an exponential backoff (:mod:`memhp.backoff`), and
``up``/``restarts`` say so."""

from __future__ import annotations

import logging
import threading

from tenacity.wait import wait_base

from memhp.backoff import exponential, keep_running

log = logging.getLogger(__name__)

# The exporter's background sources wait 1 s after a failure, twice that after
# each further one in a row, at most a minute.
BACKOFF_START = 1.0
BACKOFF_MAX = 60.0


def restart_backoff() -> wait_base:
    """The exporter's wait policy between restarts (read when a thread starts)."""
    return exponential(BACKOFF_START, BACKOFF_MAX)


class RestartingThread:
    name = "memhp-background"

    def __init__(self) -> None:
        self.up = False
        self.restarts = 0
        self._first = True
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
        keep_running(self._follow_once, self._stop, restart_backoff(), self._failed)
        self.up = False

    def _follow_once(self) -> None:
        first, self._first = self._first, False
        self.follow(first)

    def _failed(self, error: Exception, wait: float) -> None:
        self.up = False
        self.restarts += 1
        log.warning("%s failed: %s; restarting in %.0fs", self.name, error, wait)
