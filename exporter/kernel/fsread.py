"""Bounded single reads of sysfs/procfs files, and the parse-error ledger.

Sysfs attributes are produced whole by one read of at most a page; anything
larger is not a sysfs value and is treated as garbage.  A file that does not
exist is ``None`` (an optional attribute, or a block removed under our feet);
every other failure is counted in :class:`ParseErrors` under a bounded label
(``memoryN/state``, not the full path) and also becomes ``None``.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import Counter

ATTR_MAX = 4096
# /proc/zoneinfo grows with nodes, zones and CPUs (pagesets); 64 MiB is far
# beyond any real machine and still bounds memory if a fixture is garbage.
PROCFILE_MAX = 64 << 20

_MISSING = (errno.ENOENT, errno.ENOTDIR, errno.ENODEV)


class ParseErrors:
    """Thread-safe counts of unreadable or unparsable files, by file kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._last: dict[str, str] = {}

    def add(self, kind: str, reason: str) -> None:
        with self._lock:
            self._counts[kind] += 1
            self._last[kind] = reason

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def last_reason(self, kind: str) -> str | None:
        with self._lock:
            return self._last.get(kind)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


def read_bytes(
    name: str,
    errors: ParseErrors,
    kind: str,
    *,
    dir_fd: int | None = None,
    limit: int = ATTR_MAX,
) -> bytes | None:
    """One bounded read of a sysfs attribute, raw; None if absent or bad."""
    try:
        # O_NONBLOCK: a sysfs attribute never blocks, and neither may a FIFO
        # planted where an attribute should be (it reads as empty, not forever).
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as e:
        if e.errno not in _MISSING:
            errors.add(kind, f"open: {os.strerror(e.errno or 0)}")
        return None
    try:
        data = os.read(fd, limit + 1)
    except BlockingIOError:
        data = b""
    except OSError as e:
        if e.errno not in _MISSING:
            errors.add(kind, f"read: {os.strerror(e.errno or 0)}")
        return None
    finally:
        os.close(fd)
    if len(data) > limit:
        errors.add(kind, f"larger than {limit} bytes")
        return None
    return data


def decode_attr(data: bytes | None, errors: ParseErrors, kind: str) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        errors.add(kind, "not ASCII text")
        return None


def read_attr(
    name: str,
    errors: ParseErrors,
    kind: str,
    *,
    dir_fd: int | None = None,
    limit: int = ATTR_MAX,
) -> str | None:
    """One bounded read of a sysfs attribute, stripped; None if absent or bad."""
    return decode_attr(read_bytes(name, errors, kind, dir_fd=dir_fd, limit=limit), errors, kind)


def read_file(path: str, errors: ParseErrors, kind: str, *, limit: int = PROCFILE_MAX) -> str | None:
    """Read a procfs file whole (it may take several reads), bounded by ``limit``."""
    try:
        # O_NONBLOCK: a FIFO where /proc/zoneinfo should be fails the read instead of hanging the scrape.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        if e.errno not in _MISSING:
            errors.add(kind, f"open: {os.strerror(e.errno or 0)}")
        return None
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                errors.add(kind, f"larger than {limit} bytes")
                return None
            chunks.append(chunk)
    except OSError as e:
        errors.add(kind, f"read: {os.strerror(e.errno or 0)}")
        return None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        errors.add(kind, "not UTF-8 text")
        return None


def parse_int(text: str | None, errors: ParseErrors, kind: str, base: int = 10) -> int | None:
    if text is None:
        return None
    try:
        value = int(text, base)
    except ValueError:
        errors.add(kind, f"not an integer (base {base}): {text[:40]!r}")
        return None
    if value < 0:
        errors.add(kind, f"negative: {value}")
        return None
    return value


def parse_bool(text: str | None, errors: ParseErrors, kind: str) -> bool | None:
    """Kernel booleans: ``1``/``0`` for attributes, ``Y``/``N`` for module params."""
    if text is None:
        return None
    if text in ("1", "Y", "y"):
        return True
    if text in ("0", "N", "n"):
        return False
    errors.add(kind, f"not a boolean: {text[:40]!r}")
    return None
