"""Alertmanager's JSON to :class:`Alert`: the webhook payload (version 4) and the v2 API's alert list.

Both sources (webhook, pull) turn Alertmanager's alert objects into the same
``Alert``, through :func:`alert_fields`, so an occurrence looks the same to
the engine whichever way it came.  Everything taken from the payload is
bounded (see docs/controller.md, "Limits"): a sender cannot grow the
journal, the engine's memory or a log line by sending longer or more fields.

Every malformed input is a :class:`PayloadError` with a ``reason``, never
another exception: JSON nested past the parser's depth, lone surrogates,
timestamps out of range all end here as ``bad_json`` or ``invalid_payload``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from memhp.controller.alert import FIRING, RESOLVED, Alert

from .common import TimestampError, canonical_end_time, canonical_time, labels_fingerprint

log = logging.getLogger(__name__)

SUPPORTED_VERSION = "4"

# Bounds on what one payload may carry (docs/controller.md, "Limits").
MAX_ALERTS = 1000  # per webhook payload or API answer
MAX_LABELS = 64  # per alert
MAX_LABEL_NAME_BYTES = 256
MAX_LABEL_VALUE_BYTES = 4096
MAX_ANNOTATIONS = 64
MAX_ANNOTATION_VALUE_BYTES = 16384
MAX_FINGERPRINT_CHARS = 64  # Alertmanager's are 16 hex digits
MAX_STRING_BYTES = 16384  # receiver, groupKey, externalURL, generatorURL

# requests_rejected{reason} values
R_BAD_JSON = "bad_json"
R_BAD_VERSION = "bad_version"
R_INVALID = "invalid_payload"


class PayloadError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(body: bytes) -> Any:
    """Strict JSON (no NaN/Infinity); PayloadError(bad_json) for anything else, deep nesting included."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise PayloadError(R_BAD_JSON, f"body is not valid JSON: {e}") from None
    except RecursionError:
        raise PayloadError(R_BAD_JSON, "body is not valid JSON: nested too deeply") from None


