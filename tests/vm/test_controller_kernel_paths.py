"""Controller paths against Debian's real kernel, in the QEMU test bed.

* ``act rebalance``: ZONE_MOVABLE blocks offlined and onlined to ZONE_NORMAL
  until MOVABLE:KERNEL (as the exporter computes it from the guest's
  /proc/zoneinfo) is under the target;
* ``online`` with zone ``auto``: the auto_movable_ratio ceiling accounted as
  the kernel does (present_early_pages: hot-added kernel memory makes no room
  for more Movable; ratio 0 = never Movable), compared with the kernel's own
  auto-movable online policy on identical blocks;
* the daemon's webhook path: the console script as a daemon in the guest, an
  Alertmanager v4 payload POSTed from the host with a bearer token.

Every sysfs write happens in the guest.  Tests that leave blocks in a kernel
zone (which the kernel may then fill with unmovable pages, so they can
neither be offlined nor unplugged) use a private guest and close it.

By hand: ``flock /tmp/memhp-vm.lock .venv/bin/python -m pytest tests/vm/test_controller_kernel_paths.py``.
"""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
import uuid

import pytest

from memhp.exporter.kernel.accounting import Balance, balance
from memhp.exporter.kernel.fsread import ParseErrors
from memhp.exporter.kernel.zoneinfo import parse_zoneinfo
from tests.helpers.web import webhook_body
from tests.vm.guest import Guest, VMConfig
from tests.vm.guest_controller import GuestController

pytestmark = pytest.mark.vm

MEMORY = "/sys/devices/system/memory"
RATIO_PARAM = "/sys/module/memory_hotplug/parameters/auto_movable_ratio"
POLICY_PARAM = "/sys/module/memory_hotplug/parameters/online_policy"
RETRY = {"attempts": 2, "total_timeout": "5m"}  # of memhp-controller in the guest (tests/vm/guest_controller.py)


def guest_balance(g: Guest) -> Balance:
    """MOVABLE:KERNEL of the guest, computed by the exporter's own code from the guest's /proc/zoneinfo."""
    errors = ParseErrors()
    zi = parse_zoneinfo(g.read("/proc/zoneinfo"), errors)
    assert not errors.total(), errors.counts()
    return balance(zi.zones)


def hot_add(g: Guest, size: str, n: int) -> tuple[list[str], list[int]]:
    dimms = [g.hotplug_dimm(size) for _ in range(n)]
    blocks = [b for d in dimms for b in g.dimm_blocks(d)]
    g.wait_for(lambda: all(g.block_state(b) == "offline" for b in blocks), 120, "hot-added blocks offline")
    return dimms, blocks


def pages_per_block(g: Guest) -> int:
    bs = int(g.read(f"{MEMORY}/block_size_bytes").strip(), 16)
    return bs // int(g.run(["getconf", "PAGESIZE"]).check().stdout)


def kernel_auto_zones(movable: int, kernel_early: int, ratio: int, pages: int, n: int) -> list[str]:
    """Zones the kernel's auto-movable policy gives ``n`` one-block memory devices onlined in turn.

    mm/memory_hotplug.c, auto_movable_can_online_movable(): Movable iff
    ``movable_pages + nr_pages <= auto_movable_ratio * kernel_early_pages / 100``;
    hot-added memory onlined to a kernel zone is not "early", so it does not raise the ceiling.
    """
    out = []
    for _ in range(n):
        if ratio and movable + pages <= ratio * kernel_early // 100:
            out.append("Movable")
            movable += pages
        else:
            out.append("Normal")
    return out


def zone_of(token: str) -> str:
    return {"online_movable": "Movable", "online_kernel": "Normal"}[token]


# --------------------------------------------------------------------------------------------- rebalance


