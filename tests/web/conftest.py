"""A real controller webhook server and a real exporter server on loopback, for the web layer's tests."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from memhp.exporter.cli import ExporterConfig, build_registry
from memhp.exporter.kernel.paths import Paths
from tests.helpers.trees import fixture_archives, unpack
from tests.helpers.web import webhook_servers


@pytest.fixture
def controller(tmp_path):
    """``start(**WebhookSettings overrides) -> Receiver``: the webhook server, bearer token by default,
    its answers as raw bytes."""
    with webhook_servers(tmp_path, json_api=False) as start:
        yield start


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
