"""The controller's journal: append-only JSON Lines, every record fsynced.

One record is one ``os.write`` of one line to a file opened ``O_APPEND``,
followed by ``fsync``: a ``kill -9`` at any instant leaves either the whole
line or nothing (and a line that did reach the page cache survives the
process).  A torn last line (power loss mid-write) is skipped when reading
and fenced off with a newline before the next append.

Record types (field ``type``); all carry ``ts`` (Unix time) and ``pid``:

``action_start``   an action begins: ``action_id``, ``rule``, ``action``, the
                   alert ``fingerprint``/``starts_at``/``source``, ``plan``.
                   Its (fingerprint, starts_at) is the idempotency key.
``attempt_start``  before one sysfs write: ``action_id``, ``block``, ``op``,
                   ``attempt``, ``state_before``, ``zone_before``.
``attempt_end``    after it: ``errno``, ``errno_name``, ``result``,
                   ``retryable``, ``state_after``, ``zone_after``, ``duration``.
``block_result``   one block change finished (retries included): ``result``
                   ``ok`` | ``already`` | ``failed``, ``errno_name``, ``attempts``.
``action_end``     ``result``, ``changed``, ``failed``, ``duration``.
``refusal``        a guard refused: ``guard``, ``rule``, ``detail``.
``dry_run``        what would have been done.
``quarantine``     a block enters quarantine: ``block``, ``until``.
``reconcile``      written at start for every ``attempt_start`` without its
                   ``attempt_end`` (the process died mid-write): the block's
                   real ``state_now`` and ``outcome``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

MAX_LINE = 64 << 10


def new_action_id() -> str:
    return uuid.uuid4().hex[:16]


class JournalError(OSError):
    pass


class Journal:
    def __init__(self, path: str, clock=time.time) -> None:
        self.path = path
        self.clock = clock
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._read_offset = 0
        self._pending = b""
        self.corrupt_lines = 0

    # --- writing ---------------------------------------------------------------------------

    def open(self) -> Journal:
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, mode=0o750, exist_ok=True)
        created = not os.path.exists(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        if created:
            _fsync_dir(d)
        # Fence off a torn last line so the next record starts on its own line.
        size = os.fstat(self._fd).st_size
        if size:
            with open(self.path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self._fd, b"\n")
                    os.fsync(self._fd)
        return self

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> Journal:
        return self if self._fd is not None else self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write one record durably; returns it with ``ts`` and ``pid`` filled in."""
        rec = {"ts": round(self.clock(), 6), "pid": os.getpid(), **record}
        line = (json.dumps(rec, separators=(",", ":"), sort_keys=False, default=str) + "\n").encode()
        if len(line) > MAX_LINE:
            raise JournalError(errno.E2BIG, f"journal record larger than {MAX_LINE} bytes")
        with self._lock:
            if self._fd is None:
                raise JournalError(errno.EBADF, "journal is not open")
            n = os.write(self._fd, line)
            if n != len(line):  # disk full mid-line: fence it and fail loudly
                os.write(self._fd, b"\n")
                raise JournalError(errno.ENOSPC, "short write to journal")
            os.fsync(self._fd)
        return rec

    @contextlib.contextmanager
    def action_lock(self, timeout: float = 30.0, stop: threading.Event | None = None):
        """Exclusive across processes (daemon and ``act``) for one action."""
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            deadline = time.monotonic() + timeout
            ev = stop or threading.Event()
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline or ev.wait(0.05):
                        raise JournalError(
                            errno.EWOULDBLOCK, f"another controller process holds {self.path}.lock"
                        ) from None
            yield
        finally:
            os.close(fd)

    # --- reading ---------------------------------------------------------------------------

    def read_all(self) -> Iterator[dict[str, Any]]:
        """Every intact record from the start (does not move the refresh offset)."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return
        with f:
            for line in f:
                rec = self._parse(line)
                if rec is not None:
                    yield rec

    def read_new(self) -> list[dict[str, Any]]:
        """Records appended (by any process) since the previous call."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return []
        with f:
            f.seek(self._read_offset)
            data = self._pending + f.read()
            self._read_offset = f.tell()
        lines = data.split(b"\n")
        self._pending = lines.pop()  # an incomplete last line waits for its end
        out = []
        for line in lines:
            rec = self._parse(line)
            if rec is not None:
                out.append(rec)
        return out

    def _parse(self, line: bytes) -> dict[str, Any] | None:
        line = line.strip()
        if not line:
            return None
        try:
            rec = json.loads(line)
        except ValueError:
            self.corrupt_lines += 1
            log.warning("journal %s: skipping a corrupt line (%d bytes)", self.path, len(line))
            return None
        if not isinstance(rec, dict) or "type" not in rec:
            self.corrupt_lines += 1
            return None
        return rec


def unfinished_attempts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``attempt_start`` records with neither an ``attempt_end`` nor a ``reconcile``."""
    open_: dict[tuple, dict] = {}
    for r in records:
        t = r.get("type")
        key = (r.get("action_id"), r.get("block"), r.get("op"), r.get("attempt"))
        if t == "attempt_start":
            open_[key] = r
        elif t in ("attempt_end", "reconcile"):
            open_.pop(key, None)
    return list(open_.values())


def unfinished_actions(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    open_: dict[str, dict] = {}
    for r in records:
        t = r.get("type")
        if t == "action_start":
            open_[str(r.get("action_id"))] = r
        elif t in ("action_end", "reconcile_action"):
            open_.pop(str(r.get("action_id")), None)
    return list(open_.values())


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
