"""Credentials and payloads shared by the web layer's and the controller's tests."""

from __future__ import annotations

import urllib.error
import urllib.request
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
