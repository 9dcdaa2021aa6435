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

import hashlib
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
from .fleet.budget import Store
from .fleet.guard import FleetGuard
from .guards import Guards, Occurrence
from .journal import Journal, JournalError
from .metrics import ControllerMetrics
from .policy import Request, rule_request
from .reconcile import reconcile
from .records import MAX_ID, clip
from .vocab import Status

log = logging.getLogger(__name__)

_STOP = object()


def bounded_id(s: str) -> str:
    """``s`` if it is at most MAX_ID characters, else a fixed-length digest of it.

    Identities taken from a payload (fingerprint, startsAt) are stored in the journal
    and in memory: a sender must not decide how large they are.  A digest, unlike a
    cut, keeps two long values that share a prefix distinct.
    """
    if len(s) <= MAX_ID:
        return s
    return "sha256:" + hashlib.sha256(s.encode("utf-8", "surrogatepass")).hexdigest()


def occurrence_key(alert: Alert) -> Occurrence:
    """Idempotency key: firing and resolved of one episode are distinct occurrences."""
    fp, sa = alert.occurrence
    return Occurrence(bounded_id(fp), bounded_id(sa), alert.status != FIRING)


def node_id(raw: str | None) -> int | None:
    """The NUMA node a label names: ASCII digits only (``٠``, ``𝟎`` and ``²`` are not 0 or 2)."""
    if raw is None or not (0 < len(raw) <= 5) or not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)


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
        fleet_store: Store | None = None,
    ) -> None:
        self.cfg = cfg
        self.paths = paths
        self.metrics = metrics or ControllerMetrics()
        self.stop_event = threading.Event()
        c = cfg.controller
        self.journal = Journal(
            journal_path or c.journal,
            clock=clock,
            max_bytes=c.journal_max_size,
            max_age=c.journal_max_age,
            keep=c.journal_keep,
            on_invalid=self.metrics.journal_invalid_records.inc,
            on_append_error=self.metrics.journal_append_failures.inc,
        )
        self.guards = Guards(
            cfg.guards,
            self.journal,
            self.metrics,
            dry_run=dry_run,
            clock=clock,
            acted_retention=c.idempotency_retention,
        )
        self.actuator = Actuator(paths, cfg.retry, self.journal, self.metrics, writer=writer, stop=self.stop_event)
        self.fleet = FleetGuard(cfg, self.metrics, self.stop_event, store=fleet_store)
        self.executor = Executor(
            cfg,
            paths,
            self.journal,
            self.guards,
            self.actuator,
            self.stop_event,
            lock_timeout=lock_timeout,
            fleet=self.fleet,
        )
        self._queue: queue.Queue = queue.Queue()
        self._qlock = threading.Condition()
        self._inflight = 0
        self._pending: set[Occurrence] = set()
        self._worker: threading.Thread | None = None
        self._accepting = False
        self.reconciled: list = []

    # --- lifecycle ---------------------------------------------------------------------------

    def open(self) -> Engine:
        self.journal.open()
        with self.journal.action_lock(self.executor.lock_timeout, self.stop_event):
            g = self.guards
            g.refresh()  # the whole (bounded) file, first time, streamed: only the state stays in memory
            try:
                self.reconciled = reconcile(
                    self.journal, self.paths, g.state.open_attempts.values(), g.state.open_actions.values()
                )
                g.refresh()
                g.rotate_if_due()
            except JournalError as e:
                # A full disk must not keep the controller from starting (a crash loop helps nobody):
                # actions are refused until the journal takes records again, and what is still
                # open is reconciled under the next action lock.
                log.error(
                    "journal %s: %s; starting anyway, actions refused until it is writable",
                    self.journal.path,
                    e.strerror,
                )
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

    @property
    def ready(self) -> bool:
        """Journal replayed and the worker taking alerts: what ``/-/ready`` answers."""
        return self._accepting and not self.stop_event.is_set()

    # --- AlertSink ---------------------------------------------------------------------------

    def submit(self, alerts: Sequence[Alert]) -> None:
        if not self._accepting or self.stop_event.is_set():
            raise SinkUnavailable("controller is not running")
        cap = self.cfg.controller.queue_size
        if self._queue.qsize() >= cap:  # before any work: a full queue costs the sender nothing
            raise SinkFull(f"queue full ({cap})")
        work: list[tuple[Alert, Occurrence]] = []
        in_batch: set[Occurrence] = set()
        for a in alerts:
            try:
                key = self._admit(a, in_batch)
            except Exception:  # a garbage alert must not fail the batch
                log.exception("ignoring an alert that could not be examined")
                self.metrics.internal_errors.labels("submit").inc()
                continue
            if key is None:
                continue
            if key.fingerprint:
                in_batch.add(key)
            work.append((a, key))
            if len(work) > cap:  # all of a batch or none: this one can never fit
                raise SinkFull(f"more matching alerts than the queue holds ({cap})")
        if work:
            self._enqueue(work, cap)

    def _admit(self, a: Alert, in_batch: set[Occurrence]) -> Occurrence | None:
        """The alert's occurrence when it is to be queued; None when it is
        invalid, matches no rule, or is already acted on, queued or in this batch."""
        # alerts_received is counted by the sources, once submit() returned.
        why = valid_alert(a)
        if why:
            log.warning("ignoring invalid alert: %s", why)
            self.metrics.internal_errors.labels("invalid_alert").inc()
            return None
        if self.match(a) is None:
            return None
        key = occurrence_key(a)
        if key.fingerprint and (self.guards.already_acted(key) or key in self._pending or key in in_batch):
            self.metrics.alerts_deduplicated.inc()
            return None
        return key

    def _enqueue(self, work: list[tuple[Alert, Occurrence]], cap: int) -> None:
        with self._qlock:
            if self._queue.qsize() + len(work) > cap:
                raise SinkFull(f"queue full ({cap})")
            for a, key in work:
                if key.fingerprint:
                    self._pending.add(key)
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
        return rule_request(rule, self.cfg.guards, node)

    def handle(self, alert: Alert) -> ActionOutcome | None:
        """Synchronously handle one alert (the worker's body; tests call it directly)."""
        why = valid_alert(alert)
        if why:
            log.warning("ignoring invalid alert: %s", why)
            return None
        rule = self.match(alert)
        if rule is None:
            return None
        fp, sa, resolved = occurrence_key(alert)
        origin = Origin(
            rule.name,
            fp,
            sa,
            resolved,
            alert.source,
            rule.cooldown if rule.cooldown is not None else self.cfg.guards.cooldown,
        )
        node = None
        if rule.node_label:
            raw = alert.labels.get(rule.node_label)
            node = node_id(raw)
            if node is None:
                self.guards.refuse(
                    "node_label",
                    f"alert lacks a numeric (ASCII digits) {rule.node_label!r} label (got {clip(repr(raw), 80)}); "
                    "acting on every node instead is refused",
                    rule=rule.name,
                    action=rule.action,
                    occurrence=origin.occurrence,
                    source=alert.source,
                )
                return ActionOutcome(Status.REFUSED, guard="node_label")
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