def test_rebalance_moves_movable_blocks_to_normal_until_under_target(vm_guest_factory):
    g = vm_guest_factory(VMConfig(), fresh=True)  # leaves hot-added memory in ZONE_NORMAL: private guest
    try:
        _, blocks = hot_add(g, "1G", 2)
        for b in blocks:
            assert g.set_state(b, "online_movable") == 0
        pages = pages_per_block(g)
        before = guest_balance(g)
        target = 1.0
        assert before.ratio > 1.9, before  # 2G Movable : ~1G boot memory
        # just enough: the smallest n that brings (M - n) : (K + n) to the target
        need = next(
            n
            for n in range(len(blocks) + 1)
            if before.movable_pages - n * pages <= target * (before.kernel_pages + n * pages)
        )
        ctl = GuestController(g, retry=RETRY, name="kp")
        rc, out = ctl.act("rebalance", "--target-ratio", str(target))
        assert rc == 0 and out["status"] == "done", out
        moved = sorted(blocks, reverse=True)[:need]  # highest address first
        assert [s["block"] for s in out["plan"]] == moved
        assert [(r["block"], r["op"], r["result"]) for r in out["results"]] == [
            x for b in moved for x in ((b, "offline", "ok"), (b, "online_kernel", "ok"))
        ]
        # the kernel's view: the moved blocks are in ZONE_NORMAL, the rest still Movable
        info = g.block_info()
        assert {b: info[b]["valid_zones"] for b in moved} == dict.fromkeys(moved, "Normal")
        assert all(info[b]["state"] == "online" for b in blocks)
        assert all(info[b]["valid_zones"] == "Movable" for b in blocks if b not in moved)
        after = guest_balance(g)
        assert after.ratio < target, after
        assert after.movable_pages == before.movable_pages - need * pages
        assert after.kernel_pages == before.kernel_pages + need * pages
        assert (after.movable_pages + pages) / (after.kernel_pages - pages) > target  # one fewer would not do
        # the journal: every write, in order, with the real states and zones
        steps = [
            (r["type"], r["block"], r["op"], r.get("state_before") or r.get("state_after"), r.get("errno"))
            for r in ctl.journal()
            if r["type"] in ("attempt_start", "attempt_end")
        ]
        assert steps == [
            x
            for b in moved
            for x in (
                ("attempt_start", b, "offline", "online", None),
                ("attempt_end", b, "offline", "offline", 0),
                ("attempt_start", b, "online_kernel", "offline", None),
                ("attempt_end", b, "online_kernel", "online", 0),
            )
        ]
        assert [r["zone_after"] for r in ctl.journal("attempt_end") if r["op"] == "online_kernel"] == ["Normal"] * need
        assert [(r["block"], r["op"], r["result"]) for r in ctl.journal("block_result")] == [
            (r["block"], r["op"], r["result"]) for r in out["results"]
        ]
        (start,) = ctl.journal("action_start")
        assert start["action"] == "rebalance" and start["plan"] == [
            {"block": b, "ops": ["offline", "online_kernel"]} for b in moved
        ]
        (end,) = ctl.journal("action_end")
        assert (end["result"], end["changed"], end["failed"]) == ("done", sorted(moved), [])
        # under the target now: nothing to do, refused rather than a no-op
        rc, out = ctl.act("rebalance", "--target-ratio", str(target))
        assert rc == 3 and out["guard"] == "empty_target", out
        print(f"rebalance: MOVABLE:KERNEL {before.ratio:.3f} -> {after.ratio:.3f}, moved {moved}")
    finally:
        g.close()


# --------------------------------------------------------------------------------------------- online auto

RATIO = 35  # percent: with ~1G of boot memory the ceiling is ~2.8 blocks of 128M


