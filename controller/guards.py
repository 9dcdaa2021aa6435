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
``journal``                the journal cannot take a record (e.g. disk full)
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from .config import GuardsConfig
from .journal import Journal
from .metrics import ControllerMetrics
from .records import (
    MAX_ID,
    ActionEnd,
    ActionStart,
    AttemptEnd,
    AttemptStart,
    BlockResult,
    PlanStep,
    Quarantine,
    Reconcile,
    ReconcileAction,
    Record,
    Refusal,
    StateActed,
    StateBlock,
    StateChange,
    StateRule,
    clip,
)
from .vocab import Action, AttemptResult, Op, Outcome, Result

log = logging.getLogger(__name__)

HOUR = 3600.0
# Occurrences remembered for idempotency: beyond this many, the oldest are forgotten
# (an occurrence is at most a few hundred bytes; the bound keeps RSS in the DaemonSet's limit).
MAX_ACTED = 50_000
# A refusal of the same rule by the same guard is journalled at most this often; the
# others are counted (memhp_controller_guard_refusals_total, ..._refusals_unjournalled_total).
REFUSAL_JOURNAL_INTERVAL = 60.0


class Occurrence(NamedTuple):
    """One alert occurrence, the key that makes acting on it idempotent."""

    fingerprint: str
    starts_at: str
    resolved: bool  # the resolution of that episode, a distinct occurrence from its firing


NO_OCCURRENCE = Occurrence("", "", False)  # ``act``: no alert behind the action


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
    acted_retention: float = 30 * 86400.0
    changes: deque = field(default_factory=deque)  # (ts, action_id, block) of every successful write
    failures: dict[int, int] = field(default_factory=dict)  # consecutive failed changes
    quarantined_until: dict[int, float] = field(default_factory=dict)
    last_action: dict[str, float] = field(default_factory=dict)  # rule -> ts of its last action_start
    acted: OrderedDict[Occurrence, float] = field(default_factory=OrderedDict)  # occurrence -> ts, oldest first
    offlined: set[int] = field(default_factory=set)  # blocks whose last change by us was an offline
    open_attempts: dict[tuple, AttemptStart] = field(default_factory=dict)  # no attempt_end/reconcile yet
    open_actions: dict[str, ActionStart] = field(default_factory=dict)  # no action_end/reconcile_action yet

    def apply(self, rec: Record) -> None:
        match rec:
            case ActionStart():
                self._action_start(rec)
            case ActionEnd() | ReconcileAction():
                self.open_actions.pop(rec.action_id, None)
            case AttemptStart():
                self._attempt_start(rec)
            case AttemptEnd():
                self._attempt_end(rec)
            case BlockResult():
                self._block_result(rec)
            case Reconcile():
                self._reconcile(rec)
            case StateActed() | StateRule() | StateChange() | StateBlock():
                self._state(rec)
            case _:
                pass

    def _state(self, rec: StateActed | StateRule | StateChange | StateBlock) -> None:
        """The state records a rotation writes: what the guards need of the history it dropped."""
        match rec:
            case StateActed():
                self._add_acted(Occurrence(rec.fingerprint, rec.starts_at, rec.resolved), rec.at)
            case StateRule():
                self.last_action[rec.rule] = max(rec.at, self.last_action.get(rec.rule, 0.0))
            case StateChange():
                if (rec.at, rec.action_id, rec.block) not in self.changes:
                    self.changes.append((rec.at, rec.action_id, rec.block))
            case StateBlock():
                self._state_block(rec)

    def _attempt_start(self, rec: AttemptStart) -> None:
        self.open_attempts[(rec.action_id, rec.block, rec.op, rec.attempt)] = rec
        if len(self.open_attempts) > MAX_ACTED:
            self.open_attempts.pop(next(iter(self.open_attempts)))

    def _reconcile(self, rec: Reconcile) -> None:
        self.open_attempts.pop((rec.action_id, rec.block, rec.op, rec.attempt), None)
        if rec.outcome == Outcome.COMPLETED:
            self.changes.append((rec.ts, rec.action_id, rec.block))

    def _action_start(self, rec: ActionStart) -> None:
        self.last_action[rec.rule] = max(rec.ts, self.last_action.get(rec.rule, 0.0))
        if rec.fingerprint:
            self._add_acted(Occurrence(*rec.occurrence), rec.ts)
        self.open_actions[rec.action_id] = rec
        if len(self.open_actions) > MAX_ACTED:  # only a corrupt history gets here
            self.open_actions.pop(next(iter(self.open_actions)))

    def _attempt_end(self, rec: AttemptEnd) -> None:
        self.open_attempts.pop((rec.action_id, rec.block, rec.op, rec.attempt), None)
        if rec.result == AttemptResult.OK:
            # Counted here too: the block_result that follows may never be written (disk
            # full, kill -9); changes_since() counts an (action, block) pair once.
            self.changes.append((rec.ts, rec.action_id, rec.block))
            self._set_offlined(rec.block, rec.op == Op.OFFLINE)

    def _state_block(self, rec: StateBlock) -> None:
        if rec.failures:
            self.failures[rec.block] = rec.failures
        else:
            self.failures.pop(rec.block, None)
        if rec.quarantined_until is not None:
            self.quarantined_until[rec.block] = rec.quarantined_until
        self._set_offlined(rec.block, bool(rec.offlined))

    def _set_offlined(self, block: int, offlined: bool) -> None:
        if offlined:
            self.offlined.add(block)
        else:
            self.offlined.discard(block)

    def _add_acted(self, occ: Occurrence, ts: float) -> None:
        self.acted[occ] = ts
        self.acted.move_to_end(occ)
        while len(self.acted) > MAX_ACTED:
            self.acted.popitem(last=False)

    def _block_result(self, rec: BlockResult) -> None:
        block, ts = rec.block, rec.ts
        if rec.result == Result.OK:
            self.changes.append((ts, rec.action_id, block))
        if rec.result in (Result.OK, Result.ALREADY):
            self.failures.pop(block, None)
            if rec.op == Op.OFFLINE:
                self.offlined.add(block)
            else:
                self.offlined.discard(block)
        elif rec.result == Result.FAILED:
            n = self.failures.get(block, 0) + 1
            if n >= self.quarantine_after:
                self.quarantined_until[block] = ts + self.quarantine_for
                self.failures.pop(block, None)
            else:
                self.failures[block] = n

    def changes_since(self, since: float) -> int:
        while self.changes and self.changes[0][0] < since:
            self.changes.popleft()
        # A block moved by rebalance (offline, then online) is one block changed.
        return len({(a, b) for ts, a, b in self.changes if ts >= since})

    def quarantined(self, now: float) -> frozenset[int]:
        return frozenset(b for b, until in self.quarantined_until.items() if until > now)

    def export(self, now: float) -> Iterator[Record]:
        """What a rotated journal must carry over (records that rebuild this state)."""
        for occ, at in self.acted.items():
            if now - at <= self.acted_retention:
                yield StateActed(fingerprint=occ.fingerprint, starts_at=occ.starts_at, resolved=occ.resolved, at=at)
        for rule, at in self.last_action.items():
            yield StateRule(rule=rule, at=at)
        self.changes_since(now - HOUR)
        latest: dict[tuple[str, int], float] = {}  # a change is in attempt_end and block_result
        for at, action_id, block in self.changes:
            latest[(str(action_id or ""), block)] = at
        for (action_id, block), at in latest.items():
            yield StateChange(at=at, action_id=action_id, block=block)
        for b in sorted(set(self.failures) | set(self.quarantined_until) | self.offlined):
            until = self.quarantined_until.get(b)
            yield StateBlock(
                block=b,
                failures=self.failures.get(b, 0),
                quarantined_until=until if until is not None and until > now else None,
                offlined=b in self.offlined,
            )


