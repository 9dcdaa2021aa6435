"""Fleet-scale fan-out through the relay, with real parts and no cluster.

    .venv/bin/python -m bench.relay_fanout --instances 10000
    .venv/bin/python -m bench.relay_fanout --instances 1000 --no-kill

A real Alertmanager (Debian's) routes one alert per instance, grouped by
instance, to one receiver URL shared (SO_REUSEPORT) by two real
``memhp-relay`` processes over TLS with a bearer token.  The relays find each
alert's controller from its labels with the default template's shape,
``http://{instance:host}:PORT/webhook/alertmanager``, and ``--target.allow
127.0.0.0/8``: each instance is a loopback address of its own (a label
chooses only the host; the port is the template's).  The first
``--controllers`` instances are real ``memhp-controller`` processes on
fixture trees (they write only there) on 127.0.1.x; the rest are
127.1.x.y, where one lightweight counting receiver in this process listens on
every one of those addresses.  Mid-burst one relay is
killed with SIGKILL; Alertmanager retries what it had in flight.  Then every
alert is resolved, and the resolutions must arrive too.

tests/controller/test_relay_fleet.py runs this with 2,000 instances and
asserts on the result; the numbers at 1,000 and 10,000 are in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from memhp.controller.sources.common import canonical_time, labels_fingerprint
from tests.controller.sysfs_tree import SysTree, ZoneSpec
from tests.helpers.alertmanager import Alertmanager, api_alert, rfc3339
from tests.helpers.tls import make_self_signed_cert
from tests.helpers.wait import free_port, wait_until

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ALERTNAME = "MemhpFleetRelayTest"
TOKEN_AM = "am-to-relay-token-0123456789"
TOKEN_CTRL = "relay-to-controller-token-9876543210"
GROUP_WAIT = 1.0
FIRST_FLUSH_BOUND = 15.0  # issue 24: every firing alert within 15 s of its group_wait
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# --------------------------------------------------------------------------- counting receiver


class CountingReceiver:
    """A small asyncio HTTP/1.0 server, listening on ``port`` of each of ``hosts``, that counts alerts
    by the address they reached, fingerprint and status."""

    def __init__(self, token: str, hosts: list[str], port: int) -> None:
        self.expected_auth = f"Bearer {token}".encode()
        self.hosts = hosts
        self.counts: Counter[tuple[str, str]] = Counter()  # (address reached, status)
        self.fingerprints: dict[str, set[str]] = {"firing": set(), "resolved": set()}
        self.requests = 0
        self.refused = 0
        self.first_at: dict[str, float] = {}
        self.arrived: dict[tuple[str, str], float] = {}  # (status, fingerprint): first arrival
        self.last_at: dict[str, float] = {}
        self.lock = threading.Lock()
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="counting-receiver", daemon=True)

    def start(self) -> CountingReceiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(asyncio.start_server(self._handle, self.hosts, self.port, backlog=64))
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.split(b"\r\n")
            reached = writer.get_extra_info("sockname")[0]
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                headers[k.strip().lower()] = v.strip()
            body = await asyncio.wait_for(reader.readexactly(int(headers.get(b"content-length", b"0"))), 10)
            if headers.get(b"authorization") != self.expected_auth:
                self.refused += 1
                writer.write(b"HTTP/1.0 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            else:
                self._record(reached, json.loads(body))
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()

    def _record(self, reached: str, payload: dict[str, Any]) -> None:
        now = time.monotonic()
        with self.lock:
            self.requests += 1
            for a in payload["alerts"]:
                status = a["status"]
                self.counts[(reached, status)] += 1
                self.fingerprints[status].add(a["fingerprint"])
                self.arrived.setdefault((status, a["fingerprint"]), now)
                self.first_at.setdefault(status, now)
                self.last_at[status] = now


# --------------------------------------------------------------------------- controllers


POLICY_RULES = [
    # Both actions offline one block: writing "offline" to a fixture file leaves it reading "offline",
    # as the kernel would (an online_movable write would need a kernel to turn it into "online").
    {"name": "fleet-firing", "alertname": ALERTNAME, "action": "offline", "count": 1, "zone": "movable"},
    {"name": "fleet-resolved", "alertname": ALERTNAME, "action": "offline", "count": 1, "on_resolved": True},
]


@dataclass
class Controller:
    name: str
    root: Path
    host: str
    port: int
    journal: Path
    proc: subprocess.Popen
    tree: SysTree

    def records(self) -> list[dict[str, Any]]:
        try:
            text = self.journal.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def action_starts(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("type") == "action_start"]


def start_controller(workdir: Path, name: str, token_file: Path, host: str, port: int) -> Controller:
    root = workdir / name
    shutil.rmtree(root, ignore_errors=True)
    tree = SysTree(root / "root")
    tree.set_zoneinfo([ZoneSpec(0, "Normal", 262144), ZoneSpec(0, "Movable", 262144)])
    for i in range(4):
        tree.add_block(i, "online", "Normal")
    for i in range(4, 8):
        tree.add_block(i, "online", "Movable")
    journal = root / "journal.jsonl"
    policy = {
        "controller": {"journal": str(journal)},
        "guards": {"pause_file": str(root / "pause"), "cooldown": "0s", "min_available": "256M"},
        "retry": {"attempts": 2, "attempt_timeout": "2s", "kill_grace": "500ms", "backoff_initial": "10ms"},
        "rules": POLICY_RULES,
    }
    policy_file = root / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy, sort_keys=False))
    log = open(root / "controller.log", "ab")
    proc = subprocess.Popen(
        [
            str(BIN / "memhp-controller"),
            f"--config.file={policy_file}",
            f"--path.sysfs={tree.root / 'sys'}",
            f"--path.procfs={tree.proc}",
            f"--web.listen-address={host}:{port}",
            f"--web.auth.bearer-token-file={token_file}",
            "--log.level=warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    return Controller(name, root, host, port, journal, proc, tree)


# --------------------------------------------------------------------------- relays


@dataclass
class Relay:
    proc: subprocess.Popen
    log: Path


def start_relay(
    workdir: Path, n: int, port: int, cert: Path, key: Path, am_token: Path, ctrl_token: Path, target_port: int
) -> Relay:
    log_path = workdir / f"relay{n}.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [
            str(BIN / "memhp-relay"),
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.auth.bearer-token-file={am_token}",
            f"--web.tls.cert-file={cert}",
            f"--web.tls.key-file={key}",
            f"--target.template=http://{{instance:host}}:{target_port}/webhook/alertmanager",
            f"--target.bearer-token-file={ctrl_token}",
            "--target.allow=127.0.0.0/8",
            "--log.level=warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    return Relay(proc, log_path)


def relay_metrics(port: int, ca: Path, token: str) -> dict[str, float]:
    import ssl
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(f"https://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}" if s.labels else "")
            out[key] = s.value
    return out


# --------------------------------------------------------------------------- the run


@dataclass
class FleetResult:
    instances: int
    controllers: int
    firing_delivery_seconds: float = 0.0  # from the last alert posted to the last firing delivered
    resolved_delivery_seconds: float = 0.0
    am_cpu_seconds: float = 0.0
    am_cpu_cores: float = 0.0  # AM CPU / wall time of the firing burst
    am_get_requests: float = 0.0
    am_notifications: float = 0.0
    am_failed_notifications: float = 0.0
    killed_relay: bool = False
    sink_firing: int = 0
    sink_resolved: int = 0
    sink_duplicates: int = 0
    controller_actions: dict[str, Counter] = field(default_factory=dict)
    controller_online_after_firing: dict[str, int] = field(default_factory=dict)
    controller_online_after_resolve: dict[str, int] = field(default_factory=dict)
    # What Alertmanager was sent: each real controller's occurrence, the fake nodes' fingerprints.
    expected: dict[str, tuple[str, str]] = field(default_factory=dict)
    fake_fingerprints: set[str] = field(default_factory=set)
    sink_fingerprints: dict[str, set[str]] = field(default_factory=dict)
    relay_latency_mean: float = 0.0
    relay_latency_count: float = 0.0
    relay_failures: float = 0.0
    relay_unresolvable: float = 0.0
    machine: str = ""
    relays: int = 2
    group_wait: float = GROUP_WAIT
    group_interval: float = 5.0
    # Firing alerts of the counting receiver's nodes that arrived more than FIRST_FLUSH_BOUND after
    # their group_wait ended (their batch posted + group_wait), and the latest of them.
    firing_late: int = 0
    firing_latest_after_group_wait: float = 0.0
    am_rss_bytes: int = 0

    def report(self) -> str:
        lines = [
            f"instances {self.instances} ({self.controllers} real controllers), relay killed mid-burst: {self.killed_relay}",
            f"firing: all delivered {self.firing_delivery_seconds:.1f}s after the last alert was posted "
            f"(group_wait {self.group_wait:g}s)",
            f"resolved: all delivered {self.resolved_delivery_seconds:.1f}s after the resolutions were posted",
            f"Alertmanager: {self.am_cpu_seconds:.1f}s CPU ({self.am_cpu_cores:.2f} cores during the firing burst), "
            f"{self.am_notifications:.0f} notifications ({self.am_failed_notifications:.0f} failed, retried), "
            f"{self.am_get_requests:.0f} GET requests",
            f"relay (survivor): {self.relay_latency_count:.0f} deliveries, mean {1000 * self.relay_latency_mean:.1f} ms, "
            f"{self.relay_failures:.0f} failed, {self.relay_unresolvable:.0f} unresolvable",
            f"counting receiver: {self.sink_firing} firing, {self.sink_resolved} resolved, "
            f"{self.sink_duplicates} re-deliveries",
            f"route: group_wait {self.group_wait:g}s, group_interval {self.group_interval:g}s; {self.relays} relays; "
            f"firing later than {FIRST_FLUSH_BOUND:g}s after group_wait: {self.firing_late} "
            f"(latest {self.firing_latest_after_group_wait:.1f}s); Alertmanager RSS {self.am_rss_bytes / 2**20:.0f} MiB",
            f"machine: {self.machine}",
        ]
        return "\n".join(lines)


def _load() -> str:
    return f"{platform.node()}, {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def run_fleet(
    workdir: Path,
    instances: int,
    controllers: int = 20,
    kill_relay: bool = True,
    *,
    relays_n: int = 2,
    group_wait: float = GROUP_WAIT,
    group_interval: float = 5.0,
) -> FleetResult:
    workdir.mkdir(parents=True, exist_ok=True)
    res = FleetResult(
        instances=instances,
        controllers=controllers,
        machine=_load(),
        relays=relays_n,
        group_wait=group_wait,
        group_interval=group_interval,
    )
    am_token = _secret(workdir / "am-token", TOKEN_AM)
    ctrl_token = _secret(workdir / "controller-token", TOKEN_CTRL)
    cert, key = make_self_signed_cert(workdir, "relay")
    _raise_fd_limit(instances)
    target_port = free_port()  # free on 127.0.0.1; other loopback addresses are all but unused
    fake_hosts = [_fake_host(i) for i in range(instances - controllers)]
    sink = CountingReceiver(TOKEN_CTRL, fake_hosts, target_port).start()
    ctrls = [
        start_controller(workdir, f"ctrl{i:02d}", ctrl_token, _controller_host(i), target_port)
        for i in range(controllers)
    ]
    relay_port = free_port()
    relays = [
        start_relay(workdir, n, relay_port, cert, key, am_token, ctrl_token, target_port) for n in range(relays_n)
    ]
    route = {"group_wait": f"{group_wait:g}s", "group_interval": f"{group_interval:g}s"}
    am = Alertmanager(_am_config(relay_port, am_token, cert, route), workdir / "alertmanager")
    try:
        _wait_started(ctrls, relay_port)
        am.start()
        assert am.proc is not None
        am_pid = am.proc.pid
        gets_before = _am_gets(am)

        alerts = _alerts(res, ctrls, fake_hosts)
        cpu0 = cpu_seconds(am_pid)
        t0 = time.monotonic()
        posted_at = _post_all(am, alerts)
        posted = time.monotonic()
        fakes = instances - controllers

        if kill_relay:
            res.killed_relay = _kill_one(relays[0], sink, fakes)

        def all_firing() -> bool:
            return len(sink.fingerprints["firing"]) >= fakes and all(len(c.action_starts()) >= 1 for c in ctrls)

        wait_until(
            all_firing,
            timeout=120 + instances / 20,
            interval=0.2,
            desc="every firing alert delivered",
            last=lambda: (len(sink.fingerprints["firing"]), [len(c.action_starts()) for c in ctrls]),
        )
        res.firing_delivery_seconds = sink.last_at.get("firing", posted) - posted
        _first_flush_figures(res, sink, alerts, posted_at)
        res.am_rss_bytes = _rss_bytes(am_pid)
        res.am_cpu_seconds = cpu_seconds(am_pid) - cpu0
        res.am_cpu_cores = res.am_cpu_seconds / max(1e-3, time.monotonic() - t0)

        # Let the controllers finish acting, then resolve everything.
        wait_until(lambda: all(_finished(c) >= 1 for c in ctrls), timeout=60, desc="controller actions finished")
        for c in ctrls:
            res.controller_online_after_firing[c.name] = sum(c.tree.state(i) == "online" for i in range(8))
        _resolve_all(res, am, alerts, sink, ctrls)
        for c in ctrls:
            res.controller_online_after_resolve[c.name] = sum(c.tree.state(i) == "online" for i in range(8))
            res.controller_actions[c.name] = Counter(
                # the journal's occurrence: (fingerprint, starts_at, resolved)
                (r["rule"], r["fingerprint"], r["starts_at"], bool(r.get("resolved")))
                for r in c.action_starts()
            )
        res.am_get_requests = _am_gets(am) - gets_before
        res.am_notifications = am.metric("alertmanager_notifications_total", integration="webhook")
        res.am_failed_notifications = am.metric("alertmanager_notifications_failed_total", integration="webhook")
        _sink_figures(res, sink)
        live = relays[-1]
        assert live.proc.poll() is None
        _relay_figures(res, relay_metrics(relay_port, cert, TOKEN_AM))
        return res
    finally:
        _stop(am, relays, ctrls, sink)


def _kill_one(relay: Relay, sink: CountingReceiver, fakes: int) -> bool:
    """SIGKILL ``relay`` once a quarter of the firing alerts has arrived."""
    wait_until(lambda: len(sink.fingerprints["firing"]) >= fakes // 4, timeout=120, desc="a quarter delivered")
    relay.proc.send_signal(signal.SIGKILL)
    relay.proc.wait(10)
    return True


def _wait_started(ctrls: list[Controller], relay_port: int) -> None:
    for c in ctrls:
        wait_until(partial(_up_or_exited, c), timeout=60, desc=f"{c.name} up")
        assert c.proc.poll() is None, (c.root / "controller.log").read_text()
    wait_until(lambda: _listening("127.0.0.1", relay_port), timeout=30, desc="relay up")


def _post_all(am: Alertmanager, alerts: list[dict[str, Any]]) -> list[float]:
    """Post in batches; when each alert's batch was accepted (its group_wait starts then, at the latest)."""
    at: list[float] = []
    for k in range(0, len(alerts), 1000):
        _post(am, alerts[k : k + 1000])
        at += [time.monotonic()] * len(alerts[k : k + 1000])
    return at


