"""A real monitoring stack for the dashboard tests, started once per module:

* one ``memhp-exporter`` process per captured fixture tree, each on its own
  free loopback port, scraped with ``instance=<fixture name>``:
  - ``two-node-dimm-offline``: a hot-added DIMM left offline on node 1;
  - ``imbalanced``: MOVABLE:KERNEL 6:1 (alerts go pending at once);
  - ``memmap-on-memory-partial``: offline and Movable blocks, with a kernel log
    file of offline failures (``--path.kmsg``, replayed);
  - ``auto-movable-virtio-mem`` with ``--collector.blocks.all
    --collector.blocks.limit 4``: every block one by one is asked for but the
    host is above the cap, so only the blocks worth a look are (the others
    exporters show the default: ranges, and the blocks worth a look);
  - ``degraded``: the memmap-on-memory-partial tree with Movable block 32 in
    state ``going-offline`` and block 33's ``valid_zones`` unparsable, so the
    going-offline and parse-error series exist;
* the controller's real metrics endpoint (``controller.sources.webhook.serve``:
  ``/metrics`` behind bearer auth) backed by a ``ControllerMetrics`` registry
  with real values recorded into it, plus a real Alertmanager-format webhook
  delivery through the same server;
* real Prometheus (Debian package) scraping all of them every second, with
  memhp's rule files loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.prometheus import (
    LOOPBACK,
    PROMETHEUS,
    PrometheusServer,
    free_port,
    start_prometheus,
    wait_for,
)
from tests.helpers.tools import require_tool
from tests.helpers.trees import FIXTURES, unpack
from tests.helpers.web import webhook_body

REPO = Path(__file__).resolve().parents[2]
EXPORTER = REPO / ".venv" / "bin" / "memhp-exporter"
RULE_FILES = [REPO / "alerts" / "memhp.rules.yaml", REPO / "alerts" / "memhp.alerts.yaml"]
CONTROLLER_INSTANCE = "two-node-dimm-offline"  # the controller runs on that "host"

# Lines exactly as mm/memory_hotplug.c logs them (pr_debug), in /dev/kmsg record format.
KMSG_LINES = [
    "7,2101,4100000000,-;memory offlining [mem 0x0000000100000000-0x0000000107ffffff] failed due to "
    "failure to isolate range",
    "7,2102,4200000000,-;memory offlining [mem 0x0000000108000000-0x000000010fffffff] failed due to notifier failure",
    "7,2103,4300000000,-;memory offlining [mem 0x0000000108000000-0x000000010fffffff] failed due to notifier failure",
]


@dataclass
class Exporter:
    instance: str
    address: str
    proc: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def start_exporter(instance: str, root: Path, workdir: Path, *extra: str) -> Exporter:
    """memhp-exporter against a tree on a free loopback port; waits for /metrics."""
    last = ""
    for attempt in range(3):
        port = free_port()
        log = workdir / f"exporter-{instance}-{attempt}.log"
        argv = [
            str(EXPORTER),
            f"--web.listen-address={LOOPBACK}:{port}",
            f"--path.sysfs={root}/sys",
            f"--path.procfs={root}/proc",
            *extra,
        ]
        with open(log, "wb") as f:
            proc = subprocess.Popen(
                argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        exp = Exporter(instance, f"{LOOPBACK}:{port}", proc, log)

        def up(proc=proc, log=log, exp=exp) -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"exporter exited: {log.read_text()[-2000:]}")
            with urllib.request.urlopen(f"http://{exp.address}/metrics", timeout=2) as r:
                return r.status == 200

        try:
            wait_for(up, 20, what=f"exporter {instance} /metrics")
            return exp
        except Exception as e:  # port taken by a racing process: retry on another
            last = str(e)
            exp.stop()
    raise RuntimeError(f"exporter {instance} did not start: {last}")


def degraded_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    mem = dest / "sys/devices/system/memory"
    (mem / "memory32/state").write_text("going-offline\n")  # a state the kernel reports mid-offline
    (mem / "memory33/valid_zones").write_text("Movable?\n")  # unparsable: counted as a parse error, skipped
    return dest


@dataclass
class ControllerEndpoint:
    url: str
    token_file: Path
    metrics: object
    server: object
    deliveries: list = field(default_factory=list)

    def record_actions(self, n: int = 1) -> None:
        """Values as the actuator records them (controller/actuator.py)."""
        m = self.metrics
        for _ in range(n):
            m.actions.labels("online-new", "ok", "").inc()
            m.attempts.labels("online-new", "ok", "").inc()
            m.action_duration.labels("online-new").observe(0.4)
            m.actions.labels("offline", "failed", "EBUSY").inc()
            m.attempts.labels("offline", "failed", "EBUSY").inc(3)
            m.action_duration.labels("offline").observe(7.5)
        m.last_success.set_to_current_time()


def start_controller_endpoint(workdir: Path) -> ControllerEndpoint:
    from memhp.controller.metrics import ControllerMetrics
    from memhp.controller.sources.webhook import WebhookSettings, serve
    from tests.helpers.sink import RecordingSink

    token = workdir / "controller-token"
    token.write_text("dashboards-test-token\n")
    token.chmod(0o600)
    metrics = ControllerMetrics()
    sink = RecordingSink()
    server = None
    for _ in range(3):
        try:
            server = serve(
                WebhookSettings(listen_address=f"{LOOPBACK}:{free_port()}", bearer_token_file=str(token)), sink, metrics
            )
            break
        except OSError:
            continue
    assert server is not None, "controller endpoint did not start"
    ep = ControllerEndpoint(url=server.url, token_file=token, metrics=metrics, server=server)
    # A real Alertmanager-format delivery through the real receiver (alerts_received_total).
    alert = {
        "status": "firing",
        "labels": {
            "alertname": "MemhpBlocksLeftOffline",
            "instance": CONTROLLER_INSTANCE,
            "node": "1",
            "severity": "warning",
        },
        "annotations": {},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": "0123456789abcdef",
    }
    payload = webhook_body([alert], receiver="memhp-controller", groupKey="{}:{}")
    req = urllib.request.Request(
        server.webhook_url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": "Bearer dashboards-test-token"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    assert sink.alerts and sink.alerts[0].name == "MemhpBlocksLeftOffline"
    m = metrics
    ep.record_actions(1)
    m.guard_refusals.labels("cooldown").inc(2)
    m.guard_refusals.labels("max_blocks_per_hour").inc()
    m.quarantined_blocks.set(1)
    m.dry_run.set(0)
    m.paused.set(0)
    m.queue_depth.set(0)
    m.polls.labels("success").inc(5)
    return ep


@dataclass
class Stack:
    prometheus: PrometheusServer
    exporters: list[Exporter]
    controller: ControllerEndpoint

    @property
    def instances(self) -> list[str]:
        return sorted(e.instance for e in self.exporters)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    require_tool(PROMETHEUS)
    work = tmp_path_factory.mktemp("dashboards-stack")
    trees = {
        name: unpack(FIXTURES / f"{name}.tar.gz", work / name)
        for name in ("two-node-dimm-offline", "imbalanced", "memmap-on-memory-partial", "auto-movable-virtio-mem")
    }
    trees["degraded"] = degraded_tree(trees["memmap-on-memory-partial"], work / "degraded")
    kmsg = work / "kmsg"
    kmsg.write_text("\n".join(KMSG_LINES) + "\n")

    exporters: list[Exporter] = []
    controller = None
    prom = None
    try:
        for name, root in trees.items():
            extra: list[str] = []
            if name == "memmap-on-memory-partial":
                extra = [f"--path.kmsg={kmsg}", "--collector.offline_failures.replay"]
            elif name == "auto-movable-virtio-mem":
                extra = ["--collector.blocks.all", "--collector.blocks.limit=4"]
            exporters.append(start_exporter(name, root, work, *extra))
        controller = start_controller_endpoint(work)
        scrape = [
            {
                "job_name": "memhp",
                "static_configs": [{"targets": [e.address], "labels": {"instance": e.instance}} for e in exporters],
            },
            {
                "job_name": "memhp-controller",
                "authorization": {"type": "Bearer", "credentials_file": str(controller.token_file)},
                "static_configs": [
                    {
                        "targets": [f"{controller.server.host}:{controller.server.port}"],
                        "labels": {"instance": CONTROLLER_INSTANCE},
                    }
                ],
            },
        ]
        prom = start_prometheus(work / "prometheus", scrape, RULE_FILES)
        prom.wait_scraped(timeout=60, scrapes=3)
        prom.wait_rules_evaluated(timeout=60, evaluations=2)
        # Actions after the first scrapes: the counters move, so the annotation query has events.
        controller.record_actions(2)
        prom.wait_scraped(timeout=60, jobs=["memhp-controller"], scrapes=2)
        prom.wait_rules_evaluated(timeout=60, evaluations=1)
        yield Stack(prom, exporters, controller)
    finally:
        if prom is not None:
            prom.stop()
        if controller is not None:
            controller.server.shutdown()
        for e in exporters:
            e.stop()
