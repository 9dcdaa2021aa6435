#!/usr/bin/env python3
"""Hot-added memory, add uevent -> online: memhp's event path against a blind baseline (issue 23).

    flock /tmp/memhp-vm.lock .venv/bin/python -m bench.event_latency [--dimms 4] [--virtio-steps 4]

Boots one QEMU TCG guest (Debian's kernel, ``auto_online_blocks=offline``) and
measures, in the guest, each hot-added block from its ``add`` uevent to its
``online`` uevent (tests/vm/uevent_recorder.py, one process, CLOCK_MONOTONIC):

1. memhp: ``memhp-controller`` with an ``event: memory-added`` rule (zone auto);
   ``--dimms`` pc-dimms of 1G one after the other, then virtio-mem device
   vmem0 grown in ``--virtio-steps`` steps of 1G;
2. the baseline, in the same guest with memhp stopped: ``busybox uevent`` runs a
   shell for each add uevent that writes ``online`` (what RHEL's udev rule
   does), for the same pc-dimms and vmem1's steps.

Prints p50/p99/max per path and the zones the blocks landed in, as JSON.  The
target (docs/performance.md): memhp's p99 within 0.5 s of the baseline's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

# The QEMU test bed (tests/vm) is test code, not typed to the package's standard: loaded by name.
ep: Any = importlib.import_module("tests.vm.event_path")
vm: Any = importlib.import_module("tests.vm.guest")
gc: Any = importlib.import_module("tests.vm.guest_controller")

PORT = 10324
TARGET = 0.5  # seconds: memhp p99 - baseline p99


def config(dimms: int, steps: int) -> Any:
    return vm.VMConfig(
        memory="2G",
        slots=2 * dimms + 2,
        maxmem=f"{2 + 2 * (dimms + steps) + 2}G",
        virtio_mem=(vm.VirtioMem("vmem0", f"{steps}G", 0, "0"), vm.VirtioMem("vmem1", f"{steps}G", 0, "0")),
    )


def measure(g, dimms: int, steps: int, device: str) -> dict:
    rec = ep.Recorder(g, name=device)
    try:
        added = ep.grow(g, dimms=("1G",) * dimms, virtio=(device, tuple(f"{i}G" for i in range(1, steps + 1))))
        rec.wait_online(added, 1800)
        return ep.summary(rec.latencies(added))
    finally:
        rec.stop()


def run(dimms: int, steps: int, settle: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="memhp-bench-event-") as tmp:
        bed = vm.TestBed.prepare(Path(tmp))
        g = bed.boot(config(dimms, steps))
        try:
            assert g.read("/sys/devices/system/memory/auto_online_blocks").strip() == "offline"
            ctl = gc.GuestController(
                g,
                rules=[{"name": "hot-added", "event": "memory-added", "action": "online", "zone": "auto"}],
                guards={"max_blocks_per_hour": 100000},
                name="bench",
            )
            g.run(f"sed -i 's|^controller:|controller:\\n  event_settle: {settle}|' {ctl.config}").check("settle")
            ep.start_controller(ctl, PORT, "bench-token")
            memhp = measure(g, dimms, steps, "vmem0")
            ctl.stop()
            baseline_pid = g.spawn(
                ["busybox", "uevent", "sh", "-c", ep.BASELINE_SH], log=f"{vm.GUEST_RESULTS}/baseline.log"
            )
            baseline = measure(g, dimms, steps, "vmem1")
            g.kill(baseline_pid)
        finally:
            g.close()
    delta = round(memhp["p99_s"] - baseline["p99_s"], 3)
    return {
        "accel": "tcg",
        "settle": settle,
        "memhp": memhp,
        "baseline": baseline,
        "p99_delta_s": delta,
        "target_s": TARGET,
        "meets_target": delta <= TARGET,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dimms", type=int, default=4, help="1G pc-dimms per path (default 4: 32 blocks)")
    ap.add_argument("--virtio-steps", type=int, default=4, help="1G virtio-mem steps per path (default 4: 32 blocks)")
    ap.add_argument("--settle", default="200ms", help="controller.event_settle (default 200ms, the default)")
    args = ap.parse_args(argv)
    out = run(args.dimms, args.virtio_steps, args.settle)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
