"""The event path's reading side: the kernel's ``memory`` uevents, through pyudev.

Listens to the kernel's own netlink broadcast (``source="kernel"``): it needs
no udev daemon and no exporter process, and it sees an ``add`` before any udev
rule ran.  Every ``add`` of a ``memoryN`` block goes to the
:class:`~controller.hotadd.AddedBlocks` queue with its arrival time; a
``remove`` drops it.  When events may have been lost (the first start, a
restart after an error, a receive-buffer overrun: ENOBUFS) the sink is asked
to rescan the blocks instead, so a missed uevent costs a rescan, not a block.

Also here: the identity of one added block (boot id + the inode of its sysfs
directory), which a re-add of the same block number after a removal does not
share.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any, Protocol

from memhp.background import RestartingThread
from memhp.exporter.kernel.model import parse_block_name
from memhp.exporter.kernel.paths import Paths

from ..metrics import ControllerMetrics

log = logging.getLogger(__name__)

MAX_BOOT_ID = 64
RECEIVE_BUFFER = 8 << 20  # a virtio-mem resize of many GiB sends hundreds of uevents at once


class BlockSink(Protocol):
    def added(self, block: int, at: float | None) -> None: ...
    def removed(self, block: int) -> None: ...
    def rescan(self, why: str) -> None: ...


def read_boot_id(paths: Paths) -> str:
    """The kernel's boot id ("" if unreadable: identities then last until the block's directory changes)."""
    try:
        with open(os.path.join(paths.procfs, "sys", "kernel", "random", "boot_id"), encoding="ascii") as f:
            return f.read(MAX_BOOT_ID).strip()
    except (OSError, UnicodeDecodeError):
        return ""


def block_identity(paths: Paths, boot_id: str, block: int) -> str | None:
    """``<boot id>:<inode>`` of ``memoryN``'s sysfs directory; None when the block is gone.

    kernfs allocates inode numbers cyclically, so a block removed and added again gets a new
    one: each addition of a block is its own occurrence, and a controller restart (same boot,
    same directory) finds the occurrence it already acted on.
    """
    try:
        ino = os.stat(os.path.join(paths.memory, f"memory{block}")).st_ino
    except OSError:
        return None
    return f"{boot_id}:{ino}"


class UeventSource(RestartingThread):
    """A daemon thread listening until stopped; after a failure it starts again (1 s, doubling,
    at most a minute: memhp.background) and the first thing it does is ask for a rescan."""

    name = "memhp-controller-uevents"

    def __init__(self, sink: BlockSink, metrics: ControllerMetrics, clock: Any, poll_timeout: float = 1.0) -> None:
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self.poll_timeout = poll_timeout
        super().__init__()

    def follow(self, first: bool) -> None:
        monitor = _monitor()
        self.up = True
        self.metrics.event_source_up.set(1)
        try:
            # Listening first, then reading the blocks: an add between the two is seen twice, never missed.
            self.sink.rescan("start" if first else "restart")
            while not self._stop.is_set():
                try:
                    device = monitor.poll(timeout=self.poll_timeout)
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
                    self.metrics.uevent_overruns.inc()
                    self.sink.rescan("receive buffer overrun")
                    continue
                if device is not None:
                    self._handle(device.action or "", device.sys_name or "")
        finally:
            self.metrics.event_source_up.set(0)
            monitor.stop()

    def _handle(self, action: str, name: str) -> None:
        block = parse_block_name(name)
        if block is None:
            return
        self.metrics.uevents.labels(action if action in ("add", "remove", "online", "offline") else "other").inc()
        if action == "add":
            self.sink.added(block, self.clock())
        elif action == "remove":
            self.sink.removed(block)


def _monitor() -> Any:
    import pyudev  # libudev only when an event rule is configured

    monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
    monitor.filter_by(subsystem="memory")
    try:
        monitor.set_receive_buffer_size(RECEIVE_BUFFER)
    except OSError:  # SO_RCVBUFFORCE needs CAP_NET_ADMIN; an overrun is then a rescan
        log.debug("cannot raise the uevent receive buffer; overruns will rescan")
    monitor.start()
    return monitor
