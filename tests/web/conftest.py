"""A real controller webhook server and a real exporter server on loopback, for the web layer's tests."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from pathlib import Path

import pytest

from memhp.controller.metrics import ControllerMetrics
from memhp.controller.sources.webhook import WEBHOOK_PATH, WebhookSettings, serve
from memhp.exporter.cli import ExporterConfig, build_registry
from memhp.exporter.kernel.paths import Paths
from tests.helpers.sink import RecordingSink
from tests.helpers.trees import fixture_archives, unpack
from tests.helpers.web import TOKEN, secret_file


class Controller:
    def __init__(self, handle, sink: RecordingSink, metrics: ControllerMetrics, token_file: Path) -> None:
        self.handle, self.sink, self.metrics, self.token_file = handle, sink, metrics, token_file
        self.context: ssl.SSLContext | None = None

    @property
    def port(self) -> int:
        return self.handle.port

    def rejected(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value("memhp_controller_requests_rejected_total", {"reason": reason})
        return value or 0.0

    def request(
        self, method="POST", path=WEBHOOK_PATH, body=None, token: str | None = TOKEN, headers=None, timeout=10.0
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if self.context is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=self.context
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read(), resp
        finally:
            conn.close()


@pytest.fixture
def controller(tmp_path):
    """``start(**WebhookSettings overrides) -> Controller``: the webhook server, bearer token by default."""
    started = []

    def start(**overrides) -> Controller:
        sink, metrics = RecordingSink(), ControllerMetrics()
        token_file = secret_file(tmp_path / "token", TOKEN)
        settings = dict(listen_address="127.0.0.1:0", bearer_token_file=str(token_file))
        settings.update(overrides)
        handle = serve(WebhookSettings(**settings), sink, metrics)
        started.append(handle)
        return Controller(handle, sink, metrics, token_file)

    yield start
    for h in started:
        h.shutdown()


@pytest.fixture
def thread_crashes(monkeypatch):
    """Exceptions that escaped any thread during the test (must stay empty)."""
    crashes: list[str] = []
    monkeypatch.setattr(
        threading, "excepthook", lambda args: crashes.append(f"{args.exc_type.__name__}: {args.exc_value}")
    )
    return crashes


@pytest.fixture(scope="session")
def fixture_tree(tmp_path_factory) -> Path:
    archive = next(a for a in fixture_archives() if a.name.startswith("two-node"))
    return unpack(archive, tmp_path_factory.mktemp("tree"))


@pytest.fixture
def registry(fixture_tree):
    cfg = ExporterConfig(paths=Paths(str(fixture_tree / "sys"), str(fixture_tree / "proc")), once=True)
    return build_registry(cfg)[0]
