"""One notification's deliveries to many targets, within one deadline, starving no other notification.

A shared pool with a queue in front of it let one notification for hundreds of
unresponsive nodes hold every worker for minutes, while other notifications
queued behind it (issue 19).  Here:

* the request's own thread always delivers, so a notification never waits for
  a shared thread to start its first delivery;
* helper threads from a shared, bounded set join in, at most
  ``parallelism - 1`` per notification, taken without waiting: when none is
  free the notification goes on with fewer, and takes more as they free up;
* every delivery of a notification has the same absolute deadline, set when
  the notification arrived; one not started by then fails at once (reason
  ``deadline``) without a connection;
* the request waits for its helpers at most until the deadline plus
  :data:`SLACK`: a notification is answered then, whatever its target count.

An unresponsive target therefore costs a thread for at most the deadline, and
no other notification's targets are ever queued behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from memhp.controller.alert import Alert

from .delivery import DeliveryFailed

log = logging.getLogger(__name__)

SLACK = 1.0  # beyond the deadline, for helpers to report (each delivery is bounded by the deadline itself)
DEFAULT_PARALLELISM = 32
DEFAULT_WORKERS = 256

Deliver = Callable[[str, Sequence[Alert], float], None]


class Helpers:
    """A bounded set of shared threads, lent without waiting."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max(1, size), thread_name_prefix="memhp-relay-fanout")

    @property
    def busy(self) -> int:
        with self._lock:
            return self.size - self._free

    def take(self, wanted: int) -> int:
        """Reserve up to ``wanted`` threads; how many were reserved (maybe 0)."""
        with self._lock:
            n = max(0, min(wanted, self._free))
            self._free -= n
            return n

    def run(self, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on one reserved thread, which is given back when ``fn`` returns;
        False (and the thread given back) once closed.

        The pool has one thread per reservation, so ``fn`` never waits in its queue.
        """

        def give_back() -> None:
            with self._lock:
                self._free += 1

        def job() -> None:
            try:
                fn()
            finally:
                give_back()

        try:
            self._pool.submit(job)
        except RuntimeError:  # shut down: the notification goes on with the threads it has
            give_back()
            return False
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Notification:
    """The deliveries of one notification: a queue its own thread and its helpers take from."""

    def __init__(self, items: Sequence[tuple[str, Sequence[Alert]]], deliver: Deliver, deadline: float) -> None:
        self._items = deque(items)
        self._deliver = deliver
        self.deadline = deadline
        self.failures: list[str] = []
        self._running = 0  # helpers not yet finished
        self._cond = threading.Condition()

    def run(self, helpers: Helpers, parallelism: int) -> list[str]:
        """Deliver everything (this thread and up to ``parallelism - 1`` helpers); the failures.

        Returns by the deadline plus SLACK; a helper still busy then counts as a failure.
        """
        lent = 0
        while True:
            with self._cond:
                if not self._items:
                    break
                url, alerts = self._items.popleft()
                wanted = min(len(self._items), parallelism - 1 - lent)
            got = helpers.take(wanted) if wanted > 0 else 0
            for _ in range(got):
                self._start_helper(helpers)
            lent += got
            self._one(url, alerts)
        return self._wait()

    def _start_helper(self, helpers: Helpers) -> None:
        with self._cond:
            self._running += 1
        if not helpers.run(self._helper):
            with self._cond:
                self._running -= 1

    def _helper(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._items:
                        return
                    url, alerts = self._items.popleft()
                self._one(url, alerts)
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def _one(self, url: str, alerts: Sequence[Alert]) -> None:
        # Past the deadline the deliverer fails at once, without connecting.
        try:
            self._deliver(url, alerts, self.deadline)
            return
        except DeliveryFailed as e:
            failure = str(e)
        except Exception as e:  # noqa: BLE001 - a bug in one delivery must not lose the others' answers
            log.error("delivery to %s crashed: %r", url, e)
            failure = f"{url}: {e!r}"
        with self._cond:
            self.failures.append(failure)

    def _wait(self) -> list[str]:
        until = self.deadline + SLACK
        with self._cond:
            while self._running:
                left = until - time.monotonic()
                if left <= 0:
                    self.failures += ["a delivery still running past the deadline"] * self._running
                    break
                self._cond.wait(left)
            return list(self.failures)
