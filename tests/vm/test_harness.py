"""The QEMU test bed against Debian's real kernel: every helper other tests
rely on is proven here (boot, agent, QMP hot-add/removal, virtio-mem, error
injection, dynamic debug, port forwarding, capture round trip)."""

from __future__ import annotations

import errno
import json
import re
import subprocess
import tarfile

import pytest

from .capture import LSMEM_COLUMNS
from .guest import GUEST_RESULTS, MEMORY, REPO, MiB, VirtioMem, VMConfig, venv_python

pytestmark = pytest.mark.vm

NUMA2 = VMConfig(memory="1G", numa=("512M", "512M"))
AUTO_MOVABLE = VMConfig(
    cmdline=("memhp_default_state=online", "memory_hotplug.online_policy=auto-movable"),
    virtio_mem=(VirtioMem("vmem0", "1G", 0, "0"),),
)


def errname(e: int) -> str:
    return errno.errorcode.get(e, str(e)) if e else "OK"


def test_boot_records_kernel_and_mounts(vm_bed, vm_guest, record_property):
    g = vm_guest
    uname = g.run(["uname", "-r"]).check().stdout.strip()
    assert uname == vm_bed.kernel.release
    assert vm_bed.kernel.release in g.hello["uname"]
    record_property("kernel", vm_bed.kernel.describe)
    record_property("boot_timings", json.dumps(g.timings))
    # The guest runs the project's own interpreter from the read-only host root.
    r = g.python(["-c", "import sys; print(sys.prefix)"]).check()
    assert r.stdout.strip() == str(REPO / ".venv") or venv_python().parent.parent.samefile(r.stdout.strip())
    mounts = g.read("/proc/self/mounts")
    root = next(line for line in mounts.splitlines() if line.split()[1] == "/")
    assert root.split()[2] == "9p" and "ro" in root.split()[3].split(",")
    for mp, fs in (
        ("/proc", "proc"),
        ("/sys", "sysfs"),
        ("/dev", "devtmpfs"),
        ("/sys/kernel/debug", "debugfs"),
        ("/tmp", "tmpfs"),
        ("/run", "tmpfs"),
        (GUEST_RESULTS, "9p"),
    ):
        assert any(line.split()[1] == mp and line.split()[2] == fs for line in mounts.splitlines()), (mp, fs, mounts)
    # The host root really is read-only from the guest.
    r = g.run(["touch", str(REPO / ".memhp-guest-was-here")])
    assert r.rc != 0 and "Read-only file system" in r.stderr
    assert not (REPO / ".memhp-guest-was-here").exists()
    # ... and the results share is writable and visible on the host.
    g.run(f"echo from the guest > {GUEST_RESULTS}/hello.txt").check()
    assert (g.results / "hello.txt").read_text() == "from the guest\n"
    assert g.block_size == 128 * MiB
    assert g.blocks() == list(range(8))
    assert "memhp-init: starting agent" in g.console_log()


def test_dimm_hot_add_online_movable_offline_and_remove(vm_guest, record_property):
    g = vm_guest
    dimm = g.hotplug_dimm("512M")
    try:
        blocks = g.dimm_blocks(dimm)
        assert len(blocks) == 4
        assert blocks[0] * g.block_size >= 4 << 30  # QEMU's hotplug area above 4G
        info = g.block_info()
        for b in blocks:
            assert info[b]["state"] == "offline", info[b]  # Debian: no auto-online
            assert "Movable" in info[b]["valid_zones"].split()
        assert g.read(f"{MEMORY}/auto_online_blocks").strip() == "offline"
        for b in blocks:
            assert g.set_state(b, "online_movable") == 0
        info = g.block_info()
        assert all(info[b]["state"] == "online" for b in blocks)
        assert all(info[b]["valid_zones"] == "Movable" for b in blocks)
        movable = re.search(r"zone\s+Movable\n(?:.*\n)*?\s+present\s+(\d+)", g.read("/proc/zoneinfo"))
        assert int(movable.group(1)) * 4096 == 512 * MiB
        # Writing the state a block already has is EINVAL in the kernel.
        assert g.set_state(blocks[0], "online") == errno.EINVAL
        for b in reversed(blocks):
            assert g.set_state(b, "offline") == 0
        assert all(g.block_state(b) == "offline" for b in blocks)
    finally:
        g.unplug(dimm)
    assert not set(blocks) & set(g.blocks())
    assert g.blocks() == list(range(8))
    ev = [e for e in g.events() if e.get("event") == "DEVICE_DELETED" and e["data"].get("device") == dimm]
    assert ev, "device_del completed without DEVICE_DELETED"


