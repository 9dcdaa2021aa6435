"""Every metric the controller exports, in one place, on its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.actions = Counter(
            "memhp_controller_actions",
            "Actions finished, by action, result and errno name.",
            ["action", "result", "errno"],
            registry=r,
        )
        self.attempts = Counter(
            "memhp_controller_attempts",
            "Sysfs write attempts, by action, result and errno name.",
            ["action", "result", "errno"],
            registry=r,
        )
        self.action_duration = Histogram(
            "memhp_controller_action_duration_seconds",
            "Wall time of one action on one block, retries included.",
            ["action"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.alerts_received = Counter(
            "memhp_controller_alerts_received",
            "Alerts received, by source and status.",
            ["source", "status"],
            registry=r,
        )
        self.requests_rejected = Counter(
            "memhp_controller_requests_rejected", "Webhook requests refused, by reason.", ["reason"], registry=r
        )
        self.guard_refusals = Counter(
            "memhp_controller_guard_refusals", "Actions refused by a guard, by guard.", ["guard"], registry=r
        )
        self.quarantined_blocks = Gauge(
            "memhp_controller_quarantined_blocks", "Blocks quarantined after repeated failures.", registry=r
        )
        self.dry_run = Gauge("memhp_controller_dry_run", "1 when the controller only pretends to act.", registry=r)
        self.paused = Gauge("memhp_controller_paused", "1 while the pause file exists.", registry=r)
        self.last_success = Gauge(
            "memhp_controller_last_success_timestamp_seconds", "Unix time of the last successful action.", registry=r
        )
        self.queue_depth = Gauge("memhp_controller_queue_depth", "Alerts waiting to be processed.", registry=r)
        self.internal_errors = Counter(
            "memhp_controller_internal_errors",
            "Unexpected exceptions caught by the worker, by where.",
            ["where"],
            registry=r,
        )
        self.alerts_deduplicated = Counter(
            "memhp_controller_alerts_deduplicated",
            "Alerts dropped because their occurrence already acted or is queued.",
            registry=r,
        )
        self.polls = Counter(
            "memhp_controller_alertmanager_polls", "Alertmanager API polls, by result.", ["result"], registry=r
        )
        self.last_poll_success = Gauge(
            "memhp_controller_alertmanager_last_poll_success_timestamp_seconds",
            "Unix time of the last successful Alertmanager poll (pull mode).",
            registry=r,
        )
        self.journal_invalid_records = Counter(
            "memhp_controller_journal_invalid_records",
            "Journal lines skipped because they are not a valid record (kept in the file).",
            registry=r,
        )
        self.journal_append_failures = Counter(
            "memhp_controller_journal_append_failures",
            "Journal appends (or rotations) that failed and were rolled back, e.g. disk full.",
            registry=r,
        )
        self.journal_rotations = Counter(
            "memhp_controller_journal_rotations", "Journal rotations (by size or age).", registry=r
        )
        self.refusals_unjournalled = Counter(
            "memhp_controller_refusals_unjournalled",
            "Guard refusals counted but not journalled (same rule and guard journalled within a minute).",
            registry=r,
        )
        # --- fleet safety (issue 22): controller/fleet/ ---
        self.rollout_selected = Gauge(
            "memhp_controller_rollout_selected",
            "1 when this host acts on the rule (inside its rollout share), 0 when it only dry-runs it.",
            ["rule"],
            registry=r,
        )
        self.would_act = Counter(
            "memhp_controller_would_act",
            "Actions planned but not done, by rule and why: dry_run (the controller) or rollout (the rule's share).",
            ["rule", "reason"],
            registry=r,
        )
        self.gate_checks = Counter(
            "memhp_controller_gate_checks",
            "Prometheus gate checks run, by check and result: pass, refuse (series returned) or error.",
            ["check", "result"],
            registry=r,
        )
        self.budget_requests = Counter(
            "memhp_controller_budget_requests",
            "Fleet budget slot requests, by result: acquired, full (no slot within the wait), unavailable.",
            ["result"],
            registry=r,
        )
        self.budget_errors = Counter(
            "memhp_controller_budget_errors",
            "Requests to the fleet budget's store (etcd) that failed: unreachable, slow or an error answer.",
            registry=r,
        )
        self.budget_slots_held = Gauge(
            "memhp_controller_budget_slots_held", "Fleet budget slots this controller holds now.", registry=r
        )
        self.budget_wait = Histogram(
            "memhp_controller_budget_wait_seconds",
            "Time an action waited for its fleet budget slots.",
            buckets=(0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        # The event path (hot-added memory, controller/hotadd.py).
        self.memory_added_blocks = Counter(
            "memhp_controller_memory_added_blocks",
            "Hot-added blocks handled by the event path, by result: onlined, already_online (another writer "
            "won), refused, failed, duplicate, dry_run, gone, not_ready (never linked to its node).",
            ["result"],
            registry=r,
        )
        self.memory_added_online_seconds = Histogram(
            "memhp_controller_memory_added_online_seconds",
            "Time from a block's add uevent to the end of the event path's action that found it online.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.uevents = Counter(
            "memhp_controller_uevents",
            "Kernel memory uevents received by the event path, by action.",
            ["action"],
            registry=r,
        )
        self.uevent_overruns = Counter(
            "memhp_controller_uevent_overruns",
            "Uevent receive-buffer overruns (ENOBUFS); each one rescans the blocks.",
            registry=r,
        )
        self.event_source_up = Gauge(
            "memhp_controller_event_source_up", "1 while the event path listens to kernel uevents.", registry=r
        )
