"""Guards: what may stop an action before (or while) it changes anything.

Every guard's memory is rebuilt from the journal, so a restart forgets
nothing: the sliding-hour change count, each rule's last action (cooldown),
each block's consecutive failures and quarantine, and which alert
occurrences already acted (idempotency).  Reading the journal's new records
before every decision also makes the daemon and a concurrent ``act`` see
each other's changes.

Guards (the ``guard`` label of ``memhp_controller_guard_refusals``):

``paused``                 the pause file exists
``cooldown``               the rule acted less than its cooldown ago
``empty_target``           the plan names no block (or the request names none)
``max_blocks_per_action``  the plan is larger than the per-action cap
``max_blocks_per_hour``    the plan would exceed the sliding-hour cap
``quarantine``             a named block is quarantined (planned targets skip them)
``reserve``                offlining would take MemAvailable below the reserve
``ratio``                  onlining to ZONE_MOVABLE would exceed MOVABLE:KERNEL
``valid_zones_none``       a named block cannot be offlined (valid_zones none)
``dry_run``                dry-run mode: planned and journalled, not done
``node_label``             the rule needs a node label the alert lacks or garbles
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import GuardsConfig
from .journal import Journal
from .metrics import ControllerMetrics

log = logging.getLogger(__name__)

HOUR = 3600.0


class Refused(Exception):
    def __init__(self, guard: str, detail: str) -> None:
        super().__init__(f"{guard}: {detail}")
        self.guard = guard
        self.detail = detail


@dataclass
class GuardState:
    """Everything the guards remember, as a fold over journal records."""

    quarantine_after: int
    quarantine_for: float
    changes: deque = field(default_factory=deque)  # (ts, action_id, block) of every successful write
    failures: dict[int, int] = field(default_factory=dict)  # consecutive failed changes
    quarantined_until: dict[int, float] = field(default_factory=dict)
    last_action: dict[str, float] = field(default_factory=dict)  # rule -> ts of its last action_start
    acted: set[tuple[str, str]] = field(default_factory=set)  # alert occurrences that acted
    offlined: set[int] = field(default_factory=set)  # blocks whose last change by us was an offline

    def apply(self, rec: dict[str, Any]) -> None:
        t = rec.get("type")
        ts = float(rec.get("ts") or 0.0)
        if t == "action_start" and not rec.get("dry_run"):
            rule = rec.get("rule")
            if isinstance(rule, str):
                self.last_action[rule] = max(ts, self.last_action.get(rule, 0.0))
            fp, sa = rec.get("fingerprint"), rec.get("starts_at")
            if fp:
                self.acted.add((str(fp), str(sa or "")))
        elif t == "block_result":
            block = rec.get("block")
            if not isinstance(block, int):
                return
            result = rec.get("result")
            if result == "ok":
                self.changes.append((ts, rec.get("action_id"), block))
            if result in ("ok", "already"):
                self.failures.pop(block, None)
                if rec.get("op") == "offline":
                    self.offlined.add(block)
                elif str(rec.get("op", "")).startswith("online"):
                    self.offlined.discard(block)
            elif result == "failed":
                n = self.failures.get(block, 0) + 1
                if n >= self.quarantine_after:
                    self.quarantined_until[block] = ts + self.quarantine_for
                    self.failures.pop(block, None)
                else:
                    self.failures[block] = n
        elif t == "reconcile" and rec.get("outcome") == "completed" and isinstance(rec.get("block"), int):
            self.changes.append((ts, rec.get("action_id"), rec["block"]))

    def changes_since(self, since: float) -> int:
        while self.changes and self.changes[0][0] < since:
            self.changes.popleft()
        # A block moved by rebalance (offline, then online) is one block changed.
        return len({(a, b) for ts, a, b in self.changes if ts >= since})

    def quarantined(self, now: float) -> frozenset[int]:
        return frozenset(b for b, until in self.quarantined_until.items() if until > now)


class Guards:
    def __init__(
        self,
        cfg: GuardsConfig,
        journal: Journal,
        metrics: ControllerMetrics,
        *,
        dry_run: bool | None = None,
        clock=time.time,
    ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.metrics = metrics
        self.dry_run = cfg.dry_run if dry_run is None else dry_run
        self.clock = clock
        self.state = GuardState(cfg.quarantine.after_failures, cfg.quarantine.duration)
        self._refusals_journalled: set[tuple] = set()
        metrics.dry_run.set(1 if self.dry_run else 0)

    def rebuild(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.state.apply(r)
        self._update_gauges()

    def refresh(self) -> None:
        """Fold in records appended since the last call (by this or another process)."""
        for r in self.journal.read_new():
            self.state.apply(r)
        self._update_gauges()

    def _update_gauges(self) -> None:
        self.metrics.quarantined_blocks.set(len(self.state.quarantined(self.clock())))
        self.metrics.paused.set(1 if self.paused() else 0)

    # --- individual guards -----------------------------------------------------------------

    def paused(self) -> bool:
        return self.cfg.pause_file is not None and os.path.lexists(self.cfg.pause_file)

    def check_paused(self) -> None:
        paused = self.paused()
        self.metrics.paused.set(1 if paused else 0)
        if paused:
            raise Refused("paused", f"pause file {self.cfg.pause_file} exists")

    def check_cooldown(self, rule: str, cooldown: float) -> None:
        last = self.state.last_action.get(rule)
        if last is None or cooldown <= 0:
            return
        left = last + cooldown - self.clock()
        if left > 0:
            raise Refused(
                "cooldown",
                f"rule {rule} acted {self.clock() - last:.0f}s ago; cooldown {cooldown:.0f}s, {left:.0f}s left",
            )

    def hourly_budget(self) -> int:
        used = self.state.changes_since(self.clock() - HOUR)
        return max(0, self.cfg.max_blocks_per_hour - used)

    def check_plan(self, blocks: list[int], per_action_cap: int) -> None:
        if not blocks:
            raise Refused("empty_target", "the plan names no block")
        if len(blocks) > per_action_cap:
            raise Refused("max_blocks_per_action", f"{len(blocks)} blocks planned, cap {per_action_cap}")
        q = sorted(set(blocks) & self.quarantined())
        if q:
            raise Refused("quarantine", f"block(s) {q} quarantined")
        budget = self.hourly_budget()
        if len(blocks) > budget:
            raise Refused(
                "max_blocks_per_hour",
                f"{len(blocks)} blocks planned, {budget} left of {self.cfg.max_blocks_per_hour} per hour",
            )

    def quarantined(self) -> frozenset[int]:
        return self.state.quarantined(self.clock())

    def already_acted(self, occurrence: tuple[str, str]) -> bool:
        return bool(occurrence[0]) and occurrence in self.state.acted

    # --- bookkeeping -----------------------------------------------------------------------

    def refuse(
        self,
        guard: str,
        detail: str,
        *,
        rule: str,
        action: str,
        fingerprint: str = "",
        starts_at: str = "",
        source: str = "",
        extra: dict | None = None,
    ) -> None:
        """Count the refusal and journal it (once per alert occurrence, rule and guard)."""
        self.metrics.guard_refusals.labels(guard).inc()
        key = (fingerprint, starts_at, rule, guard) if fingerprint else None
        if key is not None and key in self._refusals_journalled:
            return
        if key is not None:
            if len(self._refusals_journalled) > 10000:
                self._refusals_journalled.clear()
            self._refusals_journalled.add(key)
        log.warning("refused by guard %s: rule %s: %s", guard, rule, detail)
        self.journal.append(
            {
                "type": "refusal",
                "guard": guard,
                "detail": detail,
                "rule": rule,
                "action": action,
                "fingerprint": fingerprint,
                "starts_at": starts_at,
                "source": source,
                **(extra or {}),
            }
        )

    def note_quarantine(self, block: int, ctx_rule: str) -> None:
        until = self.state.quarantined_until.get(block)
        if until and until > self.clock():
            self.journal.append({"type": "quarantine", "block": block, "until": until, "rule": ctx_rule})
            self.metrics.quarantined_blocks.set(len(self.quarantined()))
