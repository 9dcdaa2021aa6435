"""memhp-relay: the target template, and delivery through real HTTP servers on loopback.

Targets are the controller's own webhook server (``sources.webhook.serve``) with a
recording sink, or raw sockets where a target must misbehave.  A label fills in only the
host, so the targets of one test share a port, each on its own loopback address
(127.0.0.11, .12, ...).  The whole path with a real Alertmanager, real relay processes and
real controllers is in test_relay_fleet.py; hostile labels in test_relay_security.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from memhp.controller.alert import FIRING, RESOLVED
from memhp.controller.metrics import ControllerMetrics
from memhp.controller.relay.delivery import Deliverer, DeliverySettings
from memhp.controller.relay.hosts import AllowList
from memhp.controller.relay.metrics import RelayMetrics
from memhp.controller.relay.receiver import FanOutSink
from memhp.controller.relay.receiver import serve as serve_relay
from memhp.controller.relay.template import DEFAULT_TEMPLATE, TargetTemplate, TemplateError, Unresolvable
from memhp.controller.sources.common import labels_fingerprint
from memhp.controller.sources.webhook import WebhookSettings, serve
from tests.helpers.sink import RecordingSink
from tests.helpers.tls import make_self_signed_cert
from tests.helpers.wait import free_port
from tests.helpers.web import secret_file

RELAY_TOKEN = "am-to-relay-0123456789"
CTRL_TOKEN = "relay-to-controller-0123456789"


# --------------------------------------------------------------------------- template


def test_default_template_takes_the_host_of_instance():
    t = TargetTemplate(DEFAULT_TEMPLATE)
    assert t.resolve({"instance": "node-7.example:10301"}) == "http://node-7.example:10302/webhook/alertmanager"
    assert t.resolve({"instance": "[fd00::7]:10301"}) == "http://[fd00::7]:10302/webhook/alertmanager"
    assert t.resolve({"instance": "node-7"}) == "http://node-7:10302/webhook/alertmanager"


def test_host_name_pieces_and_fallbacks():
    t = TargetTemplate("https://{node}.{zone|nodes}.example.com:8443/webhook/alertmanager")
    assert t.resolve({"node": "n7"}) == "https://n7.nodes.example.com:8443/webhook/alertmanager"
    assert t.resolve({"node": "n7", "zone": "eu-1"}) == "https://n7.eu-1.example.com:8443/webhook/alertmanager"


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ({}, "missing_label"),
        ({"instance": ""}, "missing_label"),
        ({"instance": "evil@host"}, "bad_label_value"),
        ({"instance": "host/../x"}, "bad_label_value"),
        ({"instance": "a b"}, "bad_label_value"),
        ({"instance": "host?x=1"}, "bad_label_value"),
        ({"instance": "host:10302"}, "bad_label_value"),  # {label} is host text: no port
        ({"instance": "-host"}, "bad_url"),  # host text, but not a host name
        ({"instance": "127.1"}, "bad_url"),  # the C resolver's 127.0.0.1
    ],
)
def test_unresolvable_alerts(labels, reason):
    with pytest.raises(Unresolvable) as e:
        TargetTemplate("http://{instance}:10302/webhook/alertmanager").resolve(labels)
    assert e.value.reason == reason


@pytest.mark.parametrize(
    "text",
    [
        "http://fixed:10302/webhook",
        "ftp://{instance}/x",
        "http://{instance}/{unclosed",
        "http://{in-stance}/",
        "http://{instance}/{path}",  # a label in the path
        "http://{instance:host}:{port}/x",  # a label in the port
        "http://{user}@host/x",  # user info
        "http://{instance|/x}/y",  # a fallback that is not host text
    ],
)
def test_unusable_templates_refused(text):
    with pytest.raises(TemplateError):
        TargetTemplate(text)


# --------------------------------------------------------------------------- delivery


def alert_doc(instance: str, status: str = FIRING, **labels: str) -> dict:
    lab = {"alertname": "MemhpHotAddedMemoryOffline", "instance": instance, **labels}
    return {
        "status": status,
        "labels": lab,
        "annotations": {"summary": "s"},
        "startsAt": "2026-01-01T10:00:00.123456789Z",
        "endsAt": "2026-01-01T11:00:00Z" if status == RESOLVED else "0001-01-01T00:00:00Z",
        "fingerprint": labels_fingerprint(lab),
    }


def payload(*alerts: dict) -> bytes:
    firing = any(a["status"] == FIRING for a in alerts)
    return json.dumps(
        {
            "version": "4",
            "status": "firing" if firing else "resolved",
            "receiver": "memhp-relay",
            "groupKey": "{}:{}",
            "alerts": list(alerts),
        }
    ).encode()


class Controllers:
    """Real controller webhook servers (recording sinks), one port, each on its own loopback address."""

    def __init__(self, tmp_path: Path) -> None:
        self.token = secret_file(tmp_path / "ctrl-token", CTRL_TOKEN)
        self.handles: list = []
        self.port = free_port()
        self._hosts = iter(f"127.0.0.{i}" for i in range(11, 250))

    def next_host(self) -> str:
        return next(self._hosts)

    def start(self, **overrides):
        sink = RecordingSink()
        settings = dict(listen_address=f"{self.next_host()}:{self.port}", bearer_token_file=str(self.token))
        settings.update(overrides)
        handle = serve(WebhookSettings(**settings), sink, ControllerMetrics())
        self.handles.append(handle)
        return handle, sink

    def close(self) -> None:
        for h in self.handles:
            h.shutdown()


@pytest.fixture
def controllers(tmp_path):
    c = Controllers(tmp_path)
    yield c
    c.close()


class Relay:
    def __init__(self, tmp_path: Path, template: str, **delivery) -> None:
        self.metrics = RelayMetrics()
        token = secret_file(tmp_path / "relay-token", RELAY_TOKEN)
        delivery.setdefault("bearer_token_file", str(tmp_path / "ctrl-token"))
        self.deliverer = Deliverer(DeliverySettings(**delivery), self.metrics)
        self.sink = FanOutSink(TargetTemplate(template, AllowList.parse(["127.0.0.0/8"])), self.deliverer, self.metrics)
        self.handle = serve_relay(
            WebhookSettings(listen_address="127.0.0.1:0", bearer_token_file=str(token), max_concurrency=64),
            self.sink,
            self.metrics,
        )

    def post(self, body: bytes, token: str = RELAY_TOKEN) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.handle.webhook_url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def close(self) -> None:
        self.handle.shutdown()
        self.sink.close()


@pytest.fixture
def relay(tmp_path, controllers):
    started: list[Relay] = []

    def start(scheme: str = "http", **delivery) -> Relay:
        r = Relay(tmp_path, f"{scheme}://{{addr:host}}:{controllers.port}/webhook/alertmanager", **delivery)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


def addr(handle) -> str:
    return f"{handle.host}:{handle.port}"


def test_each_alert_reaches_its_own_controller_with_its_identity(relay, controllers):
    (h1, s1), (h2, s2) = controllers.start(), controllers.start()
    r = relay()
    a1, a2 = alert_doc("n1", addr=addr(h1)), alert_doc("n2", RESOLVED, addr=addr(h2))
    status, doc = r.post(payload(a1, a2))
    assert status == 200, doc
    (got1,) = s1.alerts
    (got2,) = s2.alerts
    assert (got1.fingerprint, got1.starts_at, got1.status) == (a1["fingerprint"], "2026-01-01T10:00:00.123Z", FIRING)
    assert (got2.fingerprint, got2.status, got2.ends_at) == (a2["fingerprint"], RESOLVED, "2026-01-01T11:00:00.000Z")
    assert got1.labels == a1["labels"] and got1.annotations == {"summary": "s"}
    assert r.value("memhp_relay_alerts_delivered_total", status="firing") == 1
    assert r.value("memhp_relay_delivery_duration_seconds_count", result="success") == 2


def test_a_target_that_misses_its_alerts_makes_the_answer_503(relay, controllers):
    h1, s1 = controllers.start()
    dead = socket.socket()
    dead.bind((controllers.next_host(), controllers.port))  # bound, never listening: connection refused
    r = relay(deadline=2, max_attempts=2)
    status, doc = r.post(payload(alert_doc("n1", addr=addr(h1)), alert_doc("n2", addr=dead.getsockname()[0])))
    dead.close()
    assert status == 503 and "1 of 2 target(s)" in doc["message"]
    assert len(s1.alerts) == 1  # the live one got its alert; Alertmanager's resend is harmless to it
    assert r.value("memhp_relay_delivery_failures_total", reason="connection") == 1
    assert r.value("memhp_relay_delivery_attempts_total", result="error") == 2


def test_wrong_credentials_at_the_target_fail_at_once_without_retries(relay, controllers, tmp_path):
    h1, _ = controllers.start()
    wrong = secret_file(tmp_path / "wrong", "not-the-token")
    r = relay(bearer_token_file=str(wrong), max_attempts=5)
    status, _ = r.post(payload(alert_doc("n1", addr=addr(h1))))
    assert status == 503
    assert r.value("memhp_relay_delivery_attempts_total", result="401") == 1
    assert r.value("memhp_relay_delivery_failures_total", reason="http_refused") == 1


def test_a_full_controller_queue_is_retried_after_its_retry_after(relay, controllers):
    h1, s1 = controllers.start()
    s1.full = True
    threading.Timer(0.5, lambda: setattr(s1, "full", False)).start()
    r = relay(deadline=10, max_attempts=3)
    started = time.monotonic()
    status, _ = r.post(payload(alert_doc("n1", addr=addr(h1))))
    took = time.monotonic() - started
    assert status == 200 and len(s1.alerts) == 1
    assert took >= 4.5  # the controller's 429 said Retry-After: 5, and the relay waited for it
    assert r.value("memhp_relay_delivery_attempts_total", result="429") == 1


def test_unresolvable_alerts_are_counted_not_retried(relay):
    r = relay()
    status, _ = r.post(payload(alert_doc("n1")))  # no addr label
    assert status == 200
    assert r.value("memhp_relay_unresolvable_alerts_total", reason="missing_label") == 1


def test_relay_refuses_alertmanager_without_the_token(relay):
    r = relay()
    status, _ = r.post(payload(alert_doc("n1")), token="wrong")
    assert status == 401


class SlowTarget:
    """Accepts, then answers 200 only after ``delay`` seconds."""

    def __init__(self, delay: float, controllers: Controllers) -> None:
        self.sock = socket.create_server((controllers.next_host(), controllers.port))
        self.delay = delay
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            time.sleep(self.delay)
            try:
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass

    @property
    def addr(self) -> str:
        host, port = self.sock.getsockname()
        return f"{host}:{port}"


def test_one_delivery_in_flight_per_target_and_a_bounded_queue(relay, controllers):
    target = SlowTarget(1.0, controllers)
    r = relay(queue_size=1, deadline=10)
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(r.post(payload(alert_doc("n1", addr=target.addr)))[0]))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(30)
    assert sorted(results) == [200, 200, 503]  # one in flight, one queued, one refused
    assert target.accepted == 2  # never two connections to the node at once, and the refused one not sent
    assert r.value("memhp_relay_delivery_failures_total", reason="queue_full") == 1


def test_a_target_that_stalls_fails_within_the_deadline(relay, controllers):
    target = SlowTarget(30.0, controllers)
    r = relay(deadline=1.5, attempt_timeout=1.0, max_attempts=3)
    started = time.monotonic()
    status, _ = r.post(payload(alert_doc("n1", addr=target.addr)))
    assert status == 503 and time.monotonic() - started < 4
    assert r.value("memhp_relay_delivery_failures_total", reason="deadline") == 1


def test_tls_to_the_controllers_verified_with_the_ca_file(relay, controllers, tmp_path):
    host = controllers.next_host()
    cert, key = make_self_signed_cert(tmp_path, "controller", sans=f"IP:{host}")
    h1, s1 = controllers.start(
        listen_address=f"{host}:{controllers.port}", tls_cert_file=str(cert), tls_key_file=str(key)
    )
    ok = relay("https", ca_file=str(cert))
    assert ok.post(payload(alert_doc("n1", addr=addr(h1))))[0] == 200 and len(s1.alerts) == 1
    untrusted = relay("https", max_attempts=1)
    assert untrusted.post(payload(alert_doc("n2", addr=addr(h1))))[0] == 503
    assert len(s1.alerts) == 1


def test_cli_refuses_unsafe_or_unusable_settings(tmp_path):
    relay_bin = str(Path(sys.executable).parent / "memhp-relay")
    for args, needle in (
        (["--web.listen-address=0.0.0.0:0"], "authentication is required"),
        (["--web.no-auth", "--target.template=http://fixed/x"], "names no label"),
        (["--web.no-auth", "--target.max-attempts=0"], "max-attempts"),
        (["--web.no-auth", "--target.template=http://{a}/{b}"], "only fill in the host"),
        (["--web.no-auth", "--target.allow=10.0.0.1/8"], "not a CIDR"),
    ):
        p = subprocess.run([relay_bin, *args], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and needle in p.stderr, (args, p.stderr)
