"""The controller against the real kernel, in the QEMU test bed (tests/vm).

Every write goes to the guest's own sysfs: the controller runs *inside* the
guest (which chroots into this machine's root over read-only 9p), from this
checkout's virtualenv, with its policy and journal on the guest's tmpfs.

Run by hand with ``flock /tmp/memhp-vm.lock .venv/bin/python -m pytest -m vm
tests/vm/test_controller_vm.py``.
"""

from __future__ import annotations

import errno
import json
import signal
import uuid

import pytest

from tests.vm.guest import GUEST_RESULTS, REPO, Guest, venv_python
from tests.vm.guest_controller import RETRY, GuestController

pytestmark = pytest.mark.vm

ATTEMPTS = RETRY["attempts"]


@pytest.fixture
def dimm(vm_guest):
    """A hot-added 512M DIMM, left offline by the kernel; unplugged afterwards."""
    g = vm_guest
    dev = g.hotplug_dimm("512M")
    blocks = g.dimm_blocks(dev)
    g.wait_for(lambda: all(g.block_state(b) == "offline" for b in blocks), 120, "hot-added blocks offline")
    try:
        yield dev, blocks
    finally:
        g.inject_notifier_error("MEM_GOING_OFFLINE", 0)
        g.inject_notifier_error("MEM_GOING_ONLINE", 0)
        for b in blocks:  # eject needs them offline or Movable; make sure nothing is left in a kernel zone
            if g.block_state(b) == "online" and g.valid_zones(b) != "Movable":
                g.set_state(b, "offline", timeout=120)
        g.unplug(dev, timeout=300)


def states(g: Guest, blocks) -> list[str | None]:
    return [g.block_state(b) for b in blocks]


def online_movable(g: Guest, blocks) -> None:
    for b in blocks:
        assert g.set_state(b, "online_movable") == 0
    assert all(g.valid_zones(b) == "Movable" for b in blocks)


_RULE_SCRIPT = """
import json, sys
from memhp.controller.alert import Alert
from memhp.controller.config import load_config
from memhp.controller.engine import Engine
from memhp.exporter.kernel.paths import Paths
engine = Engine(load_config(sys.argv[1]), Paths()).open()
alert = Alert("MemhpHotAddedMemoryOffline", "firing", {"alertname": "MemhpHotAddedMemoryOffline", "node": "0"},
              fingerprint="vmfp", starts_at="2024-05-01T10:00:00.000Z")
out = [engine.handle(alert), engine.handle(alert)]
engine.close()
print(json.dumps([{"status": o.status, "results": [[r.block, r.op, r.result, r.zone_after] for r in o.results]}
                  for o in out]))
"""


def test_rule_onlines_hot_added_blocks(vm_guest, dimm):
    g = vm_guest
    _, blocks = dimm
    ctl = GuestController(
        g,
        rules=[
            {
                "name": "online-new",
                "alertname": "MemhpHotAddedMemoryOffline",
                "action": "online-new",
                "count": len(blocks),
                "zone": "movable",
                "node_label": "node",
            }
        ],
    )
    r = g.python(["-c", _RULE_SCRIPT, ctl.config], timeout=600).check("rule script")
    first, second = json.loads(r.stdout)
    assert first["status"] == "done"
    assert [x[0] for x in first["results"]] == blocks  # lowest address first
    assert all(x[1:] == ["online_movable", "ok", "Movable"] for x in first["results"])
    assert second["status"] == "duplicate"  # the same occurrence never acts twice
    assert states(g, blocks) == ["online"] * len(blocks)
    assert all(g.valid_zones(b) == "Movable" for b in blocks)
    assert len(ctl.journal("action_start")) == 1


def test_act_offlines_movable_blocks_highest_first(vm_guest, dimm):
    g = vm_guest
    _, blocks = dimm
    online_movable(g, blocks)
    ctl = GuestController(g)
    rc, out = ctl.act("offline", "--count", "2")
    assert rc == 0 and out["status"] == "done", out
    assert [r["block"] for r in out["results"]] == [blocks[-1], blocks[-2]]
    assert all(r["result"] == "ok" and r["attempts"] == 1 for r in out["results"])
    assert states(g, blocks) == ["online", "online", "offline", "offline"]
    # the journal holds a fsynced pair per attempt, with the real states
    pairs = [
        (r["type"], r["block"], r.get("state_before") or r.get("state_after"))
        for r in ctl.journal()
        if r["type"] in ("attempt_start", "attempt_end")
    ]
    assert pairs == [
        ("attempt_start", blocks[-1], "online"),
        ("attempt_end", blocks[-1], "offline"),
        ("attempt_start", blocks[-2], "online"),
        ("attempt_end", blocks[-2], "offline"),
    ]
    # already offline: success without a write
    rc, out = ctl.act("offline", "--blocks", str(blocks[-1]))
    assert rc == 0 and out["results"][0]["result"] == "already" and out["results"][0]["attempts"] == 0


