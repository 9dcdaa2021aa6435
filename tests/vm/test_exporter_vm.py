"""The exporter inside a QEMU guest, against Debian's real kernel: every
metric below changes because the kernel changed, not because a file did."""

from __future__ import annotations

import errno
import re
import threading
import time
import urllib.error

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .guest import VMConfig, venv_python

pytestmark = pytest.mark.vm

PORT = 9100  # inside the guest; reached through a hostfwd loopback port


def parse(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics, name, **labels):
    return metrics.get((name, tuple(sorted(labels.items()))))


def total(metrics, name, **labels):
    return sum(
        v for (n, ls), v in metrics.items() if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


class Exporter:
    # Every block one by one: these tests follow healthy blocks too.
    DEFAULT_ARGS = ("--collector.blocks.all",)

    def __init__(self, guest, args: tuple[str, ...] = DEFAULT_ARGS, port: int = PORT, scrape_timeout: float = 30):
        self.guest = guest
        self.port = port
        self.scrape_timeout = scrape_timeout
        self.pid = guest.spawn(
            [
                str(venv_python()),
                "-m",
                "memhp.exporter.cli",
                "--web.listen-address",
                f":{port}",
                "--log.level",
                "debug",
                *args,
            ],
            log="/run/memhp/results/exporter.log",
            cwd=str(venv_python().parents[2]),
        )
        guest.wait_for(self._ready, 120, "the exporter in the guest to serve")

    def _ready(self):
        assert self.guest.poll(self.pid) is None, (self.guest.results / "exporter.log").read_text()
        try:
            status, body = self.guest.http_get("/metrics", self.port, timeout=10)
        except (urllib.error.URLError, ConnectionError, OSError):
            return False
        return (
            status == 200
            and "memhp_uevent_monitor_up 1.0" in body
            and "memhp_kmsg_watcher_up 1.0" in body
            and 'memhp_block_snapshot_mode{mode="events"} 1.0' in body
        )

    def scrape(self) -> dict:
        status, body = self.guest.http_get("/metrics", self.port, timeout=self.scrape_timeout)
        assert status == 200, body
        return parse(body)

    def log_tail(self, n: int = 12000, stacks: bool = False) -> str:
        if stacks:  # the exporter dumps every thread's stack to its log on SIGUSR1
            self.guest.run(["kill", "-USR1", str(self.pid)])
            time.sleep(2)
        try:
            return (self.guest.results / "exporter.log").read_text()[-n:]
        except OSError as e:
            return f"(no exporter log: {e})"

    def wait(self, pred, what, timeout=120):
        """Scrape until ``pred(metrics)`` holds; returns those metrics."""

        def attempt():
            m = self.scrape()
            return m if pred(m) else None

        return self.guest.wait_for(attempt, timeout, what, interval=0.3)


@pytest.fixture(scope="module")
def exporter(vm_guest_factory):
    guest = vm_guest_factory(VMConfig())  # the shared default guest
    e = Exporter(guest)
    yield e
    guest.kill(e.pid)


@pytest.fixture
def dimm(vm_guest):
    id = vm_guest.hotplug_dimm("512M")
    blocks = vm_guest.dimm_blocks(id)
    yield id, blocks
    if id in vm_guest._dimms:
        for b in blocks:
            vm_guest.set_state(b, "offline")
        vm_guest.unplug(id)


def zoneinfo_present(guest) -> dict[str, int]:
    """Present pages by zone name, summed over nodes, from the guest's own /proc/zoneinfo."""
    out: dict[str, int] = {}
    for m in re.finditer(r"Node \d+, zone\s+(\S+)\n(.*?)(?=\nNode |\Z)", guest.read("/proc/zoneinfo"), re.S):
        out[m.group(1)] = out.get(m.group(1), 0) + int(re.search(r"\n\s+present\s+(\d+)", m.group(2)).group(1))
    return out


def test_hot_add_shows_offline_blocks_and_add_uevents(exporter, vm_guest, dimm):
    _, blocks = dimm
    m = exporter.wait(
        lambda m: all(value(m, "memhp_block_state", block=str(b), node="0", state="offline") == 1 for b in blocks),
        "hot-added blocks to show offline",
    )
    assert total(m, "memhp_uevents_total", action="add") >= len(blocks)
    assert total(m, "memhp_blocks", state="offline") == len(blocks) == 4
    assert [vm_guest.block_state(b) for b in blocks] == ["offline"] * 4


def test_online_movable_moves_zone_and_ratio_as_zoneinfo_says(exporter, vm_guest, dimm):
    _, blocks = dimm
    exporter.wait(lambda m: total(m, "memhp_blocks", state="offline") == 4, "blocks offline")
    before = exporter.scrape()
    for b in blocks:
        assert vm_guest.set_state(b, "online_movable") == 0
    m = exporter.wait(
        lambda m: value(m, "memhp_blocks", node="0", zone="Movable", state="online") == 4, "blocks online in Movable"
    )
    present = zoneinfo_present(vm_guest)
    movable = present.get("Movable", 0)
    kernel = sum(v for z, v in present.items() if z != "Movable")  # no CMA in this guest
    assert value(m, "memhp_node_movable_accounted_bytes", node="0") == movable * 4096 == 4 * (128 << 20)
    assert value(m, "memhp_system_movable_kernel_ratio") == pytest.approx(movable / kernel)
    assert value(m, "memhp_system_movable_kernel_ratio") > (value(before, "memhp_system_movable_kernel_ratio") or 0)
    assert value(m, "memhp_hot_unpluggable_bytes", node="0") == 4 * (128 << 20)
    assert total(m, "memhp_uevents_total", action="online") >= total(before, "memhp_uevents_total", action="online") + 4


def test_injected_offline_failure_is_counted_with_its_reason(exporter, vm_guest, dimm):
    _, blocks = dimm
    victim = blocks[-1]
    assert vm_guest.set_state(victim, "online_movable") == 0
    assert vm_guest.dynamic_debug() == 0
    before = total(exporter.scrape(), "memhp_offline_failures_total", reason="notifier failure")
    assert vm_guest.inject_notifier_error("MEM_GOING_OFFLINE", -errno.EBUSY) == 0
    try:
        assert vm_guest.set_state(victim, "offline") == errno.EBUSY
    finally:
        assert vm_guest.inject_notifier_error("MEM_GOING_OFFLINE", 0) == 0
    m = exporter.wait(
        lambda m: total(m, "memhp_offline_failures_total", reason="notifier failure") > before,
        "the failure to be counted",
    )
    assert total(m, "memhp_block_offline_failures_total", block=str(victim), reason="notifier failure") >= 1
    assert vm_guest.block_state(victim) == "online"  # the kernel rolled back


def test_going_offline_is_seen_with_its_age(exporter, vm_guest, dimm):
    _, blocks = dimm
    victim = blocks[0]
    assert vm_guest.set_state(victim, "online_movable") == 0
    with vm_guest.stuck_offline(victim):
        m = exporter.wait(
            lambda m: value(m, "memhp_block_going_offline_seconds", block=str(victim), node="0") is not None,
            "the block to show going-offline",
        )
        assert value(m, "memhp_block_state", block=str(victim), node="0", state="going-offline") == 1
        first = value(m, "memhp_block_going_offline_seconds", block=str(victim), node="0")
        exporter.wait(
            lambda m: (value(m, "memhp_block_going_offline_seconds", block=str(victim), node="0") or 0) > first,
            "its age to grow",
        )


def test_removal_while_scraping_never_errors(exporter, vm_guest, dimm):
    id, blocks = dimm
    for b in blocks:
        assert vm_guest.set_state(b, "online_movable") == 0
    for b in blocks:
        assert vm_guest.set_state(b, "offline") == 0
    statuses: list[int] = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                status, body = vm_guest.http_get("/metrics", PORT, timeout=30)
                statuses.append(status if 'memhp_collector_success{collector="blocks"} 1.0' in body else -status)
            except Exception as e:
                statuses.append(repr(e))

    th = threading.Thread(target=hammer)
    th.start()
    try:
        vm_guest.unplug(id)
    finally:
        stop.set()
        th.join()
    assert statuses and all(s == 200 for s in statuses), statuses
    m = exporter.wait(
        lambda m: (
            not any(value(m, "memhp_block_state", block=str(b), node="0", state="offline") is not None for b in blocks)
        ),
        "removed blocks to vanish",
    )
    assert total(m, "memhp_uevents_total", action="remove") >= len(blocks)
    assert total(m, "memhp_parse_errors_total") == 0
