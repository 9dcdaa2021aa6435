"""A notification Alertmanager has given up on is not delivered (issue 24: the lost resolution).

Alertmanager records a notification as sent only when the answer arrives
within its flush timeout (group_interval, at least 10 s), and it sends a
resolution only for a notification it recorded.  A relay that goes on
delivering a firing alert after Alertmanager hung up makes the node act on an
alert Alertmanager considers unsent: if the alert resolves before
Alertmanager's next successful flush, the resolution never comes.

Here a real Alertmanager (flush timeout 10 s) notifies the relay, whose node
holds the first delivery past that timeout and drops it, then is unavailable
for a while after it first accepts alerts (a controller restarting).  The
relay must not retry the abandoned notification: the node's first firing must
come from a notification Alertmanager is still waiting for, and the
resolution must reach the node.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from memhp.controller.relay.delivery import Deliverer, DeliverySettings
from memhp.controller.relay.metrics import RelayMetrics
from memhp.controller.relay.receiver import FanOutSink
from memhp.controller.relay.receiver import serve as serve_relay
from memhp.controller.relay.template import TargetTemplate
from memhp.controller.sources.webhook import WebhookSettings
from tests.helpers.alertmanager import api_alert, resolved, webhook_receiver
from tests.helpers.wait import free_port, wait_until
from tests.helpers.web import secret_file

RELAY_TOKEN = "am-to-relay-late-0123456789"
NODE = "127.0.1.77"
HOLD = 11.0  # past Alertmanager's shortest flush timeout (10 s)
UNAVAILABLE = 12.0  # after the node first accepts alerts: longer than a flush


class FlakyNode:
    """A node's controller: holds its first request past Alertmanager's timeout and drops it; after it
    first accepts alerts, answers 503 for UNAVAILABLE seconds; records what it accepted."""

    def __init__(self, host: str) -> None:
        self.accepted: list[tuple[float, str]] = []  # (when, status)
        self.requests = 0
        self.lock = threading.Lock()
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                verdict = node.verdict()
                if verdict == "hold":
                    time.sleep(HOLD)
                    self.close_connection = True
                    return  # dropped without an answer: the relay sees a connection error
                code = 200 if verdict == "accept" else 503
                if code == 200:
                    node.record(body)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verdict(self) -> str:
        with self.lock:
            self.requests += 1
            if self.requests == 1:
                return "hold"
            first = self.accepted[0][0] if self.accepted else None
        if first is not None and time.monotonic() - first < UNAVAILABLE:
            return "unavailable"
        return "accept"

    def record(self, body: dict) -> None:
        with self.lock:
            for a in body["alerts"]:
                self.accepted.append((time.monotonic(), a["status"]))

    def statuses(self) -> list[str]:
        with self.lock:
            return [s for _, s in self.accepted]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.prometheus
def test_a_notification_alertmanager_gave_up_on_is_not_delivered_and_the_resolution_arrives(tmp_path, alertmanager):
    node = FlakyNode(NODE)
    metrics = RelayMetrics()
    # A long deadline and attempt timeout, as an operator may set them: the relay must still not
    # deliver what Alertmanager has given up on.
    settings = DeliverySettings(deadline=40.0, attempt_timeout=20.0, max_attempts=20)
    sink = FanOutSink(
        TargetTemplate(f"http://{{instance:host}}:{node.port}/webhook/alertmanager"),
        Deliverer(settings, metrics),
        metrics,
    )
    token = secret_file(tmp_path / "relay-token", RELAY_TOKEN)
    relay = serve_relay(
        WebhookSettings(listen_address=f"127.0.0.1:{free_port()}", bearer_token_file=str(token)), sink, metrics
    )
    try:
        receiver = webhook_receiver("memhp-relay", relay.webhook_url, bearer_token_file=token)
        # group_interval 10 s: Alertmanager's flush timeout is 10 s (its minimum), and a failed flush is
        # tried again at the next one.
        am = alertmanager(
            {
                "route": {
                    "receiver": "memhp-relay",
                    "group_by": ["instance"],
                    "group_wait": "200ms",
                    "group_interval": "10s",
                    "repeat_interval": "4h",
                },
                "receivers": [receiver],
            }
        )
        alert = api_alert("MemhpLateTest", {"instance": f"{NODE}:10301"})
        am.post_alerts([alert])
        wait_until(node.statuses, timeout=60, desc="the firing alert at the node")
        am.post_alerts([resolved(alert)])  # as soon as the node got it, as a short incident would
        wait_until(
            lambda: "resolved" in node.statuses(),
            timeout=60,
            desc="the resolution at the node",
            last=lambda: (node.statuses(), am.log_text()[-1500:]),
        )
        # The held notification was given up by Alertmanager, then not retried by the relay.
        assert metrics.registry.get_sample_value("memhp_relay_delivery_failures_total", {"reason": "abandoned"}) >= 1
    finally:
        relay.shutdown()
        sink.close()
        node.close()


class SlowNode:
    """A controller that takes SLOW seconds to accept each request, one at a time; records what it got."""

    SLOW = 5.0

    def __init__(self, host: str) -> None:
        self.got: list[str] = []  # the "n" label of each alert accepted
        self.started = 0  # requests being handled or handled
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                node.started += 1
                time.sleep(SlowNode.SLOW)
                node.got += [a["labels"]["n"] for a in body["alerts"]]
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _post(url: str, n: int) -> socket.socket:
    """Send notification ``n`` and leave the connection open, as a waiting Alertmanager does."""
    from urllib.parse import urlsplit

    from tests.helpers.web import webhook_body

    labels = {"alertname": "MemhpLateTest", "instance": f"{SLOW_NODE}:10301", "n": str(n)}
    alert = {"status": "firing", "labels": labels, "annotations": {}, "startsAt": "2026-01-01T10:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "fingerprint": f"{n:016x}"}  # fmt: skip
    body = json.dumps(webhook_body([alert], receiver="memhp-relay")).encode()
    parts = urlsplit(url)
    s = socket.create_connection((parts.hostname, parts.port), timeout=10)
    s.sendall(
        f"POST {parts.path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {RELAY_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return s


SLOW_NODE = "127.0.1.79"


def test_a_hang_up_before_the_delivery_stops_it_and_one_during_it_is_counted(tmp_path):
    node = SlowNode(SLOW_NODE)
    metrics = RelayMetrics()
    sink = FanOutSink(
        TargetTemplate(f"http://{{instance:host}}:{node.port}/webhook/alertmanager"),
        Deliverer(DeliverySettings(deadline=20.0, attempt_timeout=10.0), metrics),
        metrics,
    )
    token = secret_file(tmp_path / "relay-token", RELAY_TOKEN)
    relay = serve_relay(WebhookSettings(listen_address="127.0.0.1:0", bearer_token_file=str(token)), sink, metrics)

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    try:
        # Notification 1 is being delivered (the node takes 5 s) and notification 2, for the same node,
        # waits behind it (one delivery in flight per node) when both senders hang up.
        first = _post(relay.webhook_url, 1)
        wait_until(lambda: value("memhp_relay_queue_depth") == 1, timeout=10, desc="notification 1 in flight")
        second = _post(relay.webhook_url, 2)
        wait_until(lambda: value("memhp_relay_queue_depth") == 2, timeout=10, desc="notification 2 queued")
        wait_until(lambda: node.started == 1, timeout=10, desc="notification 1 at the node")
        first.close()  # Alertmanager's flush timeout expired
        second.close()
        wait_until(lambda: value("memhp_relay_queue_depth") == 0, timeout=30, desc="both done")
        assert node.got == ["1"]  # under way when its sender left: it could not be taken back
        assert value("memhp_relay_late_answers_total") == 1  # and it is counted
        assert value("memhp_relay_delivery_failures_total", reason="abandoned") == 1  # 2 was never sent
    finally:
        relay.shutdown()
        sink.close()
        node.close()
