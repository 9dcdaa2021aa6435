"""Bounded waiting: poll a condition until a deadline instead of sleeping."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    desc: str = "condition",
    *,
    last: Callable[[], Any] | None = None,
    catch: tuple[type[BaseException], ...] = (Exception,),
    error: Callable[[str], BaseException] = AssertionError,
) -> T:
    """Return the first truthy value of ``condition()``; raise ``error`` after ``timeout`` seconds.

    Exceptions in ``catch`` raised by ``condition`` count as "not yet" and the
    last one is reported on timeout, with ``last()`` if given (what was seen).
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last_exc = None
        except catch as e:
            last_exc = e
        if time.monotonic() >= deadline:
            extra = ""
            if last is not None:
                with contextlib.suppress(Exception):
                    extra = f"; last seen: {last()!r}"[:4000]
            if last_exc is not None:
                extra += f"; last error: {last_exc!r}"
            raise error(f"timed out after {timeout:g}s waiting for {desc}{extra}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
