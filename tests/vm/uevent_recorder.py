"""Run inside the guest: record the kernel's memory uevents with CLOCK_MONOTONIC times.

    python tests/vm/uevent_recorder.py OUT.jsonl

One JSON line per ``memoryN`` uevent: ``{"t", "action", "block"}``, plus the
block's zone (its ``valid_zones`` once online) for ``online``.  The latency of
a block is its ``online`` time minus its ``add`` time, both taken by this one
process from the kernel's own broadcast: the same clock for whoever onlined it
(memhp, the blind baseline, the kernel).  Prints ``ready`` to stdout once
listening.
"""

from __future__ import annotations

import json
import re
import sys
import time

import pyudev

MEMORY = "/sys/devices/system/memory"


def main(out_path: str) -> None:
    monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
    monitor.filter_by(subsystem="memory")
    try:
        monitor.set_receive_buffer_size(8 << 20)
    except OSError:
        pass
    monitor.start()
    with open(out_path, "a", buffering=1) as out:
        print("ready", flush=True)
        while True:
            device = monitor.poll()
            t = time.monotonic()
            m = re.fullmatch(r"memory(\d+)", device.sys_name or "")
            if m is None:
                continue
            rec: dict = {"t": t, "action": device.action, "block": int(m.group(1))}
            if device.action == "online":
                try:
                    with open(f"{MEMORY}/{device.sys_name}/valid_zones") as f:
                        rec["zone"] = f.read().strip()
                except OSError:
                    rec["zone"] = None
            out.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
