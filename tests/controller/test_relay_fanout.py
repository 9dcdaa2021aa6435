"""memhp-relay under fan-out load, with real sockets on loopback.

Targets share one port on many 127.0.0.x addresses, so the template fills in
only a host (``{instance:host}``), as the shipped one does.  Unresponsive
targets are real listening sockets that accept and never answer; controllers
are the controller's own webhook server with a recording sink.
"""

from __future__ import annotations

import json
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from memhp.controller.alert import FIRING
from memhp.controller.metrics import ControllerMetrics
from memhp.controller.relay.delivery import Deliverer, DeliverySettings
from memhp.controller.relay.metrics import RelayMetrics
from memhp.controller.relay.receiver import FanOutSink
from memhp.controller.relay.receiver import serve as serve_relay
from memhp.controller.relay.template import TargetTemplate
from memhp.controller.sources.common import labels_fingerprint
from memhp.controller.sources.webhook import WebhookSettings, serve
from tests.helpers.sink import RecordingSink
from tests.helpers.wait import free_port
from tests.helpers.web import healthy, post_status, secret_file, webhook_body

RELAY_TOKEN = "am-to-relay-0123456789"
CTRL_TOKEN = "relay-to-controller-0123456789"


def loopback(i: int) -> str:
    """The i-th address of 127.0.1.0/16 onwards (127.0.0.1 stays free for the relay)."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


def shared_port(hosts: list[str]) -> tuple[int, list[socket.socket]]:
    """One port on which every host of ``hosts`` can listen; the bound sockets, listening."""
    for _ in range(20):
        probe = socket.create_server(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        socks: list[socket.socket] = []
        try:
            for h in hosts:
                socks.append(socket.create_server((h, port), backlog=64))
            return port, socks
        except OSError:
            for s in socks:
                s.close()
    raise RuntimeError("no port free on every address")


class Unresponsive:
    """Listening sockets that accept and never answer; records when each connection arrived."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.socks = socks
        self.accepted: list[tuple[float, str]] = []
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            self._sel.register(s, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.05):
                try:
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:
                    continue
                self.accepted.append((time.monotonic(), key.fileobj.getsockname()[0]))  # type: ignore[union-attr]
                self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self._held + self.socks:
            s.close()
        self._sel.close()


def alert(host: str, port: int, n: int = 0) -> dict:
    labels = {"alertname": "MemhpHotAddedMemoryOffline", "instance": f"{host}:10301", "n": str(n)}
    return {
        "status": FIRING,
        "labels": labels,
        "annotations": {"summary": "s"},
        "startsAt": "2026-01-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": labels_fingerprint(labels),
    }


def body(alerts: list[dict]) -> bytes:
    return json.dumps(webhook_body(alerts, receiver="memhp-relay")).encode()


class Relay:
    def __init__(self, tmp_path: Path, port: int, workers: int = 256, **delivery) -> None:
        self.metrics = RelayMetrics()
        token = secret_file(tmp_path / "relay-token", RELAY_TOKEN)
        delivery.setdefault("bearer_token_file", str(tmp_path / "ctrl-token"))
        self.sink = FanOutSink(
            TargetTemplate(f"http://{{instance:host}}:{port}/webhook/alertmanager"),
            Deliverer(DeliverySettings(**delivery), self.metrics),
            self.metrics,
            workers=workers,
        )
        self.handle = serve_relay(
            WebhookSettings(listen_address="127.0.0.1:0", bearer_token_file=str(token), max_concurrency=64),
            self.sink,
            self.metrics,
        )

    def post(self, data: bytes, timeout: float = 120) -> int:
        return post_status(self.handle.webhook_url, data, {"Authorization": f"Bearer {RELAY_TOKEN}"}, timeout)

    def healthy(self) -> bool:
        return healthy(self.handle.url)

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def close(self) -> None:
        self.handle.shutdown()
        self.sink.close()


class Timed:
    """Run ``fn`` in a thread; its result and how long it took."""

    def __init__(self, fn) -> None:
        self.result = None
        self.started = time.monotonic()
        self.took = float("nan")
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn) -> None:
        self.result = fn()
        self.took = time.monotonic() - self.started

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


N_DEAD = 320
DEADLINE = 3.0
SLACK = 2.5  # generous: the machine is shared and loaded


@pytest.fixture
def fleet(tmp_path, request):
    """320 unresponsive targets and 2 real controllers, all on one port; a relay in front
    (``workers``: indirect parameter, the relay's --target.workers)."""
    hosts = [loopback(i) for i in range(N_DEAD + 2)]
    port, socks = shared_port(hosts)
    live_socks, dead_socks = socks[:2], socks[2:]
    ctrl_token = secret_file(tmp_path / "ctrl-token", CTRL_TOKEN)
    controllers = []
    for s in live_socks:
        address = s.getsockname()
        s.close()  # the controller binds it again, at once (SO_REUSEADDR)
        sink = RecordingSink()
        handle = serve(
            WebhookSettings(listen_address=f"{address[0]}:{port}", bearer_token_file=str(ctrl_token)),
            sink,
            ControllerMetrics(),
        )
        controllers.append((address[0], sink, handle))
    dead = Unresponsive(dead_socks)
    relay = Relay(tmp_path, port, workers=getattr(request, "param", 256), deadline=DEADLINE)
    yield relay, port, hosts[2:], controllers, dead
    relay.close()
    dead.close()
    for _, _, handle in controllers:
        handle.shutdown()