def _first_flush_figures(
    res: FleetResult, sink: CountingReceiver, alerts: list[dict[str, Any]], posted_at: list[float]
) -> None:
    worst = 0.0
    for alert, at in zip(alerts[res.controllers :], posted_at[res.controllers :], strict=True):
        arrived = sink.arrived.get(("firing", labels_fingerprint(alert["labels"])))
        if arrived is None:
            continue
        after = arrived - at - res.group_wait
        worst = max(worst, after)
        res.firing_late += after > FIRST_FLUSH_BOUND
    res.firing_latest_after_group_wait = worst


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the peak resident set
            return int(line.split()[1]) * 1024
    return 0


def _resolve_all(
    res: FleetResult, am: Alertmanager, alerts: list[dict[str, Any]], sink: CountingReceiver, ctrls: list[Controller]
) -> None:
    """Resolve every alert and wait until every resolution is delivered and acted on."""
    fakes = res.instances - res.controllers
    ended = rfc3339()
    _post_all(am, [{**a, "endsAt": ended} for a in alerts])
    r_posted = time.monotonic()

    def all_resolved() -> bool:
        return len(sink.fingerprints["resolved"]) >= fakes and all(_finished(c) >= 2 for c in ctrls)

    wait_until(
        all_resolved,
        timeout=120 + res.instances / 20,
        interval=0.2,
        desc="every resolution delivered",
        last=lambda: (len(sink.fingerprints["resolved"]), [_finished(c) for c in ctrls]),
    )
    res.resolved_delivery_seconds = sink.last_at.get("resolved", r_posted) - r_posted