def test_online_auto_honours_auto_movable_ratio(vm_guest_factory):
    """Default (contig-zones) policy: the controller's ``auto`` alone enforces auto_movable_ratio."""
    g = vm_guest_factory(VMConfig(slots=8), fresh=True)
    try:
        assert g.read(POLICY_PARAM).strip() == "contig-zones"
        assert g.write(RATIO_PARAM, str(RATIO), timeout=None) == 0
        pages = pages_per_block(g)
        boot = guest_balance(g)  # nothing hot-added yet: present == present_early
        _, blocks = hot_add(g, "128M", 4)
        assert len(blocks) == 4
        expected = kernel_auto_zones(boot.movable_pages, boot.kernel_pages, RATIO, pages, 4)
        assert "Movable" in expected and "Normal" in expected, expected
        ctl = GuestController(g, retry=RETRY, name="kp")
        rc, out = ctl.act("online", "--count", "4", "--zone", "auto")
        assert rc == 0 and out["status"] == "done", out
        assert [(r["block"], r["result"], r["zone_after"]) for r in out["results"]] == [
            (b, "ok", z) for b, z in zip(blocks, expected)
        ]
        assert [g.valid_zones(b) for b in blocks] == expected
        assert [r["op"] for r in ctl.journal("block_result")] == [
            "online_movable" if z == "Movable" else "online_kernel" for z in expected
        ]
        # the kernel's own accounting (boot memory only as KERNEL) stays within the ceiling
        now = guest_balance(g)
        assert now.movable_pages <= RATIO * boot.kernel_pages // 100
        print(f"contig-zones, auto_movable_ratio={RATIO}: auto onlined {list(zip(blocks, expected))}")
    finally:
        g.close()


def test_online_auto_matches_the_kernels_auto_movable_policy(vm_guest_factory):
    """``memory_hotplug.online_policy=auto-movable``: the controller plans what the kernel does."""
    g = vm_guest_factory(VMConfig(slots=8, cmdline=("memory_hotplug.online_policy=auto-movable",)), fresh=True)
    try:
        assert g.read(POLICY_PARAM).strip() == "auto-movable"
        assert g.write(RATIO_PARAM, str(RATIO), timeout=None) == 0
        pages = pages_per_block(g)
        boot = guest_balance(g)
        _, blocks = hot_add(g, "128M", 5)  # one block per memory device: the kernel's per-device accounting
        assert len(blocks) == 5
        ctl = GuestController(g, retry=RETRY, name="kp")
        # the controller's plan for four identical blocks, from the initial state...
        rc, out = ctl.act("online", "--count", "4", "--zone", "auto", "--dry-run")
        assert rc == 0 and out["status"] == "dry_run", out
        assert [s["block"] for s in out["plan"]] == blocks[:4]
        planned = [zone_of(s["ops"][0]) for s in out["plan"]]
        # ...and what the kernel does with them: `echo online` under auto-movable, in the same order
        kernel = []
        for b in blocks[:4]:
            assert g.set_state(b, "online") == 0
            kernel.append(g.valid_zones(b))
        print(f"auto-movable, auto_movable_ratio={RATIO}: kernel {kernel}, controller planned {planned}")
        assert planned == kernel == kernel_auto_zones(boot.movable_pages, boot.kernel_pages, RATIO, pages, 4)
        assert "Movable" in kernel and "Normal" in kernel
        # the fifth, identical block: the kernel's choice is the first zone valid_zones lists
        b5 = blocks[4]

        def controller_choice() -> str:
            rc, out = ctl.act("online", "--blocks", str(b5), "--zone", "auto", "--dry-run")
            assert rc == 0, out
            return zone_of(out["plan"][0]["ops"][0])

        assert g.write(RATIO_PARAM, "301", timeout=None) == 0  # the kernel default: room for it
        assert g.valid_zones(b5).split()[0] == controller_choice() == "Movable"
        assert g.write(RATIO_PARAM, "0", timeout=None) == 0  # 0: the kernel never picks Movable
        assert g.valid_zones(b5).split()[0] == controller_choice() == "Normal"
        rc, out = ctl.act("online", "--blocks", str(b5), "--zone", "auto")
        assert rc == 0 and out["results"][0]["zone_after"] == "Normal", out
        assert g.valid_zones(b5) == "Normal"
    finally:
        g.close()


