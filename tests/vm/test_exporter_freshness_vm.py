"""The exporter's event-driven block snapshot against the real kernel: every
scrape taken after a sysfs write (or a hot-add, device_del or virtio-mem
resize) has completed in the guest shows the new state, and a block held in
going-offline (which sends no uevent) shows within the state interval."""

from __future__ import annotations

import errno
import time

import pytest

from .guest import VirtioMem, VMConfig
from .test_exporter_vm import Exporter, value

pytestmark = pytest.mark.vm

PORT = 9101
STATE_INTERVAL = 3.0
CONFIG = VMConfig(virtio_mem=(VirtioMem("vmem0", "2G", 0, "0"),))


@pytest.fixture(scope="module")
def guest(vm_guest_factory):
    return vm_guest_factory(CONFIG)


@pytest.fixture(scope="module")
def exporter(guest):
    e = Exporter(
        guest,
        ("--collector.blocks.all", "--collector.blocks.state-interval", str(STATE_INTERVAL)),
        port=PORT,
        # TCG on a loaded host: a scrape can take long; freshness is about what it shows.
        scrape_timeout=180,
    )
    yield e
    guest.kill(e.pid)


def mismatches(guest, metrics) -> list[str]:
    """Every block the guest has, compared with the scrape: state and valid_zones."""
    truth = guest.block_info()
    out = []
    exported = {dict(labels)["block"] for (name, labels) in metrics if name == "memhp_block_info"}
    for b, info in truth.items():
        node = str(info["node"])
        if value(metrics, "memhp_block_state", block=str(b), node=node, state=info["state"]) != 1:
            out.append(f"memory{b}: state {info['state']} not exported")
        zones = info["valid_zones"]
        labels = {
            dict(ls).get("valid_zones")
            for (n, ls) in metrics
            if n == "memhp_block_info" and dict(ls)["block"] == str(b)
        }
        if labels != {zones}:
            out.append(f"memory{b}: valid_zones {zones!r}, exported {labels}")
    for gone in exported - {str(b) for b in truth}:
        out.append(f"memory{gone}: exported but gone")
    return out


def _dimm_steps(guest, scrape_now) -> list[int]:
    """Hot-add, online, a failed and real offlines and unplug of DIMMs, a scrape after each."""
    # Kernel-zone memory takes unmovable pages within moments and can seldom be
    # offlined again: it gets a DIMM of its own, left in this test's own guest.
    kernel_dimm = guest.hotplug_dimm("256M")
    scrape_now("hot-add (kernel DIMM)")
    kernel_block = guest.dimm_blocks(kernel_dimm)[0]
    assert guest.set_state(kernel_block, "online_kernel") == 0
    scrape_now(f"online_kernel memory{kernel_block}")
    dimm = guest.hotplug_dimm("512M")
    blocks = guest.dimm_blocks(dimm)
    scrape_now("hot-add")
    for b in blocks:
        assert guest.set_state(b, "online_movable") == 0
        scrape_now(f"online_movable memory{b}")
    rest = blocks
    victim = rest[-1]
    assert guest.dynamic_debug() == 0
    assert guest.inject_notifier_error("MEM_GOING_OFFLINE", -errno.EBUSY) == 0
    try:
        assert guest.set_state(victim, "offline") == errno.EBUSY
    finally:
        assert guest.inject_notifier_error("MEM_GOING_OFFLINE", 0) == 0
    scrape_now(f"failed offline memory{victim}")
    for b in reversed(blocks):
        assert guest.set_state(b, "offline") == 0
        scrape_now(f"offline memory{b}")
    guest.unplug(dimm)
    scrape_now("device_del")
    return blocks


def _virtio_mem_steps(guest, scrape_now) -> None:
    """virtio-mem grow, online, offline and shrink, a scrape after each."""
    before = set(guest.blocks())
    guest.virtio_mem_resize("vmem0", "512M")
    guest.wait_for(lambda: len(set(guest.blocks()) - before) == 4, 120, "virtio-mem blocks to appear")
    guest.wait_linked(set(guest.blocks()) - before)
    scrape_now("virtio-mem grow")
    added = sorted(set(guest.blocks()) - before)
    for b in added:
        assert guest.set_state(b, "online_movable") == 0
        scrape_now(f"online_movable virtio-mem memory{b}")
    for b in added:
        assert guest.set_state(b, "offline") == 0
    scrape_now("offline virtio-mem")
    guest.virtio_mem_resize("vmem0", "0")
    guest.wait_for(lambda: not set(added) & set(guest.blocks()), 120, "virtio-mem blocks to go")
    scrape_now("virtio-mem shrink")


def test_every_scrape_after_a_change_is_fresh(exporter, guest):
    stale: list[str] = []
    steps = 0

    def scrape_now(step: str) -> None:
        # No waiting, no retry: the first scrape after the change must show it.
        nonlocal steps
        steps += 1
        try:
            metrics = exporter.scrape()
        except OSError as e:
            raise AssertionError(f"scrape after {step} failed: {e}\n{exporter.log_tail(stacks=True)}") from e
        bad = mismatches(guest, metrics)
        if bad:
            stale.append(f"{step}: {bad[:4]}")

    scrape_now("start")
    blocks = _dimm_steps(guest, scrape_now)
    _virtio_mem_steps(guest, scrape_now)
    assert not stale, f"{len(stale)} stale scrapes of {steps}: {stale}"
    m = exporter.scrape()
    assert value(m, "memhp_block_snapshot_mode", mode="events") == 1
    assert (value(m, "memhp_block_snapshot_uevents_total") or 0) >= 2 * len(blocks)


def test_going_offline_shows_within_the_state_interval(exporter, guest):
    dimm = guest.hotplug_dimm("512M")
    victim = guest.dimm_blocks(dimm)[0]
    try:
        assert guest.set_state(victim, "online_movable") == 0
        with guest.stuck_offline(victim):
            start = time.monotonic()
            exporter.wait(
                lambda m: value(m, "memhp_block_state", block=str(victim), node="0", state="going-offline") == 1,
                f"going-offline to show; exporter log:\n{exporter.log_tail()}",
                timeout=4 * STATE_INTERVAL + 60,
            )
            seen = time.monotonic() - start
        # the guest agent's round trips (TCG) add to the interval; the kernel sent no event
        assert seen <= 2 * STATE_INTERVAL + 60, seen
        m = exporter.wait(
            lambda m: value(m, "memhp_block_state", block=str(victim), node="0", state="online") == 1,
            "back online after the offline gave up",
            timeout=4 * STATE_INTERVAL + 60,
        )
        assert value(m, "memhp_block_going_offline_seconds", block=str(victim), node="0") is None
    finally:
        guest.set_state(victim, "offline")
        guest.unplug(dimm)
