"""Offline failures from the kernel log.

offline_pages() ends a failed attempt with (mm/memory_hotplug.c)::

    memory offlining [mem 0x0000000140000000-0x0000000147ffffff] failed due to notifier failure

That line is ``pr_debug`` in current kernels: it reaches the log only with
dynamic debug on (``echo 'file memory_hotplug.c +p' >
/sys/kernel/debug/dynamic_debug/control``, or ``dyndbg`` on the command line).

:class:`KmsgWatcher` follows ``/dev/kmsg`` (or any file of such lines, for
tests) in a background thread and counts failures by reason and block.
"""

from __future__ import annotations

import errno
import os
import re
import select
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .background import RestartingThread

FAILURE = re.compile(r"memory offlining \[mem (0x[0-9a-fA-F]+)-(0x[0-9a-fA-F]+)\] failed due to ([^\n]{1,80}?)\s*$")
# /dev/kmsg record prefix: "prio,seq,usec,flags;"
KMSG_PREFIX = re.compile(r"^[0-9]+,[0-9]+,[0-9]+,[^;]*;")
OTHER_BLOCK = "other"
# offline_pages()'s reasons (mm/memory_hotplug.c, 6.x).  Exported at 0 from
# the start: a counter series that is born at 1 hides its first increase
# from increase()/rate(), and so from alerts.
KNOWN_REASONS = (
    "multizone range",
    "memory holes",
    "failure to isolate range",
    "notifier failure",
    "signal backoff",
    "unmovable page",
    "failure to dissolve huge pages",
)


@dataclass(frozen=True)
class OfflineFailure:
    start: int
    end: int  # inclusive
    reason: str

    def blocks(self, block_size: int) -> range:
        return range(self.start // block_size, self.end // block_size + 1)


def parse_failure(line: str) -> OfflineFailure | None:
    m = FAILURE.search(KMSG_PREFIX.sub("", line, count=1))
    if not m:
        return None
    start, end = int(m.group(1), 16), int(m.group(2), 16)
    if end < start:
        return None
    return OfflineFailure(start, end, m.group(3).strip())


class FailureCounts:
    """Counters fed by the watcher, read by the collector; bounded in blocks."""

    def __init__(self, block_limit: int) -> None:
        self.block_limit = block_limit
        self._lock = threading.Lock()
        self.by_reason: Counter[str] = Counter()
        self.by_block: Counter[tuple[str, str]] = Counter()
        self.last_time: dict[str, float] = {}

    def add(self, failure: OfflineFailure, block_size: int | None, when: float) -> None:
        with self._lock:
            self.by_reason[failure.reason] += 1
            self.last_time[failure.reason] = when
            if not block_size:
                return
            for block_id in failure.blocks(block_size):
                key = (str(block_id), failure.reason)
                if key not in self.by_block and len(self.by_block) >= self.block_limit:
                    key = (OTHER_BLOCK, failure.reason)
                self.by_block[key] += 1

    def snapshot(self) -> tuple[dict[str, int], dict[tuple[str, str], int], dict[str, float]]:
        with self._lock:
            return dict(self.by_reason), dict(self.by_block), dict(self.last_time)


class KmsgWatcher(RestartingThread):
    """Follows the kernel log in a thread; restarts after errors with backoff."""

    name = "memhp-kmsg"

    def __init__(
        self,
        path: str,
        counts: FailureCounts,
        block_size: Callable[[], int | None],
        *,
        replay: bool = False,
        poll_interval: float = 0.5,
    ) -> None:
        super().__init__()
        self.path = path
        self.counts = counts
        self.block_size = block_size
        self.replay = replay
        self.poll_interval = poll_interval
        self.lines_seen = 0

    def follow(self, first: bool) -> None:
        self._follow(seek_end=first and not self.replay)

    def _follow(self, seek_end: bool) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            is_chr = stat.S_ISCHR(os.fstat(fd).st_mode)
            if seek_end:
                os.lseek(fd, 0, os.SEEK_END)
            self.up = True
            pending = b""
            ready_but_empty = False
            while not self._stop.is_set():
                try:
                    chunk = os.read(fd, 8192)
                except BlockingIOError:
                    chunk = None
                except OSError as e:
                    if e.errno == errno.EPIPE:
                        continue  # /dev/kmsg: records overwritten before we read them
                    raise
                if not chunk:
                    # Nothing new.  /dev/kmsg says EAGAIN and poll() wakes us for the next
                    # record; anything else (a regular file, or /dev/null: "readable" and at
                    # EOF forever) would spin on select(), so it, and a device that woke us
                    # for nothing, waits the poll interval instead.
                    if is_chr and chunk is None and not ready_but_empty:
                        ready_but_empty = bool(select.select([fd], [], [], self.poll_interval)[0])
                    else:
                        ready_but_empty = False
                        self._stop.wait(self.poll_interval)
                    continue
                ready_but_empty = False
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._line(raw)
                if len(pending) > 65536:  # a line that never ends is garbage
                    pending = b""
        finally:
            os.close(fd)

    def _line(self, raw: bytes) -> None:
        if not raw or raw[:1] == b" ":
            return  # blank or /dev/kmsg dictionary continuation
        self.lines_seen += 1
        failure = parse_failure(raw.decode("utf-8", "replace"))
        if failure is not None:
            self.counts.add(failure, self.block_size(), time.time())
