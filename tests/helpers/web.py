"""Credentials and payloads shared by the web layer's and the controller's tests."""

from __future__ import annotations

from pathlib import Path

TOKEN = "t0ken-for-web-tests-0123456789"


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


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
