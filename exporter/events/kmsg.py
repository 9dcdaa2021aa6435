"""Offline and online failures from the kernel log.

offline_pages() ends a failed attempt with (mm/memory_hotplug.c)::

    memory offlining [mem 0x0000000140000000-0x0000000147ffffff] failed due to notifier failure

and online_pages() (a memory notifier refused MEM_GOING_ONLINE, say) with::

    online_pages [mem 0x0000000140000000-0x0000000147ffffff] failed

Both lines are ``pr_debug`` in current kernels: they reach the log only with
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

from memhp.background import RestartingThread

FAILURE = re.compile(r"memory offlining \[mem (0x[0-9a-fA-F]+)-(0x[0-9a-fA-F]+)\] failed due to ([^\n]{1,80}?)\s*$")
ONLINE_FAILURE = re.compile(r"online_pages \[mem (0x[0-9a-fA-F]+)-(0x[0-9a-fA-F]+)\] failed\s*$")
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


@dataclass(frozen=True)
class OnlineFailure:
    """online_pages() gives no reason: the notifier's or the allocator's errno is not logged."""

    start: int
    end: int  # inclusive

    def blocks(self, block_size: int) -> range:
        return range(self.start // block_size, self.end // block_size + 1)


def _range(m: re.Match[str]) -> tuple[int, int] | None:
    start, end = int(m.group(1), 16), int(m.group(2), 16)
    return None if end < start else (start, end)


def parse_failure(line: str) -> OfflineFailure | None:
    m = FAILURE.search(KMSG_PREFIX.sub("", line, count=1))
    if not m or (r := _range(m)) is None:
        return None
    return OfflineFailure(*r, m.group(3).strip())


def parse_online_failure(line: str) -> OnlineFailure | None:
    m = ONLINE_FAILURE.search(KMSG_PREFIX.sub("", line, count=1))
    if not m or (r := _range(m)) is None:
        return None
    return OnlineFailure(*r)


class FailureCounts:
    """Counters fed by the watcher, read by the collectors; bounded in blocks.

    Besides the counters (which only grow), it keeps which blocks are
    *failing*: an offline failed since the block last went offline.  A
    successful offline (:meth:`offlined`) clears that, never the counters.
    """

    def __init__(self, block_limit: int) -> None:
        self.block_limit = block_limit
        self._lock = threading.Lock()
        self.by_reason: Counter[str] = Counter()
        self.by_block: Counter[tuple[str, str]] = Counter()
        self.last_time: dict[str, float] = {}
        self.online_total = 0
        self.online_by_block: Counter[str] = Counter()
        self.online_last_time: float | None = None
        self._failing: set[int] = set()

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
                else:
                    self._failing.add(block_id)
                self.by_block[key] += 1

    def add_online(self, failure: OnlineFailure, block_size: int | None, when: float) -> None:
        with self._lock:
            self.online_total += 1
            self.online_last_time = when
            if not block_size:
                return
            for block_id in failure.blocks(block_size):
                key = str(block_id)
                if key not in self.online_by_block and len(self.online_by_block) >= self.block_limit:
                    key = OTHER_BLOCK
                self.online_by_block[key] += 1

    def offlined(self, block_id: int) -> None:
        """The block went offline: its earlier offline failures are history."""
        with self._lock:
            self._failing.discard(block_id)

    def failing(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._failing)

    def snapshot(self) -> tuple[dict[str, int], dict[tuple[str, str], int], dict[str, float]]:
        with self._lock:
            return dict(self.by_reason), dict(self.by_block), dict(self.last_time)

    def online_snapshot(self) -> tuple[int, dict[str, int], float | None]:
        with self._lock:
            return self.online_total, dict(self.online_by_block), self.online_last_time


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
        line = raw.decode("utf-8", "replace")
        failure = parse_failure(line)
        if failure is not None:
            self.counts.add(failure, self.block_size(), time.time())
            return
        online = parse_online_failure(line)
        if online is not None:
            self.counts.add_online(online, self.block_size(), time.time())
