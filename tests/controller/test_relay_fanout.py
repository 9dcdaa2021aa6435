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
from tests.helpers.web import secret_file, webhook_body

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
    def __init__(self, tmp_path: Path, port: int, **delivery) -> None:
        self.metrics = RelayMetrics()
        token = secret_file(tmp_path / "relay-token", RELAY_TOKEN)
        delivery.setdefault("bearer_token_file", str(tmp_path / "ctrl-token"))
        self.sink = FanOutSink(
            TargetTemplate(f"http://{{instance:host}}:{port}/webhook/alertmanager"),
            Deliverer(DeliverySettings(**delivery), self.metrics),
            self.metrics,
        )
        self.handle = serve_relay(
            WebhookSettings(listen_address="127.0.0.1:0", bearer_token_file=str(token), max_concurrency=64),
            self.sink,
            self.metrics,
        )

    def post(self, data: bytes, timeout: float = 120) -> int:
        req = urllib.request.Request(
            self.handle.webhook_url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {RELAY_TOKEN}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.handle.url + "/-/healthy", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

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
def fleet(tmp_path):
    """320 unresponsive targets and 2 real controllers, all on one port; a relay in front."""
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
    relay = Relay(tmp_path, port, deadline=DEADLINE)
    yield relay, port, hosts[2:], controllers, dead
    relay.close()
    dead.close()
    for _, _, handle in controllers:
        handle.shutdown()


def test_a_notification_to_many_unresponsive_targets_starves_no_one(fleet):
    relay, port, dead_hosts, controllers, dead = fleet
    probes: list[bool] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            probes.append(relay.healthy())
            stop.wait(0.05)

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

    assert other_done and other.result == 200, (other.result, other.took)
    assert all(len(sink.alerts) == 1 for _, sink, _ in controllers)
    assert attack_done and attack.result == 503, (attack.result, attack.took)
    assert finished
    # Queued deliveries whose deadline passed were dropped, never sent late.
    late = [(t - attack.started, h) for t, h in dead.accepted if t > attack.started + DEADLINE + 0.5]
    assert not late, late[:5]
    assert relay.value("memhp_relay_delivery_failures_total", reason="deadline") == N_DEAD
    assert len(probes) >= 20
    assert sum(probes) / len(probes) >= 0.99, f"{probes.count(False)} of {len(probes)} health probes failed"