def test_unplug_of_online_movable_dimm_offlines_it_in_the_kernel(vm_guest):
    g = vm_guest
    dimm = g.hotplug_dimm("256M")
    blocks = g.dimm_blocks(dimm)
    for b in blocks:
        assert g.set_state(b, "online_movable") == 0
    g.unplug(dimm)  # the ACPI eject path offlines Movable blocks itself
    assert not set(blocks) & set(g.blocks())


def test_offlining_boot_memory_fails(vm_guest, record_property):
    """Kernel-zone boot memory: EINVAL for the mixed-zone block 0 (valid_zones
    none), EBUSY for a DMA32 block holding unmovable allocations."""
    g = vm_guest
    info = g.block_info()
    assert info[0]["valid_zones"] == "none"
    e0 = g.set_state(0, "offline")
    record_property("offline_memory0", errname(e0))
    assert e0 == errno.EINVAL
    assert g.block_state(0) == "online"
    results = {}
    try:
        for b in sorted((b for b, r in info.items() if r["valid_zones"] == "DMA32"), reverse=True):
            e = g.set_state(b, "offline", timeout=30)
            results[b] = errname(e)
            if e == errno.EBUSY:
                break
    finally:
        for b, res in results.items():  # put back anything that did go offline
            if res == "OK":
                assert g.set_state(b, "online") == 0
    record_property("offline_dma32", json.dumps(results))
    assert "EBUSY" in results.values(), results
    assert all(g.block_state(b) == "online" for b in results)
    assert all(g.valid_zones(b) == "DMA32" for b in results)


@pytest.mark.parametrize("action", ["MEM_GOING_OFFLINE", "MEM_GOING_ONLINE"])
def test_injected_notifier_error(vm_guest, action):
    g = vm_guest
    assert g.dynamic_debug("file memory_hotplug.c +p") == 0
    dimm = g.hotplug_dimm("128M")
    b = g.dimm_blocks(dimm)[0]
    start, end = b * g.block_size, (b + 1) * g.block_size - 1
    try:
        if action == "MEM_GOING_OFFLINE":
            assert g.set_state(b, "online_movable") == 0
        assert g.inject_notifier_error(action, -errno.EBUSY) == 0
        try:
            if action == "MEM_GOING_OFFLINE":
                assert g.set_state(b, "offline") == errno.EBUSY
                assert g.block_state(b) == "online"
                msg = f"memory offlining [mem {start:#010x}-{end:#010x}] failed due to notifier failure"
            else:
                assert g.set_state(b, "online_movable") == errno.EBUSY
                assert g.block_state(b) == "offline"
                msg = f"online_pages [mem {start:#010x}-{end:#010x}] failed"
            g.wait_for(lambda: msg in g.kmsg(), 30, f"kernel log line {msg!r}")
        finally:
            assert g.inject_notifier_error(action, 0) == 0
        if action == "MEM_GOING_OFFLINE":
            assert g.set_state(b, "offline") == 0
    finally:
        g.unplug(dimm)


