"""A real in-memory AlertSink that records what it is given and can be made full or unavailable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from memhp.controller.alert import Alert, SinkFull, SinkUnavailable

T = TypeVar("T")


class RecordingSink:
    def __init__(self) -> None:
        self.batches: list[list[Alert]] = []
        self.refused = 0  # submit() calls answered with SinkFull/SinkUnavailable
        self.full = False
        self.unavailable = False
        self._cond = threading.Condition()

    def submit(self, alerts: Sequence[Alert]) -> None:
        with self._cond:
            if self.unavailable:
                self.refused += 1
                raise SinkUnavailable("shutting down")
            if self.full:
                self.refused += 1
                raise SinkFull("queue full")
            self.batches.append(list(alerts))
            self._cond.notify_all()

    @property
    def alerts(self) -> list[Alert]:
        with self._cond:
            return [a for batch in self.batches for a in batch]

    def clear(self) -> None:
        with self._cond:
            self.batches.clear()

    def wait_for(self, predicate: Callable[[list[Alert]], T], timeout: float = 15.0, desc: str = "alerts") -> T:
        """Block until ``predicate(all alerts so far)`` is truthy and return that value; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                alerts = [a for batch in self.batches for a in batch]
                result = predicate(alerts)
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {desc}; sink has: "
                        f"{[(a.name, a.status, a.labels) for a in alerts]}"
                    )
                self._cond.wait(remaining)
