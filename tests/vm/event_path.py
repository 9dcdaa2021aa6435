"""Driving hot-adds for the event path (issue 23) in the QEMU test bed: shared by
tests/vm/test_event_path_vm.py (behaviour) and bench/event_latency.py (numbers).

    rec = Recorder(g)                       # tests/vm/uevent_recorder.py in the guest
    added = grow(g, dimms=("1G", "1G"), virtio=("vmem0", ("1G", "2G")))
    rec.wait_online(added, 600)
    stats = rec.latencies(added)            # per block: add -> online, and the zone
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

from tests.vm.guest import GUEST_RESULTS, REPO, Guest, venv_python
from tests.vm.guest_controller import GuestController

# The blind baseline, as the udev rule `SUBSYSTEM=="memory", ACTION=="add", ATTR{state}=="offline",
# ATTR{state}="online"` does: a shell for every add uevent, writing `online` (the kernel's default zone).
BASELINE_SH = (
    '[ "$SUBSYSTEM" = memory ] && [ "$ACTION" = add ] && '
    "grep -qx offline /sys$DEVPATH/state 2>/dev/null && echo online > /sys$DEVPATH/state; exit 0"
)


def sample(g: Guest, port: int, token: str, series: str) -> float:
    """One sample of the guest controller's /metrics (0 when absent)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{g.forward(port)}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read().decode()
    return next((float(x.split()[-1]) for x in body.splitlines() if x.startswith(series + " ")), 0.0)


def start_controller(ctl: GuestController, port: int, token: str) -> None:
    """The daemon, once its event path listens (it starts after the web server)."""
    ctl.start(port, token=token)
    ctl.g.wait_for(
        lambda: sample(ctl.g, port, token, "memhp_controller_event_source_up") == 1, 300, "the event path", 0.5
    )


class Recorder:
    """The guest's memory uevents, timed in the guest (tests/vm/uevent_recorder.py)."""

    def __init__(self, g: Guest, name: str = "uevents") -> None:
        self.g = g
        self.name = f"{name}-{time.monotonic_ns()}.jsonl"
        self.path: Path = g.results / self.name
        log = f"{self.name}.log"
        self.pid = g.spawn(
            [str(venv_python()), str(REPO / "tests/vm/uevent_recorder.py"), f"{GUEST_RESULTS}/{self.name}"],
            log=f"{GUEST_RESULTS}/{log}",
        )
        g.wait_for(lambda: "ready" in (g.results / log).read_text(), 120, "the uevent recorder to listen")

    def events(self) -> list[dict]:
        try:
            text = self.path.read_text()
        except OSError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def first(self, action: str) -> dict[int, dict]:
        """The first ``action`` event of each block (after its last add, for online)."""
        out: dict[int, dict] = {}
        for e in self.events():
            b = e["block"]
            if e["action"] == "add" and action == "add":
                out[b] = e
            elif e["action"] == "add":
                out.pop(b, None)  # added again: what came before was another addition
            elif e["action"] == action:
                out.setdefault(b, e)
        return out

    def wait_online(self, blocks, timeout: float) -> None:
        want = set(blocks)
        self.g.wait_for(lambda: want <= set(self.first("online")), timeout, f"blocks {sorted(want)} online", 0.5)

    def latencies(self, blocks) -> dict[int, tuple[float, str | None]]:
        """block -> (seconds from its add uevent to its online uevent, zone it landed in)."""
        adds, onlines = self.first("add"), self.first("online")
        return {
            b: (onlines[b]["t"] - adds[b]["t"], onlines[b].get("zone")) for b in blocks if b in adds and b in onlines
        }

    def backlog(self, blocks) -> dict[int, int]:
        """block -> how many blocks (itself included) were added and not yet online when it was added:
        the event path onlines one block at a time, so a block's wait grows with this."""
        adds, onlines = self.first("add"), self.first("online")
        spans = [(adds[b]["t"], onlines[b]["t"]) for b in blocks if b in adds and b in onlines]
        return {b: sum(1 for a, o in spans if a <= adds[b]["t"] <= o) for b in blocks if b in adds and b in onlines}

    def stop(self) -> None:
        self.g.kill(self.pid, signal.SIGKILL)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary(lat: dict[int, tuple[float, str | None]]) -> dict:
    secs = [v for v, _ in lat.values()]
    zones: dict[str, int] = {}
    for _, z in lat.values():
        zones[str(z)] = zones.get(str(z), 0) + 1
    return {
        "blocks": len(secs),
        "p50_s": round(percentile(secs, 50), 3),
        "p99_s": round(percentile(secs, 99), 3),
        "max_s": round(max(secs), 3),
        "zones": zones,
    }


def grow(g: Guest, dimms: tuple[str, ...] = (), virtio: tuple[str, tuple[str, ...]] | None = None) -> list[int]:
    """Hot-add ``dimms`` one after the other, then grow the virtio-mem device in ``virtio``'s steps,
    each waiting for the kernel to finish (virtio-mem plugs more only once what it added is
    online); returns the blocks that appeared."""
    before = set(g.blocks())
    for size in dimms:
        g.hotplug_dimm(size)
    if virtio is not None:
        dev, steps = virtio
        for size in steps:
            g.virtio_mem_resize(dev, size, timeout=900)
    return sorted(set(g.blocks()) - before)


def zoneinfo_balance(g: Guest) -> tuple[int, int]:
    """(movable, kernel) present pages from the guest's /proc/zoneinfo, as memhp's ratio model counts them."""
    movable = kernel = 0
    zone = None
    for line in g.read("/proc/zoneinfo").splitlines():
        parts = line.split()
        if line.startswith("Node"):
            zone = parts[-1]
        elif parts[:1] == ["present"]:
            n = int(parts[1])
            if zone == "Movable":
                movable += n
            else:
                kernel += n
    return movable, kernel
