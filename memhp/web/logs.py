"""Log lines that carry what a client sent: escaped, bounded and rate-limited.

A request line or header can hold any byte: ESC and BEL would drive the
terminal of whoever reads the log, a newline would forge a second log line.
Every value from a client goes through :func:`escape` before it is logged,
and refusals a client can trigger at will are logged through a
:class:`RateLimitedLog`, so a flood of them cannot flood the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

MAX_LOGGED_CHARS = 200


def escape(value: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """Printable characters kept, the rest (controls, lone surrogates, backslash) as Python escapes."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    text = text[:limit]
    if text.isprintable() and "\\" not in text:
        out = text
    else:
        out = "".join(
            c if c.isprintable() and c != "\\" else c.encode("unicode_escape", "backslashreplace").decode("ascii")
            for c in text
        )
    return out + "…" if cut else out


class RateLimitedLog:
    """At most ``burst`` lines per ``interval`` seconds for each key; the lines
    dropped are counted and reported with the next line that gets through."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int, int]] = {}  # key -> (window start, lines, suppressed)

    def log(self, level: int, key: str, msg: str, *args: object) -> None:
        if not self._log.isEnabledFor(level):
            return
        now = self._clock()
        with self._lock:
            start, lines, suppressed = self._windows.get(key, (now, 0, 0))
            if now - start >= self._interval:
                start, lines = now, 0
            if lines >= self._burst:
                self._windows[key] = (start, lines, suppressed + 1)
                return
            self._windows[key] = (start, lines + 1, 0)
            if len(self._windows) > 1024:  # keys come from a fixed set; bound it anyway
                self._windows.clear()
        if suppressed:
            msg += " (%d similar line(s) suppressed)"
            args = (*args, suppressed)
        self._log.log(level, msg, *args)
