"""The controller's journal: append-only JSON Lines, every record fsynced, rotated by size and age.

One record is one ``os.write`` of one line to a file opened ``O_APPEND``,
followed by ``fsync``: a ``kill -9`` at any instant leaves either the whole
line or nothing.  An append that fails part-way (disk full: ENOSPC, EDQUOT,
EIO) is rolled back: the file is truncated to where it ended before, so a
later record never lands glued to a fragment, and the caller gets a
:class:`JournalError` (the executor then refuses the action).  A torn last
line left by power loss is skipped when reading and fenced off with a newline
before the next append.

Every line is validated into its record type (:mod:`controller.records`).
A line that is not a valid record is kept in the file, skipped, logged and
counted (``memhp_controller_journal_invalid_records_total``); start-up goes on.

Rotation: once the file is larger than ``max_bytes`` or its first record is
older than ``max_age``, it is hard-linked to ``<path>.1`` (older ones shift up
to ``<path>.<keep>``; beyond that they are deleted) and replaced atomically by
a new file that starts with a ``rotated`` record and the ``state_*`` records
carrying what the guards must remember.  So start-up reads one bounded file
whatever the history, and memory holds only the guards' state.

The record kinds and their fields are documented in docs/controller.md
("Journal"); their types are in :mod:`controller.records`.
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
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

import msgspec

from .records import (
    ActionEnd,
    ActionStart,
    AttemptEnd,
    AttemptStart,
    InvalidRecord,
    Reconcile,
    ReconcileAction,
    Record,
    Rotated,
    parse_line,
    parse_record,
)

log = logging.getLogger(__name__)

MAX_LINE = 64 << 10
_READ_CHUNK = 1 << 20


def new_action_id() -> str:
    return uuid.uuid4().hex[:16]


class JournalError(OSError):
    pass


class Journal:
    def __init__(
        self,
        path: str,
        clock: Callable[[], float] = time.time,
        *,
        max_bytes: int = 16 << 20,
        max_age: float = 7 * 86400.0,
        keep: int = 3,
        on_invalid: Callable[[], None] | None = None,
        on_append_error: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.clock = clock
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.keep = keep
        self.on_invalid = on_invalid
        self.on_append_error = on_append_error
        self._fd: int | None = None
        self._lock = threading.RLock()
        self._rfile: BinaryIO | None = None
        self._read_offset = 0
        self._pending = b""
        self._first_ts: float | None = None  # of the file being read, for rotation by age
        self.corrupt_lines = 0
        self.rotations = 0
        self._suspect = False  # the file may end with a fragment of ours
        self._carried = 0  # bytes of state the last rotation by this process carried over

    # --- writing ---------------------------------------------------------------------------

    def open(self) -> Journal:
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, mode=0o750, exist_ok=True)
        with self._lock:
            self._open_fd()
        return self

    def _open_fd(self) -> None:
        created = not os.path.exists(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        if created:
            _fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        with _flocked(fd):
            # Fence off a torn last line so the next record starts on its own line.
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        try:
                            os.write(fd, b"\n")
                            os.fsync(fd)
                        except OSError as e:  # disk full: the next append fences or fails
                            self._suspect = True
                            log.warning("journal %s: cannot fence a torn last line: %s", self.path, e)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._rfile is not None:
                self._rfile.close()
                self._rfile = None

    def __enter__(self) -> Journal:
        return self if self._fd is not None else self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def append(self, record: Record) -> Record:
        """Write one record durably, whole or not at all; returns it with ``ts`` and ``pid`` set."""
        rec = msgspec.structs.replace(record, ts=round(self.clock(), 6), pid=os.getpid())
        doc = rec.to_json()
        try:
            parse_record(doc)  # what is written must read back: a bad field is a bug, caught here
        except InvalidRecord as e:
            raise JournalError(errno.EINVAL, f"refusing to journal an invalid record: {e}") from None
        line = (json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
        if len(line) > MAX_LINE:
            raise JournalError(errno.E2BIG, f"journal record larger than {MAX_LINE} bytes")
        with self._lock:
            if self._fd is None:
                raise JournalError(errno.EBADF, "journal is not open")
            while True:
                fd = self._fd
                with _flocked(fd):
                    if self._same_file(fd):
                        self._write_whole(fd, line)
                        return rec
                self._open_fd()  # another process rotated the file: append to the new one

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _write_whole(self, fd: int, line: bytes) -> None:
        start = os.fstat(fd).st_size
        if start and self._suspect:
            # A fragment may be left by a failed rollback: fence it first.
            with open(self.path, "rb") as f:
                f.seek(start - 1)
                if f.read(1) != b"\n":
                    line = b"\n" + line
        try:
            n = os.write(fd, line)
            if n != len(line):
                raise OSError(errno.ENOSPC, "short write (disk full)")
            os.fsync(fd)
            self._suspect = False
        except OSError as e:
            rolled = self._rollback(fd, start)
            self._suspect = not rolled
            if self.on_append_error is not None:
                self.on_append_error()
            log.error(
                "journal %s: append failed (%s); %s",
                self.path,
                e.strerror or e,
                "record rolled back" if rolled else "rollback failed: the fragment is fenced at the next append",
            )
            raise JournalError(e.errno or errno.EIO, f"journal append failed: {e.strerror or e}") from None

    def _rollback(self, fd: int, size: int) -> bool:
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
            return True
        except OSError:
            return False

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

    # --- rotation --------------------------------------------------------------------------

    def rotation_due(self) -> str:
        """Why the file should rotate now ("" if it should not)."""
        if self._fd is None:
            return ""
        with self._lock:
            if not self._same_file(self._fd):  # another process rotated it
                self._open_fd()
        try:
            size = os.fstat(self._fd).st_size
        except OSError:
            return ""
        # What a rotation carries over (the guards' state) does not count toward the size, or a
        # state larger than max_bytes would rotate at every action.
        if size > self.max_bytes and size - self._carried >= self.max_bytes // 2:
            return f"size {size} > {self.max_bytes} bytes"
        if self._first_ts is not None and self.clock() - self._first_ts > self.max_age and size > 0:
            return f"first record older than {self.max_age:.0f}s"
        return ""

    def rotate(self, state: Iterable[Record], reason: str) -> None:
        """Replace the file by one holding ``state``; the old one becomes ``<path>.1``.

        Call with the action lock held and the guards refreshed (``state`` is
        what they remember).  On any error the old file stays in place.
        """
        with self._lock:
            if self._fd is None:
                raise JournalError(errno.EBADF, "journal is not open")
            fd = self._fd
            tmp = f"{self.path}.rotating"
            now = round(self.clock(), 6)
            pid = os.getpid()
            lines = [Rotated(previous=f"{self.path}.1", reason=reason), *state]
            data = b"".join(
                (
                    json.dumps(
                        msgspec.structs.replace(r, ts=now, pid=pid).to_json(),
                        separators=(",", ":"),
                        ensure_ascii=False,
                    )
                    + "\n"
                ).encode("utf-8", "backslashreplace")
                for r in lines
            )
            with _flocked(fd):
                try:
                    _write_synced(tmp, data)
                    self._shift_rotated(fd)
                    linked = False
                    if self.keep > 0:
                        os.link(self.path, f"{self.path}.1")
                        linked = True
                    try:
                        os.replace(tmp, self.path)
                    except OSError:
                        if linked:  # the same records must not be in two files
                            os.unlink(f"{self.path}.1")
                        raise
                    _fsync_dir(os.path.dirname(os.path.abspath(self.path)))
                except OSError as e:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    if self.on_append_error is not None:
                        self.on_append_error()
                    raise JournalError(e.errno or errno.EIO, f"journal rotation failed: {e.strerror or e}") from None
            self._open_fd()
            self._carried = len(data)
            self.rotations += 1
            log.info("journal %s rotated (%s): %d state records carried over", self.path, reason, len(lines) - 1)

    def _shift_rotated(self, fd: int) -> None:
        """``<path>.N`` becomes ``<path>.N+1``, the oldest kept one is dropped:
        ``<path>.1`` is free for the file being rotated out."""
        first = f"{self.path}.1"
        with contextlib.suppress(FileNotFoundError):
            if os.stat(first).st_ino == os.fstat(fd).st_ino:
                # A rotation died between its link and its replace: drop that link, made again by the caller.
                os.unlink(first)
        for i in range(self.keep, 0, -1):
            older = f"{self.path}.{i}"
            with contextlib.suppress(FileNotFoundError):
                if i == self.keep:
                    os.unlink(older)
                else:
                    os.replace(older, f"{self.path}.{i + 1}")

    # --- reading ---------------------------------------------------------------------------

    def read_all(self) -> Iterator[Record]:
        """Every valid record of the current file from its start (does not move the refresh offset)."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return
        with f:
            for line in _lines(f):
                rec = self._parse(line, count=False)
                if rec is not None:
                    yield rec

    def iter_new(self) -> Iterator[Record]:
        """Records appended (by any process) since the previous call, streamed.

        Follows a rotation by another process: the old file's tail first, then
        the new file from its start.
        """
        with self._lock:
            while True:
                if self._rfile is None:
                    try:
                        self._rfile = open(self.path, "rb")
                    except FileNotFoundError:
                        return
                    self._read_offset, self._pending, self._first_ts = 0, b"", None
                f = self._rfile
                f.seek(self._read_offset)
                while True:
                    chunk = f.read(_READ_CHUNK)
                    if not chunk:
                        break
                    self._read_offset += len(chunk)
                    data = self._pending + chunk
                    lines = data.split(b"\n")
                    self._pending = lines.pop()  # an incomplete last line waits for its end
                    if len(self._pending) > MAX_LINE:  # never buffer a runaway line
                        self._invalid(f"a line longer than {MAX_LINE} bytes")
                        self._pending = b""
                        self._skip_to_newline(f)
                    for line in lines:
                        rec = self._parse(line, count=True)
                        if rec is not None:
                            if self._first_ts is None:
                                self._first_ts = rec.ts
                            yield rec
                try:
                    rotated = os.stat(self.path).st_ino != os.fstat(f.fileno()).st_ino
                except FileNotFoundError:
                    rotated = False
                if not rotated:
                    return
                f.close()
                self._rfile = None

    def _skip_to_newline(self, f: BinaryIO) -> None:
        while True:
            chunk = f.read(_READ_CHUNK)
            if not chunk:
                self._pending = b""
                return
            i = chunk.find(b"\n")
            if i >= 0:
                self._read_offset += i + 1
                f.seek(self._read_offset)
                return
            self._read_offset += len(chunk)

    def read_new(self) -> list[Record]:
        return list(self.iter_new())

    def _invalid(self, why: str) -> None:
        self.corrupt_lines += 1
        if self.on_invalid is not None:
            self.on_invalid()
        log.warning("journal %s: skipping an invalid line (%s); it stays in the file", self.path, why)

    def _parse(self, line: bytes, *, count: bool) -> Record | None:
        line = line.strip()
        if not line:
            return None
        why = ""
        if len(line) > MAX_LINE:
            why = f"longer than {MAX_LINE} bytes"
        else:
            try:
                return parse_line(line)
            except (ValueError, RecursionError) as e:  # InvalidRecord is a ValueError
                why = str(e)[:200] if isinstance(e, InvalidRecord) else "not JSON"
        if count:
            self._invalid(why)
        return None