def _am_config(relay_port: int, am_token: Path, cert: Path, route: dict[str, str]) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "memhp-relay",
            "group_by": ["instance"],
            "repeat_interval": "4h",
            **route,
        },
        "receivers": [
            {
                "name": "memhp-relay",
                "webhook_configs": [
                    {
                        "url": f"https://127.0.0.1:{relay_port}/webhook/alertmanager",
                        "send_resolved": True,
                        "max_alerts": 0,
                        "http_config": {
                            "follow_redirects": False,
                            "authorization": {"type": "Bearer", "credentials_file": str(am_token)},
                            "tls_config": {"ca_file": str(cert)},
                        },
                    }
                ],
            }
        ],
    }


def _alerts(res: FleetResult, ctrls: list[Controller], fake_hosts: list[str]) -> list[dict[str, Any]]:
    """One firing alert per instance: the controllers' first, then the fake hosts'; what each
    controller must act on goes to ``res.expected``, the fake hosts' fingerprints to ``res.fake_fingerprints``."""
    starts = datetime.now(UTC) - timedelta(seconds=5)
    alerts = []
    for i in range(res.instances):
        host = ctrls[i].host if i < res.controllers else fake_hosts[i - res.controllers]
        labels = {"instance": f"{host}:10301", "severity": "warning"}
        alert = api_alert(ALERTNAME, labels, starts_at=starts)
        alerts.append(alert)
        fp = labels_fingerprint(alert["labels"])
        if i < res.controllers:
            res.expected[ctrls[i].name] = (fp, canonical_time(alert["startsAt"]))
        else:
            res.fake_fingerprints.add(fp)
    return alerts


