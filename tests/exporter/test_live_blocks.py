"""The event-driven block snapshot on fixture trees.

A fixture tree gets no kernel uevents, so these tests feed the snapshot the
events the kernel would send through a pipe-backed monitor (the same
``poll``/``fileno`` surface as pyudev's); the real netlink path, against the
real kernel, is tests/vm/test_exporter_freshness_vm.py.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

from memhp.exporter.events.live_blocks import EVENTS, SCRAPE, LiveBlocks, uevents_unreachable
from memhp.exporter.kernel.fsread import ParseErrors
from memhp.exporter.kernel.paths import Paths
from tests.helpers.trees import FIXTURES, block_dirs, remove_block, unpack, write
from tests.helpers.wait import wait_until as wait_for


@dataclass
class Event:
    action: str
    sys_name: str


class PipeMonitor:
    """Queued uevents behind a readable fd, as a netlink socket looks to select()."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.queue: deque[Event | OSError] = deque()
        self.lock = threading.Lock()

    def send(self, action: str, block: int) -> None:
        self.send_name(action, f"memory{block}")

    def send_name(self, action: str, sys_name: str) -> None:
        with self.lock:
            self.queue.append(Event(action, sys_name))
            os.write(self.w, b"x")

    def overrun(self) -> None:
        with self.lock:
            self.queue.append(OSError(errno.ENOBUFS, "No buffer space available"))
            os.write(self.w, b"x")

    def fileno(self) -> int:
        return self.r

    def poll(self, timeout: float = 0) -> Event | None:
        with self.lock:
            try:
                os.read(self.r, 1)
            except BlockingIOError:
                pass
            if not self.queue:
                return None
            item = self.queue.popleft()
        if isinstance(item, OSError):
            raise item
        return item

    def stop(self) -> None:
        os.close(self.r)
        os.close(self.w)


@pytest.fixture
def tree(tmp_path):
    return unpack(FIXTURES / "two-node-dimm-offline.tar.gz", tmp_path / "root")


def live(tree, monitor=None, **kw) -> LiveBlocks:
    paths = Paths(str(tree / "sys"), str(tree / "proc"))
    factory = (lambda: monitor) if monitor is not None else None
    return LiveBlocks(paths, ParseErrors(), mode="events", monitor_factory=factory, **kw).start()


def mem(tree, block: int):
    return tree / f"sys/devices/system/memory/memory{block}"


def by_id(view):
    return {b.id: b for b in view.blocks}


def test_events_update_the_snapshot_at_the_next_scrape(tree):
    monitor = PipeMonitor()
    store = live(tree, monitor, poll_timeout=30)  # the thread sleeps: the scrape must drain
    try:
        v0 = store.view()
        assert v0.mode == EVENTS and by_id(v0)[32].state == "offline"
        write(mem(tree, 32) / "state", "online\n")
        write(mem(tree, 32) / "valid_zones", "Normal\n")
        # an event changes the zones the kernel offers the other offline blocks of the node
        write(mem(tree, 33) / "valid_zones", "Normal\n")
        assert by_id(store.view())[32].state == "offline"  # no event yet: the snapshot holds
        monitor.send("online", 32)
        v1 = store.view()
        assert by_id(v1)[32].state == "online" and by_id(v1)[32].valid_zones == ("Normal",)
        assert by_id(v1)[33].valid_zones == ("Normal",)
        assert v1.version > v0.version and store.events_applied == 1
        assert store.view().version == v1.version  # nothing new, nothing re-rendered
    finally:
        store.close()


def test_add_and_remove_events(tree):
    monitor = PipeMonitor()
    store = live(tree, monitor, poll_timeout=30)
    try:
        victim = block_dirs(tree)[-1]
        remove_block(tree, victim)
        monitor.send("remove", int(victim.name[6:]))
        assert int(victim.name[6:]) not in by_id(store.view())
    finally:
        store.close()


def test_state_pass_sees_what_sends_no_event(tree):
    monitor = PipeMonitor()
    store = live(tree, monitor, poll_timeout=0.05, state_interval=0.2)
    try:
        write(mem(tree, 1) / "state", "going-offline\n")
        wait_for(lambda: by_id(store.view())[1].state == "going-offline", timeout=10)
        assert store.events_applied == 0
    finally:
        store.close()


def test_overrun_and_interval_resync_everything(tree):
    monitor = PipeMonitor()
    store = live(tree, monitor, poll_timeout=30)
    try:
        write(mem(tree, 34) / "valid_zones", "Movable\n")  # a change whose event was lost
        monitor.overrun()
        # the thread re-reads every block; scrapes get the last view (stale) meanwhile
        wait_for(lambda: by_id(store.view())[34].valid_zones == ("Movable",), timeout=10)
        assert store.resyncs == {"start": 1, "overrun": 1} and not store.stale
    finally:
        store.close()
    monitor = PipeMonitor()
    store = live(tree, monitor, poll_timeout=0.05, resync_interval=0.2)
    try:
        wait_for(lambda: store.resyncs["interval"] >= 1, timeout=10)
    finally:
        store.close()


