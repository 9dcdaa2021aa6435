"""The exporter's block snapshot: read every block once, then keep the copy
true from the memory subsystem's uevents instead of re-reading 100k blocks
on every scrape.

What an event can change is re-read, not guessed: the block itself, and the
``valid_zones`` of the offline blocks on its node (onlining or offlining a
block moves zone spans, and the kernel sends no event for the others).
Entering ``going-offline`` and an offline that fails send no event at all,
so a cheap pass reads every block's ``state`` every ``state_interval``, and
everything is re-read every ``resync_interval``, on a netlink overrun
(ENOBUFS) and whenever the monitor (re)starts.

Freshness at scrape time: the kernel queues a uevent on our socket before
the sysfs write that caused it returns, so every scrape first drains the
socket without blocking.  A scrape that starts after the write has returned
therefore sees the new state even if the monitor thread has not woken yet.

A storm of events must not stall scrapes (2,000 events/s once kept one
scrape 19.8 s in 43 overrun resyncs): one drain applies at most
``drain_limit`` events, and a full resync never runs under the lock or in a
scrape: an overrun asks the thread for one, and scrapes get the last view
meanwhile, marked stale, its age the time since every block was last read.

Where uevents cannot reach us (no netlink socket allowed, or a network
namespace the kernel does not broadcast to) the store falls back to reading
every block at scrape time; concurrent scrapes then share one read.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import socket
import threading
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from memhp.background import restart_backoff
from memhp.backoff import keep_running

from ..kernel.fsread import ATTR_MAX, ParseErrors
from ..kernel.memory_blocks import has_node_dirs, read_block, read_blocks
from ..kernel.model import BLOCK_STATES, MemoryBlock, parse_block_name
from ..kernel.nodes import block_node_map, read_nodes
from ..kernel.paths import Paths

log = logging.getLogger(__name__)

EVENTS, SCRAPE = "events", "scrape"
MODES = (EVENTS, SCRAPE)
RESYNC_REASONS = ("start", "interval", "overrun", "restart")
DEFAULT_RESYNC_INTERVAL = 600.0
DEFAULT_STATE_INTERVAL = 120.0

# include/linux/proc_ns.h: PROC_USER_INIT_INO; linux/nsfs.h: NS_GET_USERNS.
INIT_USER_NS_INO = 0xEFFFFFFD
NS_GET_USERNS = 0xB701
# Room for a virtio-mem resize of a few TiB worth of add+online pairs.
RECEIVE_BUFFER = 8 << 20
# Events one drain applies while holding the lock (a scrape waits for it): a
# few hundred milliseconds of re-reads at most.  The rest wait in the socket.
DRAIN_LIMIT = 1024


def uevents_unreachable(proc: str = "/proc") -> str | None:
    """Why kernel uevents cannot reach this process, or None if they can.

    Since Linux 4.18 the kernel broadcasts uevents only into network
    namespaces owned by the initial user namespace (lib/kobject_uevent.c,
    uevent_net_init): a rootless or user-namespaced container never hears
    one, while a container in its own network namespace under the initial
    user namespace does.
    """
    try:
        fd = os.open(os.path.join(proc, "self/ns/net"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        return f"cannot open the network namespace: {os.strerror(e.errno or 0)}"
    try:
        try:
            owner = fcntl.ioctl(fd, NS_GET_USERNS)
        except OSError:
            # Kernels before 4.9, or a seccomp filter: judge by our own user namespace.
            ino = os.stat(os.path.join(proc, "self/ns/user")).st_ino
        else:
            try:
                ino = os.fstat(owner).st_ino
            finally:
                os.close(owner)
    except OSError as e:
        return f"cannot inspect the user namespace: {os.strerror(e.errno or 0)}"
    finally:
        os.close(fd)
    if ino != INIT_USER_NS_INO:
        return "the network namespace is not owned by the initial user namespace: the kernel sends it no uevents"
    return None


@dataclass(frozen=True, slots=True)
class BlockView:
    """One published state of the snapshot.  ``blocks`` is never mutated after
    publication (changes build a new list), so readers need no lock."""

    version: int
    blocks: list[MemoryBlock]
    mode: str
    # time.time() of the last read of every block (now, in scrape mode).
    synced_at: float


def read_states(memory_dir: str, ids: Iterable[int]) -> dict[int, bytes | None]:
    """Only ``state``, raw, for each block: the cheap pass between full resyncs."""
    out: dict[int, bytes | None] = {}
    try:
        root = os.open(memory_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return out
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        for block_id in ids:
            try:
                fd = os.open(f"memory{block_id}/state", flags, dir_fd=root)
                try:
                    out[block_id] = os.read(fd, ATTR_MAX + 1)
                finally:
                    os.close(fd)
            except OSError:
                out[block_id] = None
    finally:
        os.close(root)
    return out


class _MonitorLost(Exception):
    """The thread's monitor failed (in a scrape or in the thread): back off, then listen again."""