class Guards:
    def __init__(
        self,
        cfg: GuardsConfig,
        journal: Journal,
        metrics: ControllerMetrics,
        *,
        dry_run: bool | None = None,
        clock=time.time,
        acted_retention: float = 30 * 86400.0,
    ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.metrics = metrics
        self.dry_run = cfg.dry_run if dry_run is None else dry_run
        self.clock = clock
        self.state = GuardState(cfg.quarantine.after_failures, cfg.quarantine.duration, acted_retention)
        # (rule, guard) -> (ts of the last journalled refusal, refusals not journalled since)
        self._last_refusal: dict[tuple[str, str], tuple[float, int]] = {}
        metrics.dry_run.set(1 if self.dry_run else 0)

    def rebuild(self, records: Iterable[Record]) -> None:
        for r in records:
            self.state.apply(r)
        self._update_gauges()

    def refresh(self) -> None:
        """Fold in records appended since the last call (by this or another process), streamed."""
        for r in self.journal.iter_new():
            self.state.apply(r)
        self._update_gauges()

    def rotate_if_due(self) -> None:
        """Rotate the journal when it is too large or too old (call under the action lock, refreshed)."""
        why = self.journal.rotation_due()
        if why:
            self.journal.rotate(list(self.state.export(self.clock())), why)
            self.metrics.journal_rotations.inc()
            self.refresh()  # the new file's state records: applying them again changes nothing

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

    def already_acted(self, occurrence: Occurrence) -> bool:
        fingerprint, _, _ = occurrence
        return bool(fingerprint) and occurrence in self.state.acted

    # --- bookkeeping -----------------------------------------------------------------------

    def refuse(
        self,
        guard: str,
        detail: str,
        *,
        rule: str,
        action: Action,
        occurrence: Occurrence = NO_OCCURRENCE,
        source: str = "",
        plan: tuple[PlanStep, ...] = (),
    ) -> None:
        """Count the refusal; journal it unless the same rule and guard was journalled within a minute.

        Manual (``act``) refusals are always journalled.  A flood of alerts refused the
        same way is one record per minute whose ``suppressed`` says how many were not.
        """
        self.metrics.guard_refusals.labels(guard).inc()
        now = self.clock()
        key = (rule, guard)
        last, suppressed = self._last_refusal.get(key, (None, 0))
        if source != "manual" and last is not None and 0 <= now - last < REFUSAL_JOURNAL_INTERVAL:
            self._last_refusal[key] = (last, suppressed + 1)
            self.metrics.refusals_unjournalled.inc()
            return
        log.warning("refused by guard %s: rule %s: %s", guard, rule, clip(detail, 300))
        self.journal.append(
            Refusal(
                guard=guard,
                detail=clip(detail),
                rule=rule,
                action=action,
                fingerprint=occurrence.fingerprint,
                starts_at=occurrence.starts_at,
                resolved=occurrence.resolved,
                source=source,
                plan=plan,
                suppressed=suppressed,
            )
        )
        if source != "manual":
            if len(self._last_refusal) > 4 * MAX_ID and key not in self._last_refusal:
                self._last_refusal.clear()  # rules x guards: only a config with very many rules gets here
            self._last_refusal[key] = (now, 0)

    def note_quarantine(self, block: int, ctx_rule: str) -> None:
        until = self.state.quarantined_until.get(block)
        if until and until > self.clock():
            self.journal.append(Quarantine(block=block, until=until, rule=ctx_rule))
            self.metrics.quarantined_blocks.set(len(self.quarantined()))