def test_block_held_going_offline_and_signal_backoff(vm_guest):
    g = vm_guest
    g.dynamic_debug()
    dimm = g.hotplug_dimm("128M")
    b = g.dimm_blocks(dimm)[0]
    try:
        assert g.set_state(b, "online_movable") == 0
        with g.stuck_offline(b):
            assert g.block_state(b) == "going-offline"
        assert g.block_state(b) == "online"
        start, end = b * g.block_size, (b + 1) * g.block_size - 1
        msg = f"memory offlining [mem {start:#010x}-{end:#010x}] failed due to signal backoff"
        g.wait_for(lambda: msg in g.kmsg(), 30, msg)
        # A write with a timeout is SIGKILLed the same way: EINTR, still online.
        with g.pinned(b):
            assert g.set_state(b, "offline", timeout=3) == errno.EINTR
            assert g.last_write_timed_out
        assert g.block_state(b) == "online"
        assert g.set_state(b, "offline") == 0
    finally:
        g.unplug(dimm)


def test_numa_dimm_on_node1_and_capture_round_trip(vm_guest_factory, tmp_path):
    g = vm_guest_factory(NUMA2)
    assert g.read("/sys/devices/system/node/online").strip() == "0-1"
    dimm = g.hotplug_dimm("512M", node=1)
    try:
        blocks = g.dimm_blocks(dimm)
        info = g.block_info()
        assert all(info[b]["node"] == 1 and info[b]["state"] == "offline" for b in blocks)
        assert g.set_state(blocks[0], "online_movable") == 0
        archive = g.capture("roundtrip")
        live = g.run(["lsmem", "-J", "-a", "-o", LSMEM_COLUMNS]).check().stdout
    finally:
        for b in g.dimm_blocks(dimm):
            g.set_state(b, "offline")
        g.unplug(dimm)
    root = tmp_path / "root"
    with tarfile.open(archive) as t:
        t.extractall(root, filter="data")
    mem = root / "sys/devices/system/memory"
    assert (mem / f"memory{blocks[0]}/node1").is_symlink()
    assert (mem / f"memory{blocks[0]}/node1").resolve() == (root / "sys/devices/system/node/node1")
    assert (root / f"sys/devices/system/node/node1/memory{blocks[0]}").is_symlink()
    assert (mem / f"memory{blocks[0]}/valid_zones").read_text() == "Movable\n"
    for f in (
        "proc/zoneinfo",
        "proc/meminfo",
        "proc/version",
        "proc/cmdline",
        "sys/module/memory_hotplug/parameters/online_policy",
        "sys/devices/system/memory/block_size_bytes",
    ):
        assert (root / f).stat().st_size > 0, f
    host = subprocess.run(
        ["lsmem", "--sysroot", str(root), "-J", "-a", "-o", LSMEM_COLUMNS], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(host) == json.loads(live)
    assert (root / "lsmem.json").read_text() == live
    meta = json.loads((root / "capture.json").read_text())
    assert meta["lsmem_stable"] and not meta["unreadable"]


def test_virtio_mem_resize_auto_movable(vm_guest_factory):
    g = vm_guest_factory(AUTO_MOVABLE)
    assert g.read(f"{MEMORY}/auto_online_blocks").strip() == "online"
    assert g.read("/sys/module/memory_hotplug/parameters/online_policy").strip() == "auto-movable"
    assert g.virtio_mem_resize("vmem0", "512M") == 512 * MiB
    added = [b for b in g.blocks() if b >= 8]
    assert len(added) == 4
    info = g.block_info()
    assert all(info[b]["state"] == "online" and info[b]["valid_zones"] == "Movable" for b in added), info
    g.virtio_mem_resize("vmem0", 0)
    g.wait_for(lambda: not [b for b in g.blocks() if b >= 8], 60, "virtio-mem blocks to be removed")


def test_http_forward_to_guest_server(vm_guest):
    g = vm_guest
    (g.results / "probe.txt").write_text("served from the guest\n")
    pid = g.spawn([str(venv_python()), "-m", "http.server", "8000", "--bind", "0.0.0.0", "--directory", GUEST_RESULTS])
    try:
        status, body = g.wait_for(lambda: _try_get(g), 60, "guest http server")
        assert status == 200 and body == "served from the guest\n"
    finally:
        g.kill(pid)


def _try_get(g):
    try:
        return g.http_get("/probe.txt", guest_port=8000, timeout=5)
    except OSError:
        return None
