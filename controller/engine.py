"""The engine: accepts alerts (``AlertSink``), matches rules, runs actions.

``submit()`` never blocks on actions: it validates, drops repeats of an
occurrence that already acted or is already queued, and puts the rest on a
bounded queue (all of a batch or none: ``SinkFull``).  One worker thread
takes alerts off the queue and runs each matching action through the
:class:`~controller.executor.Executor`, so actions never overlap.  Anything
unexpected while handling one alert is logged and counted; the loop goes on.

``Engine.open()`` opens the journal, rebuilds the guards from it and
reconciles interrupted writes; ``start()`` starts the worker; ``close()``
stops it.  ``act`` uses ``open()`` + ``run_manual()`` without a worker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence

from memhp.exporter.kernel.paths import Paths

from .actuator import Actuator, Writer
from .alert import FIRING, RESOLVED, Alert, SinkFull, SinkUnavailable
from .config import Config, Rule
from .executor import ActionOutcome, Executor, Origin
from .guards import Guards
from .journal import Journal
from .metrics import ControllerMetrics
from .policy import Request
from .reconcile import reconcile

log = logging.getLogger(__name__)

_STOP = object()


def occurrence_key(alert: Alert) -> tuple[str, str]:
    """Idempotency key: firing and resolved of one episode are distinct occurrences."""
    fp, sa = alert.occurrence
    return (fp, sa if alert.status == FIRING else f"{sa}/resolved")


def valid_alert(alert: object) -> str | None:
    """Why ``alert`` cannot be handled, or None."""
    if not isinstance(alert, Alert):
        return f"not an Alert: {type(alert).__name__}"
    if not isinstance(alert.name, str) or not alert.name:
        return "empty or non-string alert name"
    if alert.status not in (FIRING, RESOLVED):
        return f"status {alert.status!r}"
    if not isinstance(alert.labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in alert.labels.items()
    ):
        return "labels are not a string mapping"
    if not isinstance(alert.fingerprint, str) or not isinstance(alert.starts_at, str):
        return "fingerprint/startsAt not strings"
    return None


class Engine:
    def __init__(
        self,
        cfg: Config,
        paths: Paths,
        metrics: ControllerMetrics | None = None,
        *,
        dry_run: bool | None = None,
        writer: Writer | None = None,
        journal_path: str | None = None,
        clock=time.time,
        lock_timeout: float = 60.0,
    ) -> None:
        self.cfg = cfg
        self.paths = paths
        self.metrics = metrics or ControllerMetrics()
        self.stop_event = threading.Event()
        self.journal = Journal(journal_path or cfg.controller.journal, clock=clock)
        self.guards = Guards(cfg.guards, self.journal, self.metrics, dry_run=dry_run, clock=clock)
        self.actuator = Actuator(paths, cfg.retry, self.journal, self.metrics, writer=writer, stop=self.stop_event)
        self.executor = Executor(
            cfg, paths, self.journal, self.guards, self.actuator, self.stop_event, lock_timeout=lock_timeout
        )
        self._queue: queue.Queue = queue.Queue()
        self._qlock = threading.Condition()
        self._inflight = 0
        self._pending: set[tuple[str, str]] = set()
        self._worker: threading.Thread | None = None
        self._accepting = False
        self.reconciled: list[dict] = []

    # --- lifecycle ---------------------------------------------------------------------------

    def open(self) -> Engine:
        self.journal.open()
        with self.journal.action_lock(self.executor.lock_timeout, self.stop_event):
            self.guards.refresh()  # the whole journal, first time
            records = list(self.journal.read_all())
            self.reconciled = reconcile(self.journal, self.paths, records)
            self.guards.refresh()
        return self

    def start(self) -> Engine:
        if self._worker is None:
            self._accepting = True
            self._worker = threading.Thread(target=self._run, name="memhp-controller-worker", daemon=True)
            self._worker.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        self._accepting = False
        self.stop_event.set()
        if self._worker is not None:
            self._queue.put(_STOP)
            self._worker.join(timeout)
            self._worker = None
        self.journal.close()

    def __enter__(self) -> Engine:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def dry_run(self) -> bool:
        return self.guards.dry_run

    # --- AlertSink ---------------------------------------------------------------------------

    def submit(self, alerts: Sequence[Alert]) -> None:
        if not self._accepting or self.stop_event.is_set():
            raise SinkUnavailable("controller is not running")
        work: list[Alert] = []
        for a in alerts:
            try:
                # alerts_received is counted by the sources, once submit() returned.
                why = valid_alert(a)
                if why:
                    log.warning("ignoring invalid alert: %s", why)
                    self.metrics.internal_errors.labels("invalid_alert").inc()
                    continue
                if self.match(a) is None:
                    continue
                key = occurrence_key(a)
                if (
                    self.guards.already_acted(key)
                    or (key[0] and key in self._pending)
                    or any(key[0] and occurrence_key(w) == key for w in work)
                ):
                    self.metrics.alerts_deduplicated.inc()
                    continue
                work.append(a)
            except Exception:  # a garbage alert must not fail the batch
                log.exception("ignoring an alert that could not be examined")
                self.metrics.internal_errors.labels("submit").inc()
        if not work:
            return
        with self._qlock:
            if self._queue.qsize() + len(work) > self.cfg.controller.queue_size:
                raise SinkFull(f"queue full ({self.cfg.controller.queue_size})")
            for a in work:
                if a.fingerprint:
                    self._pending.add(occurrence_key(a))
                self._queue.put(a)
                self._inflight += 1
            self.metrics.queue_depth.set(self._queue.qsize())

    # --- matching and handling ---------------------------------------------------------------

    def match(self, alert: Alert) -> Rule | None:
        """The first rule that matches the alert and acts on its status."""
        for rule in self.cfg.rules:
            if rule.matches(alert.name, alert.labels) and rule.on_resolved == (alert.status == RESOLVED):
                return rule
        return None

    def request_for(self, rule: Rule, node: int | None) -> Request:
        g = self.cfg.guards
        return Request(
            action=rule.action,
            count=rule.count,
            size=rule.size,
            zone=rule.zone,
            node=node,
            target_ratio=rule.target_ratio,
            max_blocks=min(rule.max_blocks or g.max_blocks_per_action, g.max_blocks_per_action),
            min_available=rule.min_available if rule.min_available is not None else g.min_available,
            max_movable_ratio=g.max_movable_ratio,
        )

    def handle(self, alert: Alert) -> ActionOutcome | None:
        """Synchronously handle one alert (the worker's body; tests call it directly)."""
        why = valid_alert(alert)
        if why:
            log.warning("ignoring invalid alert: %s", why)
            return None
        rule = self.match(alert)
        if rule is None:
            return None
        fp, sa = occurrence_key(alert)
        origin = Origin(
            rule.name, fp, sa, alert.source, rule.cooldown if rule.cooldown is not None else self.cfg.guards.cooldown
        )
        node = None
        if rule.node_label:
            raw = alert.labels.get(rule.node_label)
            if raw is None or not raw.isdigit():
                self.guards.refuse(
                    "node_label",
                    f"alert lacks a numeric {rule.node_label!r} label (got {raw!r}); "
                    "acting on every node instead is refused",
                    rule=rule.name,
                    action=rule.action,
                    fingerprint=fp,
                    starts_at=sa,
                    source=alert.source,
                )
                return ActionOutcome("refused", guard="node_label")
            node = int(raw)
        out = self.executor.execute(self.request_for(rule, node), origin)
        log.info("alert %s (%s) rule %s: %s %s", alert.name, alert.status, rule.name, out.status, out.detail)
        return out

    def run_manual(self, req: Request) -> ActionOutcome:
        """``memhp-controller act``: same guards, same actuator, no cooldown, no idempotency key."""
        return self.executor.execute(req, Origin("act", source="manual", cooldown=0.0))

    def _run(self) -> None:
        while not self.stop_event.is_set():
            item = self._queue.get()
            if item is _STOP:
                break
            try:
                self.handle(item)
            except Exception:
                log.exception("error while handling alert; continuing")
                self.metrics.internal_errors.labels("worker").inc()
            finally:
                with self._qlock:
                    try:
                        self._pending.discard(occurrence_key(item))
                    except Exception:
                        log.debug("cannot compute the occurrence key of a finished item", exc_info=True)
                    self._inflight -= 1
                    self.metrics.queue_depth.set(self._queue.qsize())
                    self._qlock.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once every accepted alert has been handled (for --once and tests)."""
        with self._qlock:
            return self._qlock.wait_for(lambda: self._inflight == 0, timeout)