def test_dry_run_changes_nothing(vm_guest, dimm):
    g = vm_guest
    _, blocks = dimm
    online_movable(g, blocks)
    ctl = GuestController(g)
    rc, out = ctl.act("offline", "--count", "2", "--dry-run")
    assert rc == 0 and out["status"] == "dry_run" and [s["block"] for s in out["plan"]] == blocks[:-3:-1]
    assert states(g, blocks) == ["online"] * 4
    assert [r["type"] for r in ctl.journal()] == ["dry_run"]


def test_offline_of_a_kernel_zone_block_fails_with_the_real_errno_within_budget(vm_guest):
    g = vm_guest
    info = g.block_info()
    ctl = GuestController(g)
    # boot memory in a kernel zone, highest address first, until the kernel has refused one with a
    # transient errno (EBUSY: unmovable pages) -- permanent ones (EINVAL: a hole) on the way are checked too
    candidates = sorted(
        (b for b, r in info.items() if r["state"] == "online" and r["valid_zones"] not in ("Movable", "none")),
        reverse=True,
    )
    failures = {}
    for b in candidates:
        n_before = len(ctl.journal("attempt_end"))
        rc, out = ctl.act("offline", "--blocks", str(b), "--zone", "kernel")
        res = out["results"][0]
        if res["result"] == "ok":  # all its pages were movable: put it back
            assert g.set_state(b, "online_kernel") == 0
            continue
        assert rc == 1 and out["status"] == "failed", out
        name = res["errno_name"]
        print(f"memory{b} ({info[b]['valid_zones']}): {name} after {res['attempts']} attempt(s)")
        assert name in ("EBUSY", "EINVAL", "EAGAIN"), res  # what offline_pages() answers
        retryable = name in ("EBUSY", "EAGAIN")
        assert res["attempts"] == (ATTEMPTS if retryable else 1)
        ends = ctl.journal("attempt_end")[n_before:]
        assert len(ends) == res["attempts"] and all(e["errno_name"] == name and e["block"] == b for e in ends)
        assert all(e["retryable"] == retryable for e in ends)
        assert g.block_state(b) == "online"
        failures[b] = name
        if retryable:
            break
    assert failures, "every kernel-zone boot block offlined: no unmovable memory found"


def test_injected_notifier_failures_are_retried_exactly_then_quarantined(vm_guest, dimm):
    g = vm_guest
    _, blocks = dimm
    online_movable(g, blocks)
    ctl = GuestController(g, guards={"quarantine": {"after_failures": 1, "duration": "1h"}})
    b = blocks[-1]
    assert g.inject_notifier_error("MEM_GOING_OFFLINE", -errno.EBUSY) == 0
    rc, out = ctl.act("offline", "--blocks", str(b))
    g.inject_notifier_error("MEM_GOING_OFFLINE", 0)
    assert rc == 1 and out["status"] == "failed"
    res = out["results"][0]
    assert (res["errno_name"], res["attempts"]) == ("EBUSY", ATTEMPTS)
    ends = ctl.journal("attempt_end")
    assert [e["attempt"] for e in ends] == list(range(1, ATTEMPTS + 1))
    assert all(e["errno"] == errno.EBUSY and e["state_after"] == "online" for e in ends)
    assert [q["block"] for q in ctl.journal("quarantine")] == [b]
    # quarantined: refused without a write even though the injection is gone
    rc, out = ctl.act("offline", "--blocks", str(b))
    assert rc == 3 and out["guard"] == "quarantine"
    assert len(ctl.journal("attempt_start")) == ATTEMPTS
    # a planned target skips the quarantined block
    rc, out = ctl.act("offline", "--count", "1")
    assert rc == 0 and [r["block"] for r in out["results"]] == [blocks[-2]]


