"""Secrets read from files, re-read when they change.

Secrets never come from the command line (it is world-readable in
``/proc/*/cmdline``).  A :class:`SecretFile` notices a change by its stat
(device, inode, size, mtime *and* ctime: an in-place rewrite that restores the
mtime still moves the ctime) and, in any case, re-reads the content at most
every :data:`RECHECK_SECONDS` and compares it, so no rewrite goes unseen for
long.  A bad new content keeps the last good secret in force.  Every
condition (gone, unreadable, invalid, readable by every user) is logged once
when it starts and once when it ends, never once per request.

Files are opened non-blocking and must be regular files, read up to a bound:
a FIFO or a device swapped in cannot hang a request.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_SECRET_BYTES = 64 * 1024
RECHECK_SECONDS = 2.0


class SecretFileError(ValueError):
    pass


def read_regular_file(path: str, limit: int = MAX_SECRET_BYTES) -> tuple[bytes, os.stat_result]:
    """The content of a regular file, at most ``limit`` bytes; SecretFileError otherwise.

    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise SecretFileError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretFileError(f"{path} is not a regular file")
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, limit + 1 - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as e:
        raise SecretFileError(f"cannot read {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if got > limit:
        raise SecretFileError(f"{path} is larger than {limit} bytes")
    return b"".join(chunks), st


def _single_line(data: bytes, path: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"secret file {path} is not UTF-8") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise SecretFileError(f"secret file {path} must hold exactly one non-empty line, found {len(lines)}")
    return lines[0]


def parse_bearer_token(data: bytes, path: str) -> bytes:
    token = _single_line(data, path)
    if any(c.isspace() for c in token):
        raise SecretFileError(f"bearer token in {path} contains whitespace")
    return token.encode("utf-8")


def parse_basic_auth(data: bytes, path: str) -> tuple[bytes, bytes]:
    line = _single_line(data, path)
    user, sep, password = line.partition(":")
    if not sep or not user or not password:
        raise SecretFileError(f"basic auth file {path} must hold one line 'user:password' (both non-empty)")
    return user.encode("utf-8"), password.encode("utf-8")


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


class SecretFile(Generic[T]):
    """A value parsed from a file, reloaded when the file changes.

    ``parse(data, path)`` turns the bytes into the value or raises
    SecretFileError.  The first load happens here and raises: a bad file fails
    start-up loudly.
    """

    def __init__(
        self,
        path: str,
        parse: Callable[[bytes, str], T],
        *,
        limit: int = MAX_SECRET_BYTES,
        private: bool = True,
        recheck: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._parse = parse
        self._limit = limit
        self._private = private  # warn when readable by every user
        self._recheck = recheck
        self._clock = clock
        self._lock = threading.Lock()
        data, st = read_regular_file(path, limit)
        self._value = parse(data, path)
        self._digest = hashlib.sha256(data).digest()
        self._key: tuple[int, ...] | None = _stat_key(st)
        self._checked = clock()
        self._problem = ""  # the condition last logged, so that it is logged once
        self._world_readable = False
        self._check_mode(st.st_mode)

    def _check_mode(self, mode: int) -> None:
        readable = bool(self._private and mode & stat.S_IROTH)
        if readable and not self._world_readable:
            log.warning(
                "secret file %s is readable by every user (mode %o); chmod 600 it", self.path, stat.S_IMODE(mode)
            )
        elif self._world_readable and not readable:
            log.info("secret file %s is no longer readable by every user", self.path)
        self._world_readable = readable

    def _report(self, problem: str, level: int = logging.ERROR) -> None:
        if problem != self._problem:
            if problem:
                log.log(level, "%s; keeping the secret last read", problem)
            else:
                log.info("secret file %s is readable again", self.path)
            self._problem = problem

    def get(self) -> T:
        try:
            key: tuple[int, ...] | None = _stat_key(os.stat(self.path))
        except OSError:
            key = None
        if key is not None and key == self._key and self._clock() - self._checked < self._recheck:
            return self._value
        with self._lock:
            self._refresh(key)
            return self._value

    def _refresh(self, key: tuple[int, ...] | None) -> None:
        self._checked = self._clock()
        if key is None:
            self._key = None
            self._report(f"secret file {self.path} has gone", logging.WARNING)
            return
        try:
            data, st = read_regular_file(self.path, self._limit)
        except SecretFileError as e:
            self._key = key
            self._report(str(e))
            return
        self._key = _stat_key(st)
        self._check_mode(st.st_mode)
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            self._report("")
            return
        try:
            value = self._parse(data, self.path)
        except SecretFileError as e:
            self._report(str(e))
            return
        self._value, self._digest = value, digest
        self._problem = ""
        log.info("secret file %s changed; reloaded", self.path)