# --------------------------------------------------------------------------------------------- webhook daemon

ALERT = "MemhpHotAddedMemoryOffline"
GUEST_PORT = 10312


def _payload(alert_labels: dict, starts_at: str, fingerprint: str) -> dict:
    labels = {"alertname": ALERT, **alert_labels}
    summary = {"summary": "hot-added memory is offline"}
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": summary,
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.invalid:9090/graph",
        "fingerprint": fingerprint,
    }
    return webhook_body(
        [alert],
        receiver="memhp-controller",
        groupKey=f'{{}}/{{alertname=~"Memhp.+"}}:{{alertname="{ALERT}"}}',
        groupLabels={"alertname": ALERT},
        commonLabels=labels,
        commonAnnotations=summary,
    )


def _post(port: int, body: dict, token: str) -> tuple[int, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhook/alertmanager",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_daemon_webhook_onlines_hot_added_blocks(vm_guest):
    g = vm_guest
    dimm, blocks = None, []
    ctl = GuestController(
        g,
        rules=[
            {
                "name": "online-hot-added",
                "alertname": ALERT,
                "matchers": ['severity=~"warning|page"'],
                "action": "online-new",
                "count": 4,
                "zone": "movable",
                "node_label": "node",
            }
        ],
        retry=RETRY,
        name="kp",
    )
    token = f"kp-{uuid.uuid4().hex}"
    try:
        dimm = g.hotplug_dimm("512M")
        blocks = g.dimm_blocks(dimm)
        g.wait_for(lambda: all(g.block_state(b) == "offline" for b in blocks), 120, "hot-added blocks offline")
        # the real console script, not `python -m`, from a cwd outside the repo
        port = ctl.start(GUEST_PORT, token=token, timeout=120)
        body = _payload(
            {"node": "0", "severity": "warning", "instance": "guest"},
            "2024-05-01T10:00:00.123456789Z",
            uuid.uuid4().hex[:16],
        )
        # a wrong token is refused and acts on nothing
        code, text = _post(port, body, "not-" + token)
        assert code == 401, text
        assert [g.block_state(b) for b in blocks] == ["offline"] * 4 and ctl.journal() == []
        code, text = _post(port, body, token)
        assert code == 200, text
        g.wait_for(
            lambda: [g.block_state(b) for b in blocks] == ["online"] * 4, 120, f"blocks {blocks} onlined by the daemon"
        )
        g.wait_for(lambda: ctl.journal("action_end"), 60, "the action to be journalled")
        assert [g.valid_zones(b) for b in blocks] == ["Movable"] * 4
        (start,) = ctl.journal("action_start")
        assert (start["rule"], start["action"], start["source"], start["fingerprint"], start["starts_at"]) == (
            "online-hot-added",
            "online-new",
            "webhook",
            body["alerts"][0]["fingerprint"],
            "2024-05-01T10:00:00.123Z",
        )
        assert [(r["block"], r["op"], r["result"], r["zone_after"]) for r in ctl.journal("block_result")] == [
            (b, "online_movable", "ok", "Movable") for b in blocks
        ]
        assert [r["result"] for r in ctl.journal("action_end")] == ["done"]
        # Alertmanager's repeat of the same occurrence is accepted and does not act again
        code, text = _post(port, body, token)
        assert code == 200, text
        assert len(ctl.journal("action_start")) == 1
        rc = ctl.stop(signal.SIGTERM)
        assert rc == 0, f"controller exited {rc} on SIGTERM:\n{ctl.log_text()}"
        assert "shutting down" in ctl.log_text()
    finally:
        ctl.stop(signal.SIGKILL)
        if dimm is not None:
            g.unplug(dimm, timeout=300)  # Movable (or offline) blocks: the eject offlines them
