"""Soak: a real ``memhp-controller`` under mixed traffic, kill -9, slow clients and a disk that fills.

Bounded for CI (``MEMHP_SOAK_SECONDS``, default 40 s of traffic; the whole test
stays under 2 minutes); run longer with e.g. ``MEMHP_SOAK_SECONDS=1800``.
The controller runs on a fixture tree (tests/controller/sysfs_tree.py: it
writes only there) with its journal on a real tmpfs (16 MiB; 256 MiB in the
long mode).

Traffic, concurrently: authenticated valid deliveries (new occurrences and
repeats), authenticated invalid ones (bad JSON, bad schema, 60 KiB
fingerprints), unauthenticated ones, slow clients trickling headers, and a
``/-/healthy`` probe every 250 ms.  The controller is killed with SIGKILL at
random moments and restarted; the tmpfs is filled and freed.

Asserted at the end, from the journal (every file, none deleted: keep is
high) against the fixture tree:

* every journal line is a valid record (0 torn, 0 glued);
* 0 occurrences acted on twice (one ``action_start`` per occurrence at most);
* 0 records lost: every block the tree shows offlined has its successful
  ``block_result`` or ``reconcile completed`` record, and the other way round;
* ``/-/healthy`` answered within 1 s whenever the process was up and past
  start-up;
* peak RSS under RSS_BOUND and the journal files under JOURNAL_BOUND.

SLOW-CLIENT PHASE: 24 slowloris connections throughout, more than the
concurrency limit (issue 11): the web layer's pre-auth header deadline and
connection bound keep /-/healthy and authenticated traffic answered.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from memhp.controller.config import load_config
from tests.controller.adversarial.tmpfs import fill, small_tmpfs
from tests.helpers.controller import policy_text, standard_layout
from tests.helpers.wait import free_port, wait_until
from tests.helpers.web import webhook_body

REPO = Path(__file__).resolve().parents[3]
BIN = REPO / ".venv" / "bin" / "memhp-controller"
SOAK_SECONDS = float(os.environ.get("MEMHP_SOAK_SECONDS", "40"))
N_BLOCKS = 400  # Movable blocks: one per occurrence at most
LONG = SOAK_SECONDS > 120
# Small journals so that a CI run rotates several times; every rotated file is kept (journal_keep
# 100) so the journal can be compared with the tree whole: the tmpfs is sized for that.
JOURNAL_MAX = (1 << 20) if LONG else (64 << 10)
DISK = "256m" if LONG else "16m"
RSS_BOUND = 128 << 20  # the DaemonSet's limit is 256Mi
JOURNAL_BOUND = 64 << 20
TOKEN = "soak-token-0123456789"
RULES = """\
- name: shrink
  alertname: SoakTooMuchMemory
  action: offline
  count: 1
  cooldown: 0s
"""


def controller_cmd() -> list[str]:
    return [str(BIN)] if BIN.exists() else [sys.executable, "-m", "memhp.controller.cli"]


def alert_doc(fp: str, starts: str = "2026-01-01T00:00:00Z") -> dict:
    return {
        "status": "firing",
        "labels": {"alertname": "SoakTooMuchMemory", "instance": "n1"},
        "annotations": {},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prom",
        "fingerprint": fp,
    }


def payload(*alerts: dict) -> bytes:
    return json.dumps(webhook_body(list(alerts), groupKey="k")).encode()


class Controller:
    def __init__(self, cmd: list[str], port: int, log: Path) -> None:
        self.cmd, self.port, self.log = cmd, port, log
        self.proc: subprocess.Popen | None = None
        self.ready = threading.Event()  # up and past start-up: probes count
        self.rss_peak = 0
        self.restarts = 0
        self.startup_max = 0.0

    def start(self) -> None:
        self.ready.clear()
        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=log, stderr=log)
        wait_until(self.healthy, 60, desc="controller healthy after start")
        self.startup_max = max(self.startup_max, time.monotonic() - t0)
        self.ready.set()

    def healthy(self) -> bool:
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            c.request("GET", "/-/healthy")
            return c.getresponse().status == 200
        except OSError:
            return False

    def kill9(self) -> None:
        self.ready.clear()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.restarts += 1

    def sample_rss(self) -> None:
        if self.proc is None:
            return
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.rss_peak = max(self.rss_peak, int(line.split()[1]) * 1024)
        except OSError:
            pass

    def stop(self) -> int:
        self.ready.clear()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def post(port: int, body: bytes, token: str | None = TOKEN) -> int:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("POST", "/webhook/alertmanager", body=body, headers=headers)
        return c.getresponse().status
    except OSError:
        return -1


def slow_client(port: int, stop: threading.Event) -> None:
    """Trickle a request's headers one byte a second; reconnect when cut."""
    request = b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            stop.wait(0.5)
            continue
        try:
            for b in request:
                if stop.wait(1.0):
                    break
                s.sendall(bytes([b]))
        except OSError:
            pass
        finally:
            s.close()


