"""Credentials, payloads and the controller's webhook server on loopback, shared by
the web layer's and the controller's tests.

The ``receiver`` fixture is registered once in tests/conftest.py (pytest_plugins).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from memhp.controller.metrics import ControllerMetrics
from memhp.controller.sources.webhook import WEBHOOK_PATH, WebhookSettings, serve
from tests.helpers.sink import RecordingSink

TOKEN = "t0ken-for-web-tests-0123456789"


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def rejected(metrics: ControllerMetrics, reason: str) -> float:
    """Requests the controller's web server refused for ``reason`` so far."""
    return metrics.registry.get_sample_value("memhp_controller_requests_rejected_total", {"reason": reason}) or 0.0


class Receiver:
    """A running webhook server (``serve``) with its recording sink, metrics and token file.

    With ``json_api`` requests say ``Content-Type: application/json`` and JSON
    answers come back decoded; without it, answers are the raw bytes.
    """

    def __init__(self, handle, sink: RecordingSink, metrics: ControllerMetrics, token_file: Path, json_api: bool):
        self.handle, self.sink, self.metrics, self.token_file = handle, sink, metrics, token_file
        self.json_api = json_api
        self.context: ssl.SSLContext | None = None  # set it to talk TLS

    @property
    def port(self) -> int:
        return self.handle.port

    def rejected(self, reason: str) -> float:
        return rejected(self.metrics, reason)

    def request(
        self, method="POST", path=WEBHOOK_PATH, body=None, token: str | None = TOKEN, headers=None, timeout=10.0
    ) -> tuple[int, Any, http.client.HTTPResponse]:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if self.json_api and body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        if self.context is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=self.context
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if self.json_api and resp.getheader("Content-Type", "").startswith("application/json"):
            return resp.status, json.loads(data), resp
        return resp.status, data, resp

    def raw(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


@contextlib.contextmanager
def webhook_servers(tmp_path: Path, *, json_api: bool) -> Iterator[Callable[..., Receiver]]:
    """``start(**WebhookSettings overrides) -> Receiver`` on 127.0.0.1, bearer TOKEN by
    default; every server started is shut down on exit."""
    started = []

    def start(**overrides) -> Receiver:
        sink, metrics = RecordingSink(), ControllerMetrics()
        token_file = secret_file(tmp_path / "token", TOKEN)
        settings: dict[str, Any] = dict(listen_address="127.0.0.1:0", bearer_token_file=str(token_file))
        settings.update(overrides)
        handle = serve(WebhookSettings(**settings), sink, metrics)
        started.append(handle)
        return Receiver(handle, sink, metrics, token_file, json_api)

    try:
        yield start
    finally:
        for h in started:
            h.shutdown()


@pytest.fixture
def receiver(tmp_path) -> Iterator[Callable[..., Receiver]]:
    """The controller's webhook server, spoken to in JSON (see :func:`webhook_servers`)."""
    with webhook_servers(tmp_path, json_api=True) as start:
        yield start


def webhook_body(alerts: list, **envelope) -> dict:
    """Alertmanager's webhook document (version 4) around ``alerts``, as
    Alertmanager sends it; ``envelope`` replaces any of its fields."""
    doc = {
        "version": "4",
        "status": "firing",
        "receiver": "memhp",
        "groupKey": "{}",
        "truncatedAlerts": 0,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    }
    doc.update(envelope)
    return doc


def payload(**alert_extra) -> dict:
    alert = {
        "status": "firing",
        "labels": {"alertname": "MemoryBlocksOffline", "node": "n1"},
        "annotations": {},
        "startsAt": "2024-05-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "0123456789abcdef",
    }
    alert.update(alert_extra)
    return webhook_body([alert])


def post_status(url: str, data: bytes, headers: dict[str, str] | None = None, timeout: float = 120) -> int:
    """POST ``data`` as JSON to ``url``; the HTTP status, whatever it is."""
    req = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def healthy(base_url: str, timeout: float = 2) -> bool:
    """Whether ``/-/healthy`` of the server at ``base_url`` answers 200 within ``timeout``."""
    try:
        with urllib.request.urlopen(base_url + "/-/healthy", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False
