"""The relay's HTTP side: the controller's webhook server, with a sink that fans out.

This is the one module that knows the webhook server (memhp.web through
``controller.sources.webhook``); everything else in the relay sees only
:class:`controller.alert.Alert` and the ``AlertSink`` protocol.

The sink's ``submit`` returns only when every target has accepted its
alerts; otherwise it raises SinkUnavailable, the server answers 503 and
Alertmanager sends the group again (its notification log is updated only on
success).  It returns within the delivery deadline, plus a second at most for
a notification with several targets (fanout.py), whatever their number.  Alerts whose target cannot be made are counted and logged, not
retried: sending them again would not help.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial

from memhp.controller.alert import Alert, SinkUnavailable
from memhp.controller.sources import webhook
from memhp.web import Request

from .delivery import Abandoned, Deliverer, DeliveryFailed, never_abandoned
from .fanout import DEFAULT_PARALLELISM, DEFAULT_WORKERS, Helpers, Notification
from .metrics import RelayMetrics
from .template import UNRESOLVABLE_REASONS, TargetTemplate, Unresolvable

log = logging.getLogger(__name__)

DEFAULT_PORT = 10303
DEFAULT_LISTEN_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_MAX_CONCURRENCY = 256
# Every request slot usable, plus room for refusals being answered and connections still sending
# their headers (those are closed to make room; health has a reserve of its own besides).
DEFAULT_MAX_CONNECTIONS = DEFAULT_MAX_CONCURRENCY + 64
# Alertmanager flushes every node's group at once after group_wait: the kernel holds what the relay has
# not accepted yet (without a thread) instead of dropping SYNs, which costs the sender a 1 s, 3 s, 7 s...
# retransmission each.  But no more than the relay accepts and handshakes in a few seconds (about 300 a
# second on two cores): a connection that waits longer than Alertmanager's TLS handshake timeout (10 s)
# is dead when accepted (measured: 4096 made a 10,000-node burst worse; docs/relay.md, "Sizing").
DEFAULT_LISTEN_BACKLOG = 1024
# More than a controller takes (1,000 alerts, 1 MiB): a group_by other than instance can put more
# alerts for one node in one notification, and the relay splits what it sends on (batching.py).
# About 730 bytes per alert as Alertmanager sends them: 10,000 fit in 8 MiB.
MAX_NOTIFICATION_ALERTS = 10_000
DEFAULT_MAX_BODY_BYTES = 8 << 20


class FanOutSink:
    """An AlertSink that delivers each alert to its node's controller before returning."""

    def __init__(
        self,
        template: TargetTemplate,
        deliverer: Deliverer,
        metrics: RelayMetrics,
        *,
        parallelism: int = DEFAULT_PARALLELISM,
        workers: int = DEFAULT_WORKERS,
    ) -> None:
        if not 1 <= parallelism <= 1024:
            raise ValueError("--target.parallelism must be between 1 and 1024")
        if not 0 <= workers <= 4096:
            raise ValueError("--target.workers must be between 0 and 4096")
        self.template = template
        self.deliverer = deliverer
        self.metrics = metrics
        self.parallelism = parallelism
        self._helpers = Helpers(workers)
        metrics.fanout_workers_busy.set_function(lambda: self._helpers.busy)
        self._warned = 0
        self._late = 0
        self._warn_lock = threading.Lock()
        for reason in UNRESOLVABLE_REASONS:
            metrics.unresolvable_alerts.labels(reason)

    def targets(self, alerts: Sequence[Alert]) -> dict[str, list[Alert]]:
        by_target: dict[str, list[Alert]] = defaultdict(list)
        for a in alerts:
            try:
                by_target[self.template.resolve(a.labels)].append(a)
            except Unresolvable as e:
                self.metrics.unresolvable_alerts.labels(e.reason).inc()
                self._warn_unresolvable(a, e)
        return by_target

    def _warn_unresolvable(self, alert: Alert, e: Unresolvable) -> None:
        with self._warn_lock:
            self._warned += 1
            n = self._warned
        if n <= 10 or n % 1000 == 0:  # a misrouted flood must not flood the log
            log.warning(
                "alert %s (fingerprint %s) has no target: %s (template %s; %d so far)",
                alert.name,
                alert.fingerprint[:32],
                e,
                self.template.text,
                n,
            )

    def submit(self, alerts: Sequence[Alert]) -> None:
        self.deliver(alerts, time.monotonic(), never_abandoned)

    def submit_request(self, alerts: Sequence[Alert], req: Request) -> None:
        """As submit, for a request: its deadline runs from its connection's arrival (reading it
        counts), and nothing is sent once its client has hung up."""
        delivered = self.deliver(alerts, req.arrived or time.monotonic(), req.client_gone)
        if delivered and req.client_gone():
            self.metrics.late_answers.inc()
            self._warn_late(alerts)

    def deliver(self, alerts: Sequence[Alert], arrived: float, abandoned: Abandoned) -> int:
        """Deliver to every target; how many there were (SinkUnavailable when any missed its alerts)."""
        deadline = arrived + self.deliverer.settings.deadline  # for every target, queueing included
        items = list(self.targets(alerts).items())
        failures: list[str] = []
        if len(items) == 1:  # the shipped route groups by node: the common case, no thread hop
            try:
                self.deliverer.deliver(*items[0], deadline=deadline, abandoned=abandoned)
            except DeliveryFailed as e:
                failures.append(str(e))
        elif items:
            notification = Notification(items, partial(self.deliverer.deliver, abandoned=abandoned), deadline)
            failures = notification.run(self._helpers, self.parallelism)
        if failures:
            log.warning(
                "%d of %d target(s) did not get their alerts; answering 503 so Alertmanager retries: %s",
                len(failures),
                len(items),
                "; ".join(failures[:5]),
            )
            raise SinkUnavailable(f"{len(failures)} of {len(items)} target(s) did not get their alerts")
        return len(items)

    def _warn_late(self, alerts: Sequence[Alert]) -> None:
        with self._warn_lock:
            self._late += 1
            n = self._late
        if n <= 10 or n % 1000 == 0:
            log.warning(
                "delivered %d alert(s) (%s) but Alertmanager had hung up before the answer: it counts the "
                "notification as failed and sends it again at its next group_interval only if still firing, "
                "so a resolution before then never comes (%d so far; docs/relay.md, 'Answering in time')",
                len(alerts),
                ", ".join(sorted({a.labels.get("instance", "?") for a in alerts})[:5]),
                n,
            )

    def close(self) -> None:
        self._helpers.close()


def serve(
    settings: webhook.WebhookSettings,
    sink: FanOutSink,
    metrics: RelayMetrics,
    ready: Callable[[], bool] = lambda: True,
) -> webhook.WebhookServer:
    """The controller's webhook server (the shared web layer: limits, auth, TLS), serving the relay's
    sink and metrics, with SO_REUSEPORT: several relay processes can share one address on one host
    (the kernel spreads connections over them), as replicas share a Service's address.

    Over ``--web.max-concurrency`` a request is answered 503 at once, as by the controller, and
    Alertmanager retries it with backoff.  (Holding such connections in the backlog instead was
    measured worse: at 10,000 notifications, Alertmanager's 10 s flush deadline expired on queued
    connections, 190,000 attempts failed and delivery took twice as long; docs/performance.md.)
    """
    metrics.requests_rejected.labels(webhook.R_SINK_UNAVAILABLE)
    return webhook.serve(
        settings,
        sink,
        metrics,
        name="memhp-relay",
        reuse_port=True,
        max_alerts=MAX_NOTIFICATION_ALERTS,
        timeout_status=503,  # never 408: Alertmanager does not retry it (docs/relay.md, "Answering in time")
        ready=ready,
    )
