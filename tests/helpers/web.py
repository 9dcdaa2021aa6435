"""Credentials and payloads shared by the web layer's tests (tests/web)."""

from __future__ import annotations

from pathlib import Path

TOKEN = "t0ken-for-web-tests-0123456789"


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


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
    return {"version": "4", "status": "firing", "receiver": "memhp", "groupKey": "{}", "alerts": [alert]}