def _utf8_len(value: str, where: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise PayloadError(R_INVALID, f"{where} is not valid Unicode (lone surrogate)") from None


def _require_str(
    obj: dict, key: str, where: str, *, required: bool = True, limit: int = MAX_STRING_BYTES
) -> str | None:
    if key not in obj:
        if required:
            raise PayloadError(R_INVALID, f"{where}: missing {key!r}")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise PayloadError(R_INVALID, f"{where}.{key} must be a string, got {type(value).__name__}")
    if _utf8_len(value, f"{where}.{key}") > limit:
        raise PayloadError(R_INVALID, f"{where}.{key} is longer than {limit} bytes")
    return value


def _string_map(
    obj: dict, key: str, where: str, *, required: bool, count: int, name_bytes: int, value_bytes: int
) -> dict[str, str]:
    if key not in obj:
        if required:
            raise PayloadError(R_INVALID, f"{where}: missing {key!r}")
        return {}
    value = obj[key]
    if not isinstance(value, dict):
        raise PayloadError(R_INVALID, f"{where}.{key} must be an object of strings, got {type(value).__name__}")
    if len(value) > count:
        raise PayloadError(R_INVALID, f"{where}.{key} has {len(value)} entries, more than {count}")
    for k, v in value.items():
        if not isinstance(v, str):
            raise PayloadError(R_INVALID, f"{where}.{key}[{k[:64]!r}] must be a string, got {type(v).__name__}")
        if _utf8_len(k, f"{where}.{key} name") > name_bytes:
            raise PayloadError(R_INVALID, f"{where}.{key}: a name is longer than {name_bytes} bytes")
        if _utf8_len(v, f"{where}.{key}[{k[:64]!r}]") > value_bytes:
            raise PayloadError(R_INVALID, f"{where}.{key}[{k[:64]!r}] is longer than {value_bytes} bytes")
    return dict(value)


def labels_of(obj: dict, key: str, where: str, *, required: bool = True) -> dict[str, str]:
    return _string_map(
        obj,
        key,
        where,
        required=required,
        count=MAX_LABELS,
        name_bytes=MAX_LABEL_NAME_BYTES,
        value_bytes=MAX_LABEL_VALUE_BYTES,
    )


def annotations_of(obj: dict, key: str, where: str) -> dict[str, str]:
    return _string_map(
        obj,
        key,
        where,
        required=False,
        count=MAX_ANNOTATIONS,
        name_bytes=MAX_LABEL_NAME_BYTES,
        value_bytes=MAX_ANNOTATION_VALUE_BYTES,
    )


@dataclass(frozen=True)
class AlertFields:
    """What the webhook's and the API's alert objects have in common, validated and bounded."""

    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str | None
    fingerprint: str

    def alert(self, status: str, source: str) -> Alert:
        return Alert(
            name=self.name,
            status=status,
            labels=self.labels,
            annotations=self.annotations,
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            fingerprint=self.fingerprint,
            source=source,
        )


def alert_fields(raw: dict, where: str) -> AlertFields:
    labels = labels_of(raw, "labels", where)
    name = labels.get("alertname", "")
    if not name:
        raise PayloadError(R_INVALID, f"{where}.labels has no alertname")
    annotations = annotations_of(raw, "annotations", where)
    starts_at = _require_str(raw, "startsAt", where, limit=64)
    ends_at = _require_str(raw, "endsAt", where, required=False, limit=64)
    _require_str(raw, "generatorURL", where, required=False)
    fingerprint = _require_str(raw, "fingerprint", where, required=False, limit=MAX_FINGERPRINT_CHARS)
    try:
        starts = canonical_time(starts_at or "")
        ends = canonical_end_time(ends_at)
    except TimestampError as e:
        raise PayloadError(R_INVALID, f"{where}: {e}") from None
    return AlertFields(name, labels, annotations, starts, ends, fingerprint or labels_fingerprint(labels))


def _status(obj: dict, where: str) -> str:
    value = _require_str(obj, "status", where, limit=64)
    if value not in (FIRING, RESOLVED):
        raise PayloadError(R_INVALID, f"{where}.status must be 'firing' or 'resolved', got {value!r}")
    return value


def _alert_list(value: Any, where: str, limit: int = MAX_ALERTS) -> list:
    if not isinstance(value, list):
        raise PayloadError(R_INVALID, f"{where} must be a list")
    if len(value) > limit:
        raise PayloadError(R_INVALID, f"{where} holds {len(value)} alerts, more than {limit}")
    return value


# --------------------------------------------------------------------------- webhook (version 4)


def parse_webhook_payload(body: bytes, *, source: str = "webhook", max_alerts: int = MAX_ALERTS) -> list[Alert]:
    """Validate one Alertmanager webhook body (version 4) and return its alerts.

    ``max_alerts``: the controller's cap; the relay, which splits what it sends on, allows more.

    All or nothing: any invalid alert rejects the whole payload (Alertmanager
    does not resend on 4xx, and acting on part of a group we misread is worse).
    Each alert keeps its own status; the group's ``status`` is only checked.
    """
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise PayloadError(R_INVALID, f"payload must be a JSON object, got {type(payload).__name__}")
    version = payload.get("version")
    if version != SUPPORTED_VERSION:
        shown = version if isinstance(version, (int, float, bool)) or version is None else str(version)[:32]
        raise PayloadError(R_BAD_VERSION, f'unsupported payload version {shown!r}; only "4" is understood')
    _status(payload, "payload")
    for key in ("receiver", "groupKey", "externalURL"):
        _require_str(payload, key, "payload", required=False)
    for key in ("groupLabels", "commonLabels"):
        labels_of(payload, key, "payload", required=False)
    annotations_of(payload, "commonAnnotations", "payload")
    truncated = payload.get("truncatedAlerts", 0)
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        raise PayloadError(R_INVALID, "payload.truncatedAlerts must be a non-negative integer")
    raw_alerts = _alert_list(payload.get("alerts"), "payload.alerts", max_alerts)
    if not raw_alerts:
        raise PayloadError(R_INVALID, "payload.alerts is empty")
    alerts = [_webhook_alert(raw, f"alerts[{i}]", source) for i, raw in enumerate(raw_alerts)]
    if truncated:
        log.warning(
            "Alertmanager truncated %d alert(s) from group %r (max_alerts); set max_alerts: 0 on the memhp receiver",
            truncated,
            str(payload.get("groupKey"))[:200].encode("unicode_escape").decode("ascii"),
        )
    return alerts


def _webhook_alert(raw: Any, where: str, source: str) -> Alert:
    if not isinstance(raw, dict):
        raise PayloadError(R_INVALID, f"{where} must be an object, got {type(raw).__name__}")
    status = _status(raw, where)
    return alert_fields(raw, where).alert(status, source)


# --------------------------------------------------------------------------- API v2 (GET /api/v2/alerts)


@dataclass(frozen=True)
class ApiAlert:
    """One gettableAlert: the fields, and whether Alertmanager says it is active, silenced, inhibited."""

    fields: AlertFields
    active: bool
    silenced: bool
    inhibited: bool


def parse_api_alerts(body: bytes) -> list[Any]:
    """The raw list of a ``GET /api/v2/alerts`` answer (each item for :func:`parse_api_alert`)."""
    data = load_json(body)
    if not isinstance(data, list):
        raise PayloadError(R_INVALID, f"expected a list of alerts, got {type(data).__name__}")
    return _alert_list(data, "answer")


def parse_api_alert(raw: Any, where: str = "alert") -> ApiAlert:
    if not isinstance(raw, dict):
        raise PayloadError(R_INVALID, f"{where} is not an object")
    status = raw.get("status") or {}
    if not isinstance(status, dict):
        raise PayloadError(R_INVALID, f"{where}.status must be an object")
    return ApiAlert(
        fields=alert_fields(raw, where),
        active=status.get("state", "active") == "active",
        silenced=bool(status.get("silencedBy")),
        inhibited=bool(status.get("inhibitedBy")),
    )