class _Flight:
    """One read shared by every scrape that arrived before it started."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: BlockView | None = None
        self.error: BaseException | None = None


class LiveBlocks:
    """The block snapshot, kept true by uevents (mode ``events``) or read at
    scrape time (mode ``scrape``)."""

    def __init__(
        self,
        paths: Paths,
        errors: ParseErrors,
        *,
        mode: str = "auto",
        resync_interval: float = DEFAULT_RESYNC_INTERVAL,
        state_interval: float = DEFAULT_STATE_INTERVAL,
        source: str = "kernel",
        poll_timeout: float = 1.0,
        monitor_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        drain_limit: int = DRAIN_LIMIT,
        on_offline: Callable[[int], None] | None = None,
    ) -> None:
        if mode not in ("auto", *MODES):
            raise ValueError(f"snapshot mode {mode!r} is not auto, events or scrape")
        self.paths = paths
        self.errors = errors
        self.requested_mode = mode
        self.resync_interval = resync_interval
        self.state_interval = min(state_interval, resync_interval)
        self.source = source
        self.poll_timeout = poll_timeout
        self.drain_limit = drain_limit
        # Told of every "offline" uevent: the kernel sends it only when offlining succeeded.
        self.on_offline = on_offline
        self._monitor_factory = monitor_factory or self._netlink_monitor
        self._clock = clock
        self.fallback_reason: str | None = None
        self.resyncs: Counter[str] = Counter()
        self.events_applied = 0
        self.events_ignored = 0  # uevents whose device name is not memoryN
        self.monitor_restarts = 0
        self._lock = threading.Lock()  # guards the monitor, the published view and the pending sets
        self._monitor: Any = None
        self._view = BlockView(0, [], SCRAPE, 0.0)
        self._resyncing = False
        # A full resync the thread owes (the reason), and overruns counted / covered by a
        # resync that started after them: the served view is stale while they differ.
        self._resync_due: str | None = None
        self._overruns = self._overruns_covered = 0
        self._wake_r = self._wake_w = -1  # wakes the thread for a resync
        # Blocks seen before the kernel linked them to a node (mid hot-add:
        # read without valid_zones, and no uevent follows): re-read at every
        # drain until they are complete.
        self._numa = has_node_dirs(paths.memory)
        self._incomplete: set[int] = set()
        self._touched_during_resync: set[int] = set()
        self._nodes_during_resync: set[int | None] = set()
        self._flight_lock = threading.Lock()
        self._flight: _Flight | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._following: Any = None  # the monitor the thread follows; None once it has waited after a loss
        self._next_full = self._next_state = 0.0

    # -- public ---------------------------------------------------------------

    @property
    def mode(self) -> str:
        """The mode in force right now: ``events`` only while a monitor is up."""
        return EVENTS if self._monitor is not None else SCRAPE

    @property
    def stale(self) -> bool:
        """Events were lost (an overrun) and no full read since has finished."""
        return self._overruns_covered < self._overruns

    def start(self) -> LiveBlocks:
        if self.requested_mode == SCRAPE:
            self.fallback_reason = "--collector.blocks.snapshot=scrape"
            return self
        # Our own namespaces, from our own /proc: --path.procfs may be the host's.
        reason = uevents_unreachable() if self.requested_mode == "auto" else None
        if reason is None:
            try:
                monitor = self._monitor_factory()
            except Exception as e:  # noqa: BLE001 - any failure to listen means: read at scrape time
                reason = f"cannot listen to uevents: {e}"
        if reason is not None:
            self.fallback_reason = reason
            log.warning("block snapshot: %s; reading every block at scrape time instead", reason)
            return self
        # Listen first, read second: an event during the read waits in the socket.
        self._set_monitor(monitor)
        self._following = monitor
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._full_resync("start")
        self._thread = threading.Thread(target=self._run, name="memhp-blocks", daemon=True)
        self._thread.start()
        return self

    def view(self) -> BlockView:
        """The blocks as they are now, for one scrape (or as they were at the last
        full read plus the events since, while a resync after an overrun runs)."""
        with self._lock:
            if self._monitor is not None:
                try:
                    self._drain_locked()
                except OSError as e:
                    self._monitor_failed_locked(e)
                else:
                    return self._view
        return self._shared_read()

    def close(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(3.0)
        with self._lock:
            self._set_monitor(None)
        if self._wake_r >= 0 and (self._thread is None or not self._thread.is_alive()):
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1

    # -- the monitor ----------------------------------------------------------

    def _netlink_monitor(self) -> Any:
        import pyudev  # libudev is only needed when the snapshot listens

        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=self.source)
        monitor.filter_by(subsystem="memory")
        try:
            monitor.set_receive_buffer_size(RECEIVE_BUFFER)
        except OSError:
            # SO_RCVBUFFORCE needs CAP_NET_ADMIN; without it SO_RCVBUF still gets up to
            # net.core.rmem_max, which hosts often raise above its 208 KiB default.
            _set_rcvbuf(monitor.fileno(), RECEIVE_BUFFER)
        monitor.start()
        return monitor

    def _set_monitor(self, monitor: Any) -> None:
        old, self._monitor = self._monitor, monitor
        if old is not None and old is not monitor:
            try:
                old.stop()
            except Exception as e:  # noqa: BLE001 - closing a broken socket
                log.debug("closing the uevent monitor: %s", e)

    def _monitor_failed_locked(self, e: OSError) -> None:
        log.warning("block snapshot: uevent monitor failed (%s); reading at scrape time until it is back", e)
        self._set_monitor(None)
        self.monitor_restarts += 1

    def _drain_locked(self) -> None:
        """Apply the queued uevents, at most ``drain_limit`` of them; an overrun
        asks the thread for a full resync."""
        monitor = self._monitor
        touched: set[int] = set()
        removed: set[int] = set()
        for _ in range(self.drain_limit):
            try:
                device = monitor.poll(timeout=0)
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                # Events were dropped: nothing we hold can be trusted until every block is read again.
                self._overruns += 1
                self._request_resync_locked("overrun")
                continue
            if device is None:
                break
            name = device.sys_name or ""
            block_id = parse_block_name(name)
            if block_id is None:
                self._ignore_locked(name)
                continue
            self.events_applied += 1
            if device.action == "remove":
                removed.add(block_id)
                touched.discard(block_id)
            else:
                touched.add(block_id)
                removed.discard(block_id)
                if device.action == "offline" and self.on_offline is not None:
                    self.on_offline(block_id)
        self._apply_locked(touched | (self._incomplete - removed), removed)

    def _ignore_locked(self, name: str) -> None:
        self.events_ignored += 1
        level = logging.WARNING if self.events_ignored == 1 else logging.DEBUG
        log.log(
            level, "block snapshot: ignoring a memory uevent for %r (not memoryN); further ones are counted", name[:80]
        )

    def _request_resync_locked(self, reason: str) -> None:
        self._resync_due = self._resync_due or reason
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # full (a wake-up is pending anyway), or closed

    # -- updating the snapshot --------------------------------------------------

    def _apply_locked(self, touched: set[int], removed: set[int]) -> None:
        """Re-read what the events can have changed and publish a new view."""
        if not touched and not removed:
            return
        log.debug("block snapshot: re-reading %s, dropping %s", sorted(touched)[:20], sorted(removed)[:20])
        blocks = self._view.blocks
        nodes: set[int | None] = set()
        for block_id in removed | touched:
            # bisect, not an id -> index dict: that would cost ~20 MiB at 300k blocks
            i = bisect_left(blocks, block_id, key=lambda b: b.id)
            if i < len(blocks) and blocks[i].id == block_id:
                nodes.add(blocks[i].node)
        fresh: dict[int, MemoryBlock | None] = dict.fromkeys(removed)
        for block_id in touched:
            block = fresh[block_id] = self._read_one(block_id)
            if block is not None:
                nodes.add(block.node)
        # Offline blocks on the same nodes: their valid_zones follow zone spans.
        for b in blocks:
            if b.state == "offline" and b.node in nodes and b.id not in fresh:
                fresh[b.id] = self._read_one(b.id)
        if self._resyncing:
            self._touched_during_resync |= touched | removed
            self._nodes_during_resync |= nodes
        self._publish_locked(fresh)
        log.debug("block snapshot: version %d, %d blocks", self._view.version, len(self._view.blocks))

    def _publish_locked(self, fresh: dict[int, MemoryBlock | None], synced_at: float | None = None) -> None:
        blocks = list(self._view.blocks)
        changed = False
        for block_id in sorted(fresh):
            new = fresh[block_id]
            if new is not None and new.node is None and self._numa:
                self._incomplete.add(block_id)
            else:
                self._incomplete.discard(block_id)
            i = bisect_left(blocks, block_id, key=lambda b: b.id)
            present = i < len(blocks) and blocks[i].id == block_id
            if new is None:
                if present:
                    del blocks[i]
                    changed = True
            elif present:
                if blocks[i] != new:
                    blocks[i] = new
                    changed = True
            else:
                blocks.insert(i, new)
                changed = True
        if not changed and synced_at is None:
            return
        old = self._view
        self._view = BlockView(
            old.version + int(changed), blocks, EVENTS, old.synced_at if synced_at is None else synced_at
        )

    def _read_one(self, block_id: int) -> MemoryBlock | None:
        block = read_block(self.paths.memory, block_id, self.errors)
        if block is not None:
            # As the full read: ``removable`` is read only for blocks exported one by one.
            block.removable = None
        return block

    def _read_all(self) -> list[MemoryBlock]:
        nodes = read_nodes(self.paths.node, self.errors)
        node_of = block_node_map(nodes) if nodes else None
        # removable_limit=0: no metric of the snapshot uses ``removable``.
        return read_blocks(self.paths.memory, self.errors, node_of, removable_limit=0)

    def _full_resync(self, reason: str) -> None:
        """Read every block outside the lock (scrapes keep being served), then
        swap it in and re-read whatever events touched during the read."""
        with self._lock:
            self._resyncing = True
            self._touched_during_resync = set()
            self._nodes_during_resync = set()
            self._resync_due = None  # this read starts after whatever asked for one
            covers = self._overruns
        try:
            started = time.time()
            blocks = self._read_all()
        finally:
            with self._lock:
                self._resyncing = False
        with self._lock:
            self._swap_in_locked(blocks, started, reason)
            self._overruns_covered = max(self._overruns_covered, covers)

    def _swap_in_locked(self, blocks: list[MemoryBlock], started: float, reason: str) -> None:
        old = self._view
        changed = old.blocks != blocks
        self._view = BlockView(old.version + int(changed), blocks, EVENTS, started)
        self._incomplete = {b.id for b in blocks if b.node is None} if self._numa else set()
        self.resyncs[reason] += 1
        now = self._clock()
        self._next_full = now + self.resync_interval
        self._next_state = now + self.state_interval
        touched, nodes = self._touched_during_resync, self._nodes_during_resync
        self._touched_during_resync, self._nodes_during_resync = set(), set()
        if touched:
            fresh = {i: self._read_one(i) for i in touched}
            for b in blocks:
                if b.state == "offline" and b.node in nodes and b.id not in fresh:
                    fresh[b.id] = self._read_one(b.id)
            self._publish_locked(fresh)

    def _state_pass(self) -> None:
        """Read only ``state``; re-read in full the blocks whose state moved
        (going-offline, and back after a failed offline, send no event).
        New and removed blocks always send one (or overrun the socket, which
        resyncs everything), so the pass does not list the directory."""
        blocks = self._view.blocks
        raw = read_states(self.paths.memory, [b.id for b in blocks])
        expected = {s: f"{s}\n".encode() for s in BLOCK_STATES}
        with self._lock:
            moved = {b.id for b in self._view.blocks if raw.get(b.id, b"") != expected.get(b.state or "")}
            if moved:
                self._apply_locked(moved, set())
            self._next_state = self._clock() + self.state_interval

    # -- the thread -------------------------------------------------------------

    def _run(self) -> None:
        keep_running(self._turn, self._stop, restart_backoff(), self._turn_failed)

    def _turn(self) -> None:
        """Follow the monitor for one step; once it is lost, fail once (the
        backoff waits) and then start a new one."""
        with self._lock:
            monitor = self._monitor
        if monitor is not None:
            self._following = monitor
            self._step(monitor)
        elif self._following is not None:
            self._following = None
            raise _MonitorLost("the uevent monitor is gone")
        else:
            self._restart_monitor()
            self._following = self._monitor

    def _turn_failed(self, error: Exception, wait: float) -> None:
        if isinstance(error, _MonitorLost):
            log.info("block snapshot: listening to uevents again in %.0fs", wait)
            return
        log.warning("block snapshot: %s; going on in %.0fs", error, wait)
        with self._lock:
            if isinstance(error, OSError) and self._monitor is not None:
                self._monitor_failed_locked(error)
                self._following = None  # this wait is the one after the loss

    def _restart_monitor(self) -> None:
        monitor = self._monitor_factory()
        with self._lock:
            self._set_monitor(monitor)
        self._full_resync("restart")

    def _step(self, monitor: Any) -> None:
        now = self._clock()
        wait = 0.0 if self._resync_due else max(0.0, min(self._next_full, self._next_state) - now)
        ready, _, _ = select.select([monitor, self._wake_r], [], [], min(wait, self.poll_timeout))
        if self._wake_r in ready:
            _drain_pipe(self._wake_r)
        if monitor in ready:
            with self._lock:
                if self._monitor is monitor:
                    try:
                        self._drain_locked()
                    except OSError as e:
                        self._monitor_failed_locked(e)
                        return
        now = self._clock()
        if self._resync_due:
            self._full_resync(self._resync_due)
        elif now >= self._next_full:
            self._full_resync("interval")
        elif now >= self._next_state:
            self._state_pass()

    # -- scrape mode --------------------------------------------------------------

    def _shared_read(self) -> BlockView:
        """Read every block for this scrape, sharing the read with concurrent
        scrapes: a scrape joins the next read that starts after it arrived
        (never one already under way, which could predate a write it must
        see), so it waits for at most one read in progress plus its own."""
        with self._flight_lock:
            running = self._flight
        if running is not None:
            running.done.wait()
        with self._flight_lock:
            flight = self._flight
            if flight is None or flight is running:
                flight = self._flight = _Flight()
                leader = True
            else:
                leader = False
        if leader:
            try:
                started = time.time()
                blocks = self._read_all()
                with self._lock:
                    version = self._view.version + int(blocks != self._view.blocks)
                    self._view = BlockView(version, blocks, SCRAPE, started)
                    flight.result = self._view
            except BaseException as e:
                flight.error = e
                raise
            finally:
                with self._flight_lock:
                    if self._flight is flight:
                        self._flight = None
                flight.done.set()
        flight.done.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.result is not None
        return flight.result


def _set_rcvbuf(fd: int, size: int) -> None:
    sock = socket.socket(fileno=os.dup(fd))  # the dup shares the socket; closing it leaves ours open
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError as e:
        log.debug("block snapshot: SO_RCVBUF %d: %s", size, e)
    finally:
        sock.close()


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass  # empty (EAGAIN)