def test_injected_online_failure_is_not_retried_when_permanent(vm_guest, dimm):
    g = vm_guest
    _, blocks = dimm
    ctl = GuestController(g)
    assert g.inject_notifier_error("MEM_GOING_ONLINE", -errno.EPERM) == 0
    rc, out = ctl.act("online", "--blocks", str(blocks[0]), "--zone", "movable")
    g.inject_notifier_error("MEM_GOING_ONLINE", 0)
    res = out["results"][0]
    assert rc == 1 and (res["errno_name"], res["attempts"]) == ("EPERM", 1)
    assert g.block_state(blocks[0]) == "offline"


def _pin(g: Guest, block: int) -> int:
    tag = f"ctlpin{block}-{uuid.uuid4().hex[:6]}"
    pid = g.spawn(
        [str(venv_python()), str(REPO / "tests/vm/pin_pages.py"), str(block)], log=f"{GUEST_RESULTS}/{tag}.log"
    )
    log = g.results / f"{tag}.log"
    g.wait_for(lambda: "pinned" in log.read_text() or g.poll(pid) is not None, 120, f"a pinned page in {block}")
    if "pinned" not in log.read_text():
        g.kill(pid, signal.SIGKILL)
        pytest.fail(f"could not pin a page of memory{block}: {log.read_text()}")
    return pid


def _pinnable_block(g: Guest, blocks) -> tuple[int, int]:
    for b in reversed(blocks):
        tag_pid = None
        try:
            tag_pid = _pin(g, b)
            return b, tag_pid
        except pytest.fail.Exception:
            continue
    pytest.fail("no block of the DIMM got a pinnable page")


def test_stuck_offline_times_out_with_signal_backoff(vm_guest, dimm):
    g = vm_guest
    _, blocks = dimm
    online_movable(g, blocks)
    b, pin = _pinnable_block(g, blocks)
    try:
        ctl = GuestController(g, retry={"attempts": 2, "attempt_timeout": "3s", "kill_grace": "10s"})
        rc, out = ctl.act("offline", "--blocks", str(b))
    finally:
        g.kill(pin, signal.SIGKILL)
    res = out["results"][0]
    assert rc == 1 and (res["errno_name"], res["attempts"]) == ("timeout", 2)
    print("stuck offline attempts:", [(e["errno_name"], e["errno"], e["duration"]) for e in ctl.journal("attempt_end")])
    for e in ctl.journal("attempt_end"):
        # SIGTERM made offline_pages() give up with EINTR ("signal backoff"), the block went back online
        assert e["timed_out"] and not e["killed"] and e["errno"] == errno.EINTR, e
        assert e["state_after"] == "online" and 3 <= e["duration"] < 13
    assert g.block_state(b) == "online"


def test_kill_9_mid_action_then_restart_reconciles(vm_guest, dimm):
    g = vm_guest
    _, blocks = dimm
    online_movable(g, blocks)
    b, pin = _pinnable_block(g, blocks)
    ctl = GuestController(g, retry={"attempts": 1, "attempt_timeout": "10m"})
    try:
        pid = g.spawn(ctl.argv("act", "offline", "--blocks", str(b)), cwd=str(REPO))
        g.wait_for(
            lambda: ctl.journal()[-1:] and ctl.journal()[-1]["type"] == "attempt_start",
            300,
            "the offline write to start",
        )
        g.wait_for(lambda: g.block_state(b) == "going-offline", 120, f"memory{b} going-offline")
        before = ctl.journal_text()
        g.kill(pid, signal.SIGKILL)
        # the writer child dies with its parent (PR_SET_PDEATHSIG): the kernel abandons the offline
        g.wait_for(lambda: g.block_state(b) == "online", 120, f"memory{b} back online")
    finally:
        g.kill(pin, signal.SIGKILL)
    assert ctl.journal_text() == before
    assert [r["type"] for r in ctl.journal()] == ["action_start", "attempt_start"]
    rc, out = ctl.act("offline", "--blocks", str(b), "--dry-run")  # a restart reconciles first
    assert rc == 0
    after = ctl.journal_text()
    assert after.startswith(before)
    (rec,) = ctl.journal("reconcile")
    assert (rec["block"], rec["op"], rec["state_before"], rec["state_now"], rec["outcome"]) == (
        b,
        "offline",
        "online",
        "online",
        "not_applied",
    )
    assert [r["result"] for r in ctl.journal("reconcile_action")] == ["interrupted"]