def _lines(f: BinaryIO) -> Iterator[bytes]:
    pending = b""
    while True:
        chunk = f.read(_READ_CHUNK)
        if not chunk:
            return  # a last line without its newline is torn: skipped
        parts = (pending + chunk).split(b"\n")
        pending = parts.pop()
        if len(pending) > MAX_LINE:
            pending = b"x" * (MAX_LINE + 1)  # keep it invalid without keeping it
        yield from parts


@contextlib.contextmanager
def _flocked(fd: int):
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)


def unfinished_attempts(records: Iterable[Record]) -> list[AttemptStart]:
    """``attempt_start`` records with neither an ``attempt_end`` nor a ``reconcile``."""
    open_: dict[tuple, AttemptStart] = {}
    for r in records:
        if isinstance(r, AttemptStart):
            open_[(r.action_id, r.block, r.op, r.attempt)] = r
        elif isinstance(r, (AttemptEnd, Reconcile)):
            open_.pop((r.action_id, r.block, r.op, r.attempt), None)
    return list(open_.values())


def unfinished_actions(records: Iterable[Record]) -> list[ActionStart]:
    open_: dict[str, ActionStart] = {}
    for r in records:
        if isinstance(r, ActionStart):
            open_[r.action_id] = r
        elif isinstance(r, (ActionEnd, ReconcileAction)):
            open_.pop(r.action_id, None)
    return list(open_.values())


def _write_synced(path: str, data: bytes) -> None:
    """``data`` in a new file at ``path``, on disk when this returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


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