def test_monitor_failure_falls_back_to_reading_then_restarts(tree):
    monitors = [PipeMonitor(), PipeMonitor()]
    paths = Paths(str(tree / "sys"), str(tree / "proc"))
    store = LiveBlocks(paths, ParseErrors(), mode="events", monitor_factory=monitors.pop, poll_timeout=0.05).start()
    try:
        broken = store._monitor
        broken.queue.append(OSError(errno.EBADF, "gone"))
        os.write(broken.w, b"x")
        write(mem(tree, 2) / "state", "offline\n")  # no event: only a read can see it
        view = store.view()
        assert view.mode == SCRAPE and by_id(view)[2].state == "offline"
        wait_for(lambda: store.mode == EVENTS, timeout=10)  # restarted after the backoff, with a resync
        assert store.resyncs["restart"] == 1 and store.monitor_restarts == 1
    finally:
        store.close()


def test_no_uevents_means_scrape_mode(tree):
    def refuse():
        raise PermissionError(errno.EPERM, "Operation not permitted")

    paths = Paths(str(tree / "sys"), str(tree / "proc"))
    store = LiveBlocks(paths, ParseErrors(), monitor_factory=refuse).start()
    assert store.mode == SCRAPE and "Operation not permitted" in (store.fallback_reason or "")
    write(mem(tree, 3) / "state", "offline\n")
    assert by_id(store.view())[3].state == "offline"


def test_real_netlink_monitor_starts_in_events_mode(tree):
    paths = Paths(str(tree / "sys"), str(tree / "proc"))
    store = LiveBlocks(paths, ParseErrors()).start()  # pyudev, the kernel source
    try:
        assert store.mode == EVENTS and store.resyncs["start"] == 1
        assert len(store.view().blocks) == len(block_dirs(tree))
    finally:
        store.close()