@pytest.mark.parametrize("fleet", [256, 2], indirect=True, ids=["workers=256", "workers=2"])
def test_a_notification_to_many_unresponsive_targets_starves_no_one(fleet):
    """With 2 shared threads, the attack holds both: the other notification goes on with its own."""
    relay, port, dead_hosts, controllers, dead = fleet
    probes: list[bool] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            probes.append(relay.healthy())
            stop.wait(0.02)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    attack = Timed(lambda: relay.post(body([alert(h, port) for h in dead_hosts])))
    time.sleep(0.5)  # the attack's targets hold every worker they can get by now
    other = Timed(lambda: relay.post(body([alert(h, port) for h, _, _ in controllers])))
    other_done = other.join(DEADLINE + SLACK)
    attack_done = attack.join(DEADLINE + SLACK)
    stop.set()
    prober.join(5)
    finished = attack.join(120)  # on failure, let the attack end before the fixture closes its targets

    assert other_done and other.result == 200 and other.took < DEADLINE, (other.result, other.took)
    assert all(len(sink.alerts) == 1 for _, sink, _ in controllers)
    assert attack_done and attack.result == 503, (attack.result, attack.took)
    assert finished
    # Queued deliveries whose deadline passed were dropped, never sent late.
    late = [(t - attack.started, h) for t, h in dead.accepted if t > attack.started + DEADLINE + 1.0]
    assert not late, late[:5]
    assert relay.value("memhp_relay_delivery_failures_total", reason="deadline") == N_DEAD
    assert len(probes) >= 20
    assert sum(probes) / len(probes) >= 0.99, f"{probes.count(False)} of {len(probes)} health probes failed"


# --------------------------------------------------------------------------- a real relay process


class RelayProcess:
    """``memhp-relay`` as a process, without credentials (loopback only), its flags' defaults otherwise."""

    def __init__(self, target_port: int, *args: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "memhp-relay"),
                f"--web.listen-address={self.url.removeprefix('http://')}",
                "--web.no-auth",
                f"--target.template=http://{{instance:host}}:{target_port}/webhook/alertmanager",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not self.healthy():
            assert self.proc.poll() is None, self.proc.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "relay did not start"
            time.sleep(0.1)

    def post(self, data: bytes, timeout: float = 120) -> int:
        return post_status(self.url + "/webhook/alertmanager", data, timeout=timeout)

    def healthy(self) -> bool:
        return healthy(self.url)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.proc.stderr.close()  # type: ignore[union-attr]


def real_alert(host: str, i: int, annotation_bytes: int = 0) -> dict:
    """An alert as Alertmanager sends it (about 730 bytes), with a padded annotation if asked."""
    labels = {
        "alertname": "MemhpHotAddedMemoryOffline",
        "instance": f"{host}:10301",
        "job": "memhp",
        "severity": "warning",
        "node": "0",
        "cluster": "prod-eu-1",
        "block": str(i),
    }
    return {
        "status": FIRING,
        "labels": labels,
        "annotations": {
            "summary": "Hot-added memory stays offline",
            "description": "3 memory blocks (384 MiB) hot-added more than 10m ago are still offline.",
            "runbook_url": "https://example.com/runbooks/memhp#MemhpHotAddedMemoryOffline",
            "padding": "x" * annotation_bytes,
        },
        "startsAt": "2026-01-01T10:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus-0:9090/graph?g0.expr=sum+by+%28instance%2C+node%29+%28memhp_memory"
        "_blocks%7Bstate%3D%22offline%22%2Chot_added%3D%22true%22%7D%29+%3E+0&g0.tab=1",
        "fingerprint": labels_fingerprint(labels),
    }


@pytest.mark.parametrize(("count", "annotation_bytes"), [(2500, 0), (600, 3000)])
def test_a_notification_larger_than_a_controller_takes_is_split(count, annotation_bytes):
    """group_by other than instance: one node's alerts beyond the controller's 1,000 alerts / 1 MiB."""
    host = "127.0.0.1"
    port = free_port(host)
    sink = RecordingSink()
    controller = serve(WebhookSettings(listen_address=f"{host}:{port}", no_auth=True), sink, ControllerMetrics())
    relay = RelayProcess(port)
    try:
        data = body([real_alert(host, i, annotation_bytes) for i in range(count)])
        assert len(data) > 1 << 20  # more than the controller's --web.max-body-bytes, too
        assert relay.post(data) == 200
        sizes = [len(b) for b in sink.batches]
        assert sum(sizes) == count and max(sizes) <= 1000, sizes
        assert sorted(int(a.labels["block"]) for a in sink.alerts) == list(range(count))
        assert relay.metric("memhp_relay_alerts_delivered_total") == count
    finally:
        relay.close()
        controller.shutdown()


