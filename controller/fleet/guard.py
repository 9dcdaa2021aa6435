"""The fleet guards as the executor uses them: rollout, gate, budget, with their metrics.

Each raises :class:`~controller.guards.Refused` with the guard's name and a
reason; the executor journals it like every other refusal.  Guards:

``rollout``             the host is outside the rule's rollout share: dry-run
``gate``                a gate check returned series
``gate_unavailable``    a gate check could not be evaluated (unreachable, slow, garbage)
``budget``              no free fleet budget slot within fleet.budget.wait
``budget_unavailable``  the budget's store (etcd) did not answer within fleet.budget.wait
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from ..config import Config, Rule
from ..guards import Refused
from ..metrics import ControllerMetrics
from . import rollout
from .budget import Budget, BudgetFull, BudgetUnavailable, Held, Store, scopes
from .gate import Gate, GateError, checks, refusal

log = logging.getLogger(__name__)


class FleetGuard:
    def __init__(
        self, cfg: Config, metrics: ControllerMetrics, stop: threading.Event, *, store: Store | None = None
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.stop = stop
        self.host = cfg.fleet.host or socket.gethostname()
        self.gate = Gate(cfg.fleet.gate) if cfg.fleet.gate else None
        self.budget: Budget | None = None
        b = cfg.fleet.budget
        if b is not None:
            if store is None:
                from .etcd import EtcdStore

                store = EtcdStore(b.etcd)
            self.budget = Budget(
                store, b.lease_ttl, holder={"host": self.host, "pid": os.getpid()}, on_error=self._store_error
            )
        for rule in cfg.rules:
            metrics.rollout_selected.labels(rule.name).set(1 if self.selected(rule) else 0)

    def _store_error(self, e: BudgetUnavailable) -> None:
        self.metrics.budget_errors.inc()
        log.warning("fleet budget: %s", e)

    # --- rollout -----------------------------------------------------------------------------

    def selected(self, rule: Rule | None) -> bool:
        """Whether this host acts on ``rule`` (manual ``act`` has no rule: always)."""
        return rule is None or rollout.selected(self.host, rule.name, rule.rollout)

    # --- gate --------------------------------------------------------------------------------

    def check_gate(self, rule: Rule | None) -> None:
        qs = checks(self.cfg.fleet.gate, rule.gate if rule else ())
        if not qs:
            return
        if self.gate is None:  # a rule with checks but no fleet.gate.prometheus: check-config refuses it
            raise Refused("gate_unavailable", "rule has gate checks but fleet.gate is not configured")
        for q in qs:
            try:
                v = self.gate.run(q)
            except GateError as e:
                self.metrics.gate_checks.labels(q.name, "error").inc()
                raise Refused("gate_unavailable", f"gate check {q.name} could not be evaluated: {e}") from None
            if v.series:
                self.metrics.gate_checks.labels(q.name, "refuse").inc()
                raise Refused("gate", refusal(v))
            self.metrics.gate_checks.labels(q.name, "pass").inc()

    # --- budget ------------------------------------------------------------------------------

    def acquire(self, rule: Rule | None) -> Held | None:
        """The budget's slots for one action of ``rule`` (waiting up to fleet.budget.wait), None
        without a budget; Refused when there is none to be had."""
        b = self.cfg.fleet.budget
        if self.budget is None or b is None:
            return None
        rl = rule.budget if rule else None
        wanted = scopes(
            b.etcd.prefix,
            rule.name if rule else "act",
            b.max_concurrent,
            b.max_actions_per_hour,
            rl.max_concurrent if rl else None,
            rl.max_actions_per_hour if rl else None,
        )
        try:
            held = self.budget.acquire(wanted, b.wait, self.stop)
        except BudgetFull as e:
            self.metrics.budget_requests.labels("full").inc()
            raise Refused("budget", f"no budget slot within {b.wait:g}s: {e}") from None
        except BudgetUnavailable as e:
            self.metrics.budget_requests.labels("unavailable").inc()
            raise Refused("budget_unavailable", f"fleet budget unavailable for {b.wait:g}s: {e}") from None
        self.metrics.budget_requests.labels("acquired").inc()
        self.metrics.budget_wait.observe(held.waited)
        self.metrics.budget_slots_held.set(len(held.keys))
        self.budget.keep(held)
        return held

    def release(self, held: Held) -> str:
        """Give the slots back; "" or why it failed (the lease then frees them within its TTL)."""
        assert self.budget is not None
        self.metrics.budget_slots_held.set(0)
        try:
            self.budget.release(held)
        except BudgetUnavailable as e:
            self._store_error(e)
            return str(e)
        return ""
