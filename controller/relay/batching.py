"""What one POST to a controller may hold: the relay accepts larger notifications than a controller does.

A controller takes at most MAX_ALERTS (1,000) alerts and ``--web.max-body-bytes``
(1 MiB by default) per request; Alertmanager sends a whole aggregation group
in one notification, which with a ``group_by`` other than ``instance`` can hold
more alerts for one node.  The relay sends such a node its alerts in
consecutive batches within those bounds (docs/relay.md, "Limits").
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from memhp.controller.alert import Alert
from memhp.controller.sources.alertmanager_payload import MAX_ALERTS
from memhp.controller.sources.webhook import DEFAULT_MAX_BODY_BYTES

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
ENVELOPE_BYTES = 1024  # version, status, receiver... of the webhook body, besides alerts and commonLabels


def alert_doc(a: Alert) -> dict[str, Any]:
    """One alert of an Alertmanager webhook body (version 4), as the controller reads it."""
    return {
        "status": a.status,
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "startsAt": a.starts_at,
        "endsAt": a.ends_at or GO_ZERO_TIME,
        "fingerprint": a.fingerprint,
    }


def batches(alerts: Sequence[Alert], max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Iterator[Sequence[Alert]]:
    """``alerts`` in consecutive slices of at most MAX_ALERTS, each body within ``max_bytes``.

    A body is its alerts, plus commonLabels (no larger than any one alert),
    plus the envelope; an alert too large on its own still goes, alone (the
    controller refuses it, and the log says so).  Lazy, so that a delivery
    whose deadline passes does not size the rest.
    """
    first = size = largest = 0
    for i, a in enumerate(alerts):
        n = len(json.dumps(alert_doc(a), separators=(",", ":"))) + 1
        over = size + n + max(largest, n) + ENVELOPE_BYTES > max_bytes
        if i > first and (i - first >= MAX_ALERTS or over):
            yield alerts[first:i]
            first, size, largest = i, 0, 0
        size += n
        largest = max(largest, n)
    if first < len(alerts):
        yield alerts[first:]