def journal_files(journal: Path) -> list[Path]:
    rotated = sorted(
        (
            p
            for p in journal.parent.iterdir()
            if p.name.startswith(journal.name + ".") and p.name[len(journal.name) + 1 :].isdigit()
        ),
        key=lambda p: -int(p.name.rsplit(".", 1)[1]),
    )
    return [*rotated, journal]


@pytest.mark.soak
def test_soak_real_controller(tree, tmp_path):
    standard_layout(tree, movable=N_BLOCKS)
    tree.set_meminfo(mem_available=1 << 50)
    rnd = random.Random(int(os.environ.get("MEMHP_TEST_SEED", "7")))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with small_tmpfs(tmp_path / "disk", DISK) as disk:
        journal = disk / "journal.jsonl"
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            policy_text(
                tmp_path,
                RULES,
                guards="max_blocks_per_hour: 100000\nmax_blocks_per_action: 8\nmin_available: 1M",
                controller=f"journal: {journal}\njournal_max_size: {JOURNAL_MAX}\njournal_keep: 100\nqueue_size: 64",
            )
        )
        load_config(str(policy))
        port = free_port()
        ctl = Controller(
            [
                *controller_cmd(),
                "--config.file",
                str(policy),
                "--path.sysfs",
                str(tree.root / "sys"),
                "--path.procfs",
                str(tree.root / "proc"),
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--web.auth.bearer-token-file",
                str(token_file),
                "--log.level",
                "warning",
            ],
            port,
            tmp_path / "controller.log",
        )
        ctl.start()
        stop = threading.Event()
        sent: set[str] = set()
        sent_lock = threading.Lock()
        stats = {"valid": 0, "invalid": 0, "unauth": 0, "probes": 0, "probe_fail": 0}
        probe_failures: list[str] = []

        def valid_traffic() -> None:
            i = 0
            while not stop.is_set() and i < N_BLOCKS - 20:
                fps = [f"{i + k:016x}" for k in range(rnd.randint(1, 3))]
                if i and rnd.random() < 0.3:
                    fps.append(f"{rnd.randrange(i):016x}")  # a repeat of an earlier occurrence
                with sent_lock:
                    sent.update(fps)
                post(port, payload(*(alert_doc(fp) for fp in fps)))
                stats["valid"] += 1
                i += 3
                stop.wait(rnd.uniform(0.05, 0.3))

        def invalid_traffic() -> None:
            bodies = [
                b"{not json",
                b'{"version":"4","alerts":"nope"}',
                payload({**alert_doc("x"), "startsAt": "yesterday"}),
                payload(alert_doc("f" * 60000)),
                b"[" * 5000 + b"]" * 5000,
            ]
            while not stop.is_set():
                post(port, rnd.choice(bodies))
                stats["invalid"] += 1
                post(port, payload(alert_doc(f"{rnd.getrandbits(60):016x}")), token=rnd.choice([None, "wrong"]))
                stats["unauth"] += 1
                stop.wait(0.05)

        def prober() -> None:
            while not stop.is_set():
                if ctl.ready.is_set():
                    t0 = time.monotonic()
                    ok = ctl.healthy()
                    took = time.monotonic() - t0
                    if ctl.ready.is_set():  # still up: a kill in between does not count
                        stats["probes"] += 1
                        if not ok or took > 1.0:
                            stats["probe_fail"] += 1
                            probe_failures.append(f"t={time.monotonic():.1f} ok={ok} took={took:.2f}s")
                ctl.sample_rss()
                stop.wait(0.25)

        threads = [threading.Thread(target=f, daemon=True) for f in (valid_traffic, invalid_traffic, prober)]
        n_slow = 24
        threads += [threading.Thread(target=slow_client, args=(port, stop), daemon=True) for _ in range(n_slow)]
        for t in threads:
            t.start()
        t_end = time.monotonic() + SOAK_SECONDS
        filled_once = False
        while time.monotonic() < t_end:
            time.sleep(rnd.uniform(2.0, 6.0))
            if not filled_once or rnd.random() < 0.3:  # a disk that fills, then frees
                filled_once = True
                filler = fill(disk)
                time.sleep(rnd.uniform(0.5, 2.0))
                os.unlink(filler)
            ctl.kill9()
            ctl.start()
        stop.set()
        for t in threads:
            t.join(15)
        # Drain: deliver every occurrence once more (a kill may have dropped queued ones), then stop.
        wait_until(lambda: post(port, payload(alert_doc("0" * 16))) == 200, 30, desc="accepting")
        assert ctl.stop() == 0
        ctl.start()
        assert ctl.stop() == 0
        files = journal_files(journal)
        records: list[dict] = []
        for p in files:
            data = p.read_bytes()
            assert data == b"" or data.endswith(b"\n"), f"{p.name} ends with a fragment"
            for line in data.splitlines():
                records.append(json.loads(line))  # a torn or glued record fails here
        journal_bytes = sum(p.stat().st_size for p in files)
        shutil.copytree(disk, tmp_path / "journal-copy")  # for the post-mortem of a failure

    from memhp.controller.engine import bounded_id
    from memhp.controller.records import parse_record

    for r in records:
        parse_record(r)  # every record is valid
    starts: dict[str, int] = {}
    for r in records:
        if r["type"] == "action_start":
            starts[r["fingerprint"]] = starts.get(r["fingerprint"], 0) + 1
    twice = {fp: n for fp, n in starts.items() if n > 1}
    assert not twice, f"occurrences acted on twice: {twice}"
    offlined_by_journal = {
        r["block"]
        for r in records
        if (r["type"] in ("attempt_end", "block_result") and r["result"] == "ok" and r["op"] == "offline")
        or (r["type"] == "reconcile" and r["outcome"] == "completed" and r["op"] == "offline")
    }
    offlined_in_tree = {i for i in range(8, 8 + N_BLOCKS) if tree.state(i) == "offline"}
    assert offlined_in_tree == offlined_by_journal, (
        f"journal and fixture tree disagree (a record was lost): tree-only {offlined_in_tree - offlined_by_journal}, "
        f"journal-only {offlined_by_journal - offlined_in_tree}; see {tmp_path}"
    )
    assert len(offlined_in_tree) <= len(starts)
    assert set(starts) <= sent | {"0" * 16, bounded_id("f" * 60000)}
    assert stats["probe_fail"] == 0, probe_failures[:10]
    assert ctl.rss_peak < RSS_BOUND, f"peak RSS {ctl.rss_peak >> 20} MiB"
    assert journal_bytes < JOURNAL_BOUND
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"soak {SOAK_SECONDS:.0f}s: {stats}, {ctl.restarts} kill -9, {len(starts)} occurrences acted, "
        f"{len(offlined_in_tree)} blocks offlined, {len(records)} records in {len(files)} files "
        f"({journal_bytes >> 10} KiB), peak RSS {ctl.rss_peak >> 20} MiB, slowest start {ctl.startup_max:.2f}s, "
        f"children CPU {ru.ru_utime + ru.ru_stime:.1f}s"
    )