def _sink_figures(res: FleetResult, sink: CountingReceiver) -> None:
    res.sink_firing = len(sink.fingerprints["firing"])
    res.sink_resolved = len(sink.fingerprints["resolved"])
    res.sink_duplicates = sum(sink.counts.values()) - res.sink_firing - res.sink_resolved
    res.sink_fingerprints = {k: set(v) for k, v in sink.fingerprints.items()}


def _relay_figures(res: FleetResult, m: dict[str, float]) -> None:
    def total(prefix: str) -> float:
        return sum(v for k, v in m.items() if k.startswith(prefix))

    count = total("memhp_relay_delivery_duration_seconds_count")
    res.relay_latency_count = count
    res.relay_latency_mean = total("memhp_relay_delivery_duration_seconds_sum") / count if count else 0.0
    res.relay_failures = total("memhp_relay_delivery_failures_total")
    res.relay_unresolvable = total("memhp_relay_unresolvable_alerts_total")


def _stop(am: Alertmanager, relays: list, ctrls: list[Controller], sink: CountingReceiver) -> None:
    am.stop()
    for r in relays:
        if r.proc.poll() is None:
            r.proc.terminate()
            r.proc.wait(10)
    for c in ctrls:
        if c.proc.poll() is None:
            c.proc.terminate()
            try:
                c.proc.wait(10)
            except subprocess.TimeoutExpired:
                c.proc.kill()
    sink.stop()