def test_the_relay_refuses_more_alerts_than_its_documented_cap():
    relay = RelayProcess(free_port())
    try:
        tiny = [{"status": FIRING, "labels": {"alertname": "A"}, "startsAt": "2026-01-01T10:00:00Z"}]
        assert relay.post(json.dumps(webhook_body(tiny * 10_001)).encode()) == 400
        assert relay.metric('memhp_relay_requests_rejected_total{reason="invalid_payload"}') == 1
    finally:
        relay.close()


def test_a_relay_process_under_repeated_fan_out_to_unresponsive_targets_keeps_serving():
    """As Alertmanager would: 4 groups of 100 unresponsive nodes each, resent as soon as answered,
    while another group's 2 live nodes keep getting their alerts and /-/healthy keeps answering."""
    senders, per_group, attack_seconds, deadline = 4, 100, 8.0, 3.0
    hosts = [loopback(i) for i in range(senders * per_group + 2)]
    port, socks = shared_port(hosts)
    live = []
    for host, s in zip(hosts[:2], socks[:2], strict=True):
        s.close()  # a controller listens there instead, at once
        sink = RecordingSink()
        settings = WebhookSettings(listen_address=f"{host}:{port}", no_auth=True)
        live.append((serve(settings, sink, ControllerMetrics()), sink))
    dead = Unresponsive(socks[2:])
    relay = RelayProcess(port, f"--target.deadline={deadline}s")
    stop = threading.Event()
    attacks: list[tuple[int, float]] = []
    legit: list[tuple[int, float]] = []
    probes: list[bool] = []

    def timed_posts(data: bytes, out: list, pause: float) -> None:
        while not stop.is_set():
            started = time.monotonic()
            out.append((relay.post(data, timeout=60), time.monotonic() - started))
            stop.wait(pause)

    def probe() -> None:
        while not stop.is_set():
            probes.append(relay.healthy())
            stop.wait(0.02)

    groups = [
        body([alert(h, port) for h in hosts[2 + g * per_group : 2 + (g + 1) * per_group]]) for g in range(senders)
    ]
    mine = body([alert(handle.host, port) for handle, _ in live])
    threads = [threading.Thread(target=timed_posts, args=(g, attacks, 0.0), daemon=True) for g in groups]
    threads += [
        threading.Thread(target=timed_posts, args=(mine, legit, 0.5), daemon=True),
        threading.Thread(target=probe, daemon=True),
    ]
    try:
        for t in threads:
            t.start()
        time.sleep(attack_seconds)
        stop.set()
        for t in threads:
            t.join(90)
        busy = relay.metric("memhp_relay_fanout_workers_busy")
        for _ in range(20):  # a helper gives its thread back just after its notification is answered
            if busy == 0:
                break
            time.sleep(0.1)
            busy = relay.metric("memhp_relay_fanout_workers_busy")
    finally:
        relay.close()
        dead.close()
        for handle, _ in live:
            handle.shutdown()
    assert attacks and all(code == 503 and took < deadline + SLACK for code, took in attacks), attacks
    assert len(legit) >= 5 and all(code == 200 and took < deadline for code, took in legit), legit
    assert all(len(sink.batches) == len(legit) for _, sink in live)
    assert len(probes) >= 50
    assert sum(probes) / len(probes) >= 0.99, f"{probes.count(False)} of {len(probes)} health probes failed"
    assert busy == 0  # every shared thread given back


def test_every_relay_flag_and_metric_is_documented():
    from memhp.controller.relay.cli import get_parser

    doc = (Path(__file__).parents[2] / "docs" / "relay.md").read_text()
    flags = {o for a in get_parser()._actions for o in a.option_strings if o.startswith("--")} - {"--help"}
    assert not {f for f in flags if f"`{f}`" not in doc}
    families = {m.name for m in RelayMetrics().registry.collect()}
    names = {n + "_total" if n + "_total" in doc else n for n in families}
    assert not {n for n in names if f"`{n}`" not in doc}


def test_batches_keep_order_and_both_bounds():
    from memhp.controller.alert import Alert
    from memhp.controller.relay.batching import batches
    from memhp.controller.relay.delivery import webhook_payload

    def a(i: int, pad: int) -> Alert:
        return Alert("A", FIRING, {"alertname": "A", "i": str(i)}, {"d": "é" * pad}, "2026-01-01T10:00:00.000Z")

    alerts = [a(i, 0) for i in range(2500)] + [a(i, 2000) for i in range(2500, 3500)] + [a(3500, 300_000)]
    got = list(batches(alerts))
    assert [x for b in got for x in b] == alerts
    assert all(len(b) <= 1000 and len(webhook_payload(b, "r")) <= 1 << 20 for b in got[:-1])
    assert len(got[-1]) == 1  # too large for any batch but its own: it goes alone


@pytest.mark.parametrize(
    ("flag", "needle"), [("--target.parallelism=0", "parallelism"), ("--target.workers=-1", "workers")]
)
def test_cli_refuses_fan_out_bounds_out_of_range(flag, needle):
    relay_bin = str(Path(sys.executable).parent / "memhp-relay")
    p = subprocess.run([relay_bin, "--web.no-auth", flag], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and needle in p.stderr, p.stderr
