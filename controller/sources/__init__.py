"""Alert sources: where alerts come from before the engine sees them.

* :mod:`.webhook` — Alertmanager pushes (webhook payload version 4); the same
  HTTP server serves the controller's ``/metrics`` and ``/-/healthy``.
* :mod:`.pull` — the controller polls Alertmanager's v2 API (fleets).
* :mod:`.alertmanager_payload` — Alertmanager's alert JSON (webhook payload
  and API answer) to ``Alert``, validated and bounded, for both;
* :mod:`.common` — fingerprint and timestamp normalisation shared by both, so
  the engine can dedup occurrences ``(fingerprint, startsAt)`` whatever the source.

The HTTP server itself is :mod:`memhp.web`, shared with the exporter.

Both hand :class:`controller.alert.Alert` objects to an
:class:`controller.alert.AlertSink`.
"""

from .common import canonical_time, labels_fingerprint
from .pull import PollResult, PullConfigError, PullSettings, PullSource, add_pull_arguments, pull_settings_from_args
from .webhook import (
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_PORT,
    WEBHOOK_PATH,
    PayloadError,
    WebhookConfigError,
    WebhookServer,
    WebhookSettings,
    add_webhook_arguments,
    parse_webhook_payload,
    serve,
    settings_from_args,
)

__all__ = [
    "DEFAULT_LISTEN_ADDRESS",
    "DEFAULT_PORT",
    "WEBHOOK_PATH",
    "PayloadError",
    "PollResult",
    "PullConfigError",
    "PullSettings",
    "PullSource",
    "WebhookConfigError",
    "WebhookServer",
    "WebhookSettings",
    "add_pull_arguments",
    "add_webhook_arguments",
    "canonical_time",
    "labels_fingerprint",
    "parse_webhook_payload",
    "pull_settings_from_args",
    "serve",
    "settings_from_args",
]