def _post(am: Alertmanager, alerts: list[dict[str, Any]]) -> None:
    # Alertmanager is busy notifying while later batches arrive: wait longer than the helper's 10 s.
    status, data = am._request("POST", "/api/v2/alerts", alerts, timeout=600)
    assert status == 200, (status, data[:300])


def _up_or_exited(c: Controller) -> bool:
    return _listening(c.host, c.port) or c.proc.poll() is not None


def _controller_host(i: int) -> str:
    return f"127.0.1.{i + 1}"


def _fake_host(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


def _raise_fd_limit(instances: int) -> None:
    """The counting receiver holds one listening socket per fake node."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = instances + 1024
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise SystemExit(f"need {want} file descriptors (ulimit -n), the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _finished(c: Controller) -> int:
    return sum(r.get("type") == "action_end" for r in c.records())


def _listening(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _am_gets(am: Alertmanager) -> float:
    return am.metric("alertmanager_http_request_duration_seconds_count", method="get")


def main(argv: list[str] | None = None) -> int:
    import tempfile

    p = argparse.ArgumentParser(prog="python -m bench.relay_fanout", description=__doc__.split("\n\n")[0])
    p.add_argument("--instances", type=int, default=2000)
    p.add_argument("--controllers", type=int, default=20)
    p.add_argument("--no-kill", action="store_true", help="do not kill a relay replica mid-burst")
    p.add_argument("--workdir", type=Path, help="keep logs and trees here (default: a temporary directory)")
    p.add_argument("--relays", type=int, default=2, help="relay processes sharing the address (default 2)")
    p.add_argument(
        "--shipped-route",
        action="store_true",
        help="group_wait 10s and group_interval 1m, as deploy/examples/alertmanager-memhp-fleet.yml "
        f"(default: group_wait {GROUP_WAIT:g}s, group_interval 5s)",
    )
    args = p.parse_args(argv)
    route = {"group_wait": 10.0, "group_interval": 60.0} if args.shipped_route else {}

    def fleet(workdir: Path) -> FleetResult:
        return run_fleet(
            workdir, args.instances, args.controllers, kill_relay=not args.no_kill, relays_n=args.relays, **route
        )

    if args.workdir is not None:
        res = fleet(args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="memhp-relay-bench-") as d:
            res = fleet(Path(d))
    print(res.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
