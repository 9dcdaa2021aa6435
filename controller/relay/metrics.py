"""The relay's metrics, on its own registry.

No per-target label: 10,000 nodes times histogram buckets would be a
cardinality problem of its own.  Latency, failures and queue depth are
aggregated over targets; the log names every target that failed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # The two the shared webhook server increments (same meaning as the controller's).
        self.requests_rejected = Counter(
            "memhp_relay_requests_rejected", "Webhook requests refused, by reason.", ["reason"], registry=r
        )
        self.alerts_received = Counter(
            "memhp_relay_alerts_received", "Alerts received from Alertmanager, by source and status.",
            ["source", "status"], registry=r,
        )  # fmt: skip
        self.delivery_duration = Histogram(
            "memhp_relay_delivery_duration_seconds",
            "Time to deliver one batch of alerts to one target, retries included, by result.",
            ["result"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.delivery_failures = Counter(
            "memhp_relay_delivery_failures",
            "Deliveries to a target that failed for good (after retries), by reason.",
            ["reason"],
            registry=r,
        )
        self.delivery_attempts = Counter(
            "memhp_relay_delivery_attempts", "HTTP requests to targets, by result.", ["result"], registry=r
        )
        self.alerts_delivered = Counter(
            "memhp_relay_alerts_delivered", "Alerts a target accepted, by status.", ["status"], registry=r
        )
        self.unresolvable_alerts = Counter(
            "memhp_relay_unresolvable_alerts",
            "Alerts whose target the template could not make, by reason (not retried).",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "memhp_relay_queue_depth", "Deliveries queued or in flight, over all targets.", registry=r
        )
        self.queue_depth_max = Gauge(
            "memhp_relay_queue_depth_max", "Deliveries queued or in flight for the busiest target.", registry=r
        )
        self.fanout_workers_busy = Gauge(
            "memhp_relay_fanout_workers_busy",
            "Shared threads (--target.workers) helping notifications with several targets right now.",
            registry=r,
        )
        self.late_answers = Counter(
            "memhp_relay_late_answers",
            "Notifications delivered whose sender (Alertmanager) had hung up before the answer: "
            "it counts them as failed.",
            registry=r,
        )
        self.targets = Gauge("memhp_relay_targets", "Targets with a delivery queued or in flight.", registry=r)
