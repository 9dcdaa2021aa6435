"""Bounded waiting: poll a condition until a deadline instead of sleeping."""

from __future__ import annotations

import socket
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
               desc: str = "condition") -> T:
    """Return the first truthy value of ``condition()``; AssertionError after ``timeout`` seconds.

    Exceptions raised by ``condition`` count as "not yet" and the last one is
    reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - reported below
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {desc}{extra}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
