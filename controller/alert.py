"""The one shape in which alerts reach the controller, whatever their source.

Contract between the alert sources (``controller/sources/``: Alertmanager
webhook, Alertmanager API polling) and the engine that decides and acts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


FIRING = AlertStatus.FIRING
RESOLVED = AlertStatus.RESOLVED


@dataclass(frozen=True)
class Alert:
    name: str  # labels["alertname"]
    status: str  # FIRING or RESOLVED: each alert's own status, not the group's
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    # RFC 3339 in UTC with millisecond precision (sources normalise it: the
    # webhook sends nanoseconds, the API milliseconds, for the same episode).
    starts_at: str = ""
    ends_at: str | None = None
    fingerprint: str = ""  # Alertmanager's; sources compute one from labels if absent
    source: str = "webhook"  # "webhook" | "pull" | "manual"

    @property
    def occurrence(self) -> tuple[str, str]:
        """Identity of one firing episode: repeats of it must never act twice."""
        return (self.fingerprint, self.starts_at)


class SinkFull(Exception):
    """The work queue is full: the webhook answers 429 and Alertmanager retries."""


class SinkUnavailable(Exception):
    """The engine cannot accept work right now (e.g. shutting down): answer 503."""


class AlertSink(Protocol):
    def submit(self, alerts: Sequence[Alert]) -> None:
        """Accept alerts for processing without blocking on the actions.

        Returns once the alerts are durably queued; raises SinkFull or
        SinkUnavailable otherwise.
        """