def test_user_namespace_without_uevents_is_detected():
    assert uevents_unreachable() is None  # this machine: the initial namespaces
    code = "from memhp.exporter.events.live_blocks import uevents_unreachable as u; print(u())"
    out = subprocess.run(
        ["unshare", "--user", "--net", "--map-root-user", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "not owned by the initial user namespace" in out


def test_concurrent_scrapes_share_one_read(tree):
    paths = Paths(str(tree / "sys"), str(tree / "proc"))
    store = LiveBlocks(paths, ParseErrors(), mode="scrape").start()
    reads = []
    real = store._read_all

    def slow_read():
        reads.append(time.monotonic())
        time.sleep(0.3)
        return real()

    store._read_all = slow_read  # type: ignore[method-assign]
    threads = [threading.Thread(target=store.view) for _ in range(8)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 8 scrapers, at most two reads (one under way, one they all join), never 8 in a row
    assert len(reads) <= 2 and time.monotonic() - start < 8 * 0.3


def test_a_block_mid_hot_add_is_not_asked_for_its_zones(tree):
    """Until the kernel links a hot-added block to its node, its nid is -1 and
    reading valid_zones oopses (Debian 6.1): the block is read without it, and
    completed at the next scrape once the link is there."""
    monitor = PipeMonitor()
    store = live(tree, monitor, poll_timeout=30)
    try:
        new = mem(tree, 36)
        new.mkdir()
        write(new / "state", "offline\n")
        (new / "valid_zones").mkdir()  # a read would fail loudly: it must not happen
        monitor.send("add", 36)
        block = by_id(store.view())[36]
        assert block.node is None and block.valid_zones is None and block.state == "offline"
        assert store.errors.counts() == {}
        (new / "valid_zones").rmdir()
        write(new / "valid_zones", "Normal Movable\n")
        os.symlink("../../node/node1", new / "node1")
        os.symlink("../../memory/memory36", tree / "sys/devices/system/node/node1/memory36")
        block = by_id(store.view())[36]  # no further uevent: the scrape completes it
        assert block.node == 1 and block.valid_zones == ("Normal", "Movable")
    finally:
        store.close()


class QuietMonitor(PipeMonitor):
    """Events the thread is never woken for: only a scrape's drain (or a resync) sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.never_r, self.never_w = os.pipe()

    def fileno(self) -> int:
        return self.never_r

    def stop(self) -> None:
        super().stop()
        os.close(self.never_r)
        os.close(self.never_w)


def test_one_scrape_applies_a_bounded_number_of_events(tree):
    monitor = QuietMonitor()
    store = live(tree, monitor, poll_timeout=30)
    try:
        for _ in range(3000):
            monitor.send("online", 32)
        store.view()
        assert 0 < store.events_applied < 3000 and monitor.queue  # the rest waits in the socket
        store.view()
        store.view()
        assert store.events_applied == 3000 and not monitor.queue
    finally:
        store.close()


@pytest.fixture
def shm_dir():
    """A directory on tmpfs: thousands of block directories are made in a second there."""
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        yield Path(d)


def test_an_overrun_storm_never_resyncs_inside_a_scrape(shm_dir):
    """2,000 uevents/s with overruns once kept one scrape 19.8 s in 43 full
    re-reads run inside it, under the lock.  Now each scrape returns within a
    bound and every re-read runs in the snapshot's own thread."""
    from bench.synth_tree import make_tree

    root = make_tree(shm_dir / "big", 2000)
    monitor = PipeMonitor()
    store = live(root, monitor, poll_timeout=30)
    readers: list[str] = []
    real = store._read_all

    def read_all():  # the real read, noting which thread does it
        readers.append(threading.current_thread().name)
        return real()

    store._read_all = read_all  # type: ignore[method-assign]
    stop = threading.Event()

    def storm():  # about 2,000 events/s, an overrun every 50 ms, for 4 s
        end = time.monotonic() + 4.0
        n = 0
        while time.monotonic() < end:
            for _ in range(20):
                monitor.send("online", n % 2000)
                n += 1
            if n % 100 == 0:
                monitor.overrun()
            time.sleep(0.01)
        stop.set()

    feeder = threading.Thread(target=storm)
    durations = []
    try:
        feeder.start()
        while not stop.is_set():
            start = time.monotonic()
            store.view()
            durations.append(time.monotonic() - start)
            time.sleep(0.05)
        feeder.join()
        assert readers and set(readers) == {"memhp-blocks"}, readers  # never the scraping thread
        assert max(durations) < 2.5, sorted(durations)[-5:]  # while the storm lasts 4 s
        assert store.resyncs["overrun"] >= 1
        # and the snapshot is repaired: a change whose event was lost shows after the storm
        write(root / "sys/devices/system/memory/memory10/state", "offline\n")
        monitor.overrun()
        wait_for(lambda: by_id(store.view())[10].state == "offline" and not store.stale, timeout=30)
    finally:
        stop.set()
        feeder.join()
        store.close()


def test_a_stale_snapshot_is_served_and_says_so(tree):
    """While the re-read after an overrun runs, scrapes get the last view, and
    the collector exports memhp_block_snapshot_stale 1."""
    from prometheus_client import CollectorRegistry

    from memhp.exporter.collectors import BlocksCollector, MemhpCollector

    monitor = QuietMonitor()
    store = live(tree, monitor, poll_timeout=30)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(MemhpCollector(store.paths, [BlocksCollector(live=store)]))
    release = threading.Event()
    real = store._read_all

    def held_read():  # the real read, held until the test has looked
        release.wait(30)
        return real()

    store._read_all = held_read  # type: ignore[method-assign]
    try:
        v0 = store.view()
        write(mem(tree, 34) / "valid_zones", "Movable\n")  # its event is lost
        monitor.overrun()
        start = time.monotonic()
        assert store.view().blocks == v0.blocks  # the last complete view, at once
        assert time.monotonic() - start < 5.0
        wait_for(lambda: store._resyncing, timeout=10)
        assert reg.get_sample_value("memhp_block_snapshot_stale") == 1
        release.set()
        wait_for(lambda: by_id(store.view())[34].valid_zones == ("Movable",), timeout=10)
        assert reg.get_sample_value("memhp_block_snapshot_stale") == 0
    finally:
        release.set()
        store.close()


@pytest.mark.parametrize(
    "name",
    ["memory²", "memory" + "7" * 5000, "memory", "memory-1", "memory１２", "memory_failure", "memory12345678901"],
)
def test_odd_device_names_are_ignored_and_counted(tree, name):
    """'²'.isdigit() is True and int('²') raises; int() refuses 5,000 digits:
    both raised out of view() into the scrape."""
    from prometheus_client import CollectorRegistry

    from memhp.exporter.collectors import BlocksCollector, MemhpCollector

    monitor = PipeMonitor()
    store = live(tree, monitor, poll_timeout=30)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(MemhpCollector(store.paths, [BlocksCollector(live=store)]))
    try:
        write(mem(tree, 32) / "state", "online\n")
        monitor.send_name("add", name)
        monitor.send("online", 32)
        assert by_id(store.view())[32].state == "online"
        assert store.events_ignored == 1 and store.events_applied == 1
        assert reg.get_sample_value("memhp_block_snapshot_uevents_ignored_total") == 1
    finally:
        store.close()


def test_odd_directory_names_in_sysfs_are_not_blocks(tree):
    blocks = len(block_dirs(tree))
    for name in ("memory²", "memory" + "7" * 200, "memory１"):
        (tree / "sys/devices/system/memory" / name).mkdir()
        (tree / "sys/devices/system/node/node0" / name).mkdir()
    paths = Paths(str(tree / "sys"), str(tree / "proc"))
    view = LiveBlocks(paths, ParseErrors(), mode="scrape").start().view()
    assert len(view.blocks) == blocks
