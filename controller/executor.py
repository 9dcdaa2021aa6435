"""Running one action end to end: guards, plan, actuator, journal.

Shared by alert-driven rules (the engine) and the manual ``act`` command,
so both go through exactly the same guards and the same actuator.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from memhp.exporter.kernel.fsread import ParseErrors
from memhp.exporter.kernel.meminfo import read_meminfo
from memhp.exporter.kernel.memory_blocks import read_block, read_memory_config
from memhp.exporter.kernel.paths import Paths
from memhp.exporter.kernel.snapshot import read_snapshot

from .actuator import ActionContext, Actuator, ChangeResult
from .config import Config, Rule
from .fleet.budget import Held
from .fleet.guard import FleetGuard
from .guards import Guards, Occurrence, Refused
from .journal import Journal, JournalError, new_action_id
from .policy import Plan, PlanRefused, Request, Step, kernel_zone_offered, plan
from .reconcile import reconcile
from .records import ActionEnd, ActionStart, Budget, DryRun, PlanStep, clip, plan_steps
from .vocab import Op, Result, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """Why an action runs: an alert occurrence, or ``act``."""

    rule: str
    fingerprint: str = ""
    starts_at: str = ""
    resolved: bool = False
    source: str = "manual"
    cooldown: float = 0.0

    @property
    def occurrence(self) -> Occurrence:
        return Occurrence(self.fingerprint, self.starts_at, self.resolved)

    def fields(self, req: Request) -> dict[str, Any]:
        """The alert fields of the records an action writes."""
        return {
            "rule": self.rule,
            "action": req.action,
            "fingerprint": self.fingerprint,
            "starts_at": self.starts_at,
            "resolved": self.resolved,
            "source": self.source,
        }


@dataclass
class ActionOutcome:
    status: Status
    action_id: str | None = None
    guard: str | None = None
    detail: str = ""
    plan: Plan | None = None
    results: list[ChangeResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in (Status.DONE, Status.DRY_RUN, Status.DUPLICATE)


class Executor:
    def __init__(
        self,
        cfg: Config,
        paths: Paths,
        journal: Journal,
        guards: Guards,
        actuator: Actuator,
        stop: threading.Event,
        *,
        lock_timeout: float = 60.0,
        fleet: FleetGuard | None = None,
    ) -> None:
        self.cfg = cfg
        self.fleet = fleet
        self._held: Held | None = None  # the fleet budget's slots of the running action
        self.paths = paths
        self.journal = journal
        self.guards = guards
        self.actuator = actuator
        self.stop = stop
        self.lock_timeout = lock_timeout

    def execute(self, req: Request, origin: Origin) -> ActionOutcome:
        with self.journal.action_lock(self.lock_timeout, self.stop):
            g = self.guards
            g.refresh()
            try:
                # Under the lock no live process is mid-action: whatever is still open was
                # interrupted (a crash, or a journal append that failed, e.g. disk full).
                if g.state.open_attempts or g.state.open_actions:
                    reconcile(self.journal, self.paths, g.state.open_attempts.values(), g.state.open_actions.values())
                    g.refresh()
            except JournalError as e:
                return self._journal_refusal(e, req, origin)
            try:
                g.rotate_if_due()
            except JournalError as e:  # the file stays as it is; appends decide whether the action can run
                log.error("journal rotation failed: %s", e.strerror)
            if g.already_acted(origin.occurrence):
                return ActionOutcome(Status.DUPLICATE, detail="this alert occurrence already acted")
            try:
                return self._execute(req, origin)
            except JournalError as e:
                return self._journal_refusal(e, req, origin)

    def _journal_refusal(self, e: JournalError, req: Request, origin: Origin) -> ActionOutcome:
        """The journal cannot take a record: nothing may be done that it could not remember."""
        detail = f"journal unwritable: {e.strerror or e}"
        log.error("refused %s (rule %s): %s", req.action, origin.rule, detail)
        self.guards.metrics.guard_refusals.labels("journal").inc()
        return ActionOutcome(Status.REFUSED, guard="journal", detail=detail)

    def _refuse(self, guard: str, detail: str, req: Request, origin: Origin, p: Plan | None = None) -> ActionOutcome:
        self.guards.refuse(
            guard,
            detail,
            rule=origin.rule,
            action=req.action,
            occurrence=origin.occurrence,
            source=origin.source,
            plan=plan_steps(p.describe()) if p is not None else (),
        )
        return ActionOutcome(Status.REFUSED, guard=guard, detail=detail, plan=p)

    def _execute(self, req: Request, origin: Origin) -> ActionOutcome:
        g = self.guards
        try:
            g.check_paused()
            g.check_cooldown(origin.rule, origin.cooldown)
            snap = read_snapshot(self.paths)
            p = plan(req, snap, quarantined=g.quarantined(), offlined_deliberately=frozenset(g.state.offlined))
            g.check_plan(p.blocks, req.max_blocks)
        except (Refused, PlanRefused) as e:
            return self._refuse(e.guard, e.detail, req, origin)
        for note in p.notes:
            log.info("plan %s (rule %s): %s", req.action, origin.rule, note)
        steps = plan_steps(p.describe())
        notes = tuple(clip(n) for n in p.notes)
        if g.dry_run:
            return self._dry_run(req, origin, p, steps, notes)
        rule = self._rule(origin)
        if self.fleet is not None and not self.fleet.selected(rule):
            return self._dry_run(req, origin, p, steps, notes, reason="rollout")
        action_id = new_action_id()
        # The fleet guards last: they ask other servers (the gate) and hold a fleet-wide slot (the budget).
        try:
            held = self._fleet_guards(rule)
        except Refused as e:
            return self._refuse(e.guard, e.detail, req, origin, p)
        if held is None:
            return self._act(req, origin, p, steps, notes, action_id)
        self._held = held
        try:
            self.journal.append(
                Budget(
                    event="acquired",
                    action_id=action_id,
                    rule=origin.rule,
                    slots=held.keys,
                    lease=held.lease,
                    waited=round(held.waited, 3),
                )
            )
            return self._act(req, origin, p, steps, notes, action_id)
        finally:
            self._held = None
            self._release(held, action_id, origin.rule)

    def _rule(self, origin: Origin) -> Rule | None:
        return None if origin.source == "manual" else self.cfg.rule(origin.rule)

    def _fleet_guards(self, rule: Rule | None) -> Held | None:
        if self.fleet is None:
            return None
        self.fleet.check_gate(rule)
        return self.fleet.acquire(rule)

    def _release(self, held: Held, action_id: str, rule: str) -> None:
        """Journal the release, then release: each journalled [acquired, release] lies inside the
        time the slots were really held, so the journals never show more holders than there were."""
        assert self.fleet is not None
        self._journal_budget("release", held, action_id, rule)
        why = self.fleet.release(held)
        if why:
            self._journal_budget("release_failed", held, action_id, rule, clip(why))

    def _journal_budget(self, event: str, held: Held, action_id: str, rule: str, detail: str = "") -> None:
        try:
            self.journal.append(
                Budget(event=event, action_id=action_id, rule=rule, slots=held.keys, lease=held.lease, detail=detail)
            )
        except JournalError as e:
            log.error("action %s: cannot journal the budget's %s: %s", action_id, event, e)

    def _act(
        self,
        req: Request,
        origin: Origin,
        p: Plan,
        steps: tuple[PlanStep, ...],
        notes: tuple[str, ...],
        action_id: str,
    ) -> ActionOutcome:
        g = self.guards
        ctx = ActionContext(
            action_id, origin.rule, req.action, origin.fingerprint, origin.starts_at, origin.source, origin.resolved
        )
        t0 = time.monotonic()
        # If this append fails (JournalError), nothing has been written: the action is refused.
        self.journal.append(ActionStart(action_id=action_id, **origin.fields(req), plan=steps, notes=notes))
        g.refresh()
        quarantined_before = g.quarantined()
        results, stopped = self._run_steps(p, req, origin, ctx, t0)
        g.refresh()
        status = _status(p, results, stopped)
        self._end(ctx, status, results, stopped, quarantined_before, t0)
        return ActionOutcome(status, action_id, detail=stopped, plan=p, results=results)

    def _dry_run(
        self,
        req: Request,
        origin: Origin,
        p: Plan,
        steps: tuple[PlanStep, ...],
        notes: tuple[str, ...],
        reason: str = "dry_run",
    ) -> ActionOutcome:
        if reason == "rollout":
            notes = (*notes, "rollout: this host is outside the rule's rollout share; it would act")
        self.journal.append(DryRun(**origin.fields(req), plan=steps, notes=notes))
        self.guards.metrics.guard_refusals.labels(reason).inc()
        self.guards.metrics.would_act.labels(origin.rule, reason).inc()
        # INFO: a dry-run plan is the controller doing what it was asked to, not a problem.
        log.info(
            "%s: rule %s would %s: %s%s",
            reason.replace("_", "-"),
            origin.rule,
            req.action,
            ", ".join(f"memory{s.block}:{'+'.join(s.ops)}" for s in p.steps) or "nothing",
            "".join(f"; {n}" for n in notes),
        )
        return ActionOutcome(Status.DRY_RUN, plan=p, detail="dry-run: nothing written")

    def _run_steps(
        self, p: Plan, req: Request, origin: Origin, ctx: ActionContext, t0: float
    ) -> tuple[list[ChangeResult], str]:
        """The plan's steps in order, until one fails or something says stop:
        the results, and why it stopped early ("" when it did not)."""
        results: list[ChangeResult] = []
        try:
            for step in p.steps:
                stopped = self._stop_before(step, req, origin, t0)
                if stopped:
                    return results, stopped
                step_results = self._run_step(step, ctx)
                results.extend(step_results)
                if not all(r.ok for r in step_results):
                    return results, f"memory{step.block} failed"
        except JournalError as e:
            # A record could not be written (disk full): stop here.  What was written is
            # reconciled against the blocks' real state under the next action lock.
            stopped = f"journal unwritable: {e.strerror or e}"
            log.error("action %s stopped: %s", ctx.action_id, stopped)
            return results, stopped
        return results, ""

    def _stop_before(self, step: Step, req: Request, origin: Origin, t0: float) -> str:
        """Why the action must not go on to ``step`` ("" when it may); a guard
        that stops it is journalled as a refusal."""
        if self.stop.is_set():
            return "shutting down"
        if time.monotonic() - t0 > self.cfg.controller.action_timeout:
            return f"action_timeout {self.cfg.controller.action_timeout:.0f}s reached"
        if self.guards.paused():
            self._refuse("paused", "pause file appeared", req, origin)
            return "pause file appeared"
        if self._held is not None and self._held.lost.is_set():
            # Another node may have taken the slot: going on could exceed the fleet budget.
            return "fleet budget lease lost"
        if step.ops[0] == Op.OFFLINE and not self._reserve_ok(req):
            stopped = "reserve: MemAvailable would drop below the reserve"
            self._refuse("reserve", stopped, req, origin)
            return stopped
        return ""

    def _end(
        self,
        ctx: ActionContext,
        status: Status,
        results: list[ChangeResult],
        stopped: str,
        quarantined_before: frozenset[int],
        t0: float,
    ) -> None:
        g = self.guards
        try:
            for b in sorted(g.quarantined() - quarantined_before):
                g.note_quarantine(b, ctx.rule)
            self.journal.append(
                ActionEnd(
                    action_id=ctx.action_id,
                    rule=ctx.rule,
                    action=ctx.action,
                    result=status,
                    changed=tuple(sorted({r.block for r in results if r.changed})),
                    failed=tuple(sorted({r.block for r in results if not r.ok})),
                    stopped=clip(stopped),
                    duration=round(time.monotonic() - t0, 6),
                )
            )
        except JournalError as e:
            log.error("action %s: cannot journal its end (%s); reconciled under the next lock", ctx.action_id, e)

    def _reserve_ok(self, req: Request) -> bool:
        bs = read_snapshot_block_size(self.paths)
        info = read_meminfo(self.paths.meminfo, ParseErrors()) or {}
        avail = info.get("MemAvailable")
        return bs is not None and avail is not None and avail - bs >= req.min_available

    def _run_step(self, step: Step, ctx: ActionContext) -> list[ChangeResult]:
        if step.ops != (Op.OFFLINE, Op.ONLINE_KERNEL):
            out = []
            for op in step.ops:
                r = self.actuator.change(step.block, op, ctx)
                out.append(r)
                if not r.ok:
                    break
            return out
        # rebalance: offline from ZONE_MOVABLE, then online to a kernel zone if valid_zones offers one;
        # otherwise (or if that fails) put the block back where it was.
        off = self.actuator.change(step.block, Op.OFFLINE, ctx)
        if not off.ok:
            return [off]
        block = read_block(self.paths.memory, step.block, ParseErrors())
        if block is not None and kernel_zone_offered(block):
            on = self.actuator.change(step.block, Op.ONLINE_KERNEL, ctx)
            if on.ok:
                return [off, on]
        else:
            on = None
            log.warning(
                "memory%d: no kernel zone in valid_zones %s; restoring it to ZONE_MOVABLE",
                step.block,
                block.valid_zones if block else None,
            )
        back = self.actuator.change(step.block, Op.ONLINE_MOVABLE, ctx)
        if on is None:
            # Restored, but the step did not do what was asked: report it as failed.
            back = ChangeResult(
                step.block,
                Op.ONLINE_KERNEL,
                Result.FAILED,
                None,
                "no_kernel_zone",
                0,
                "offline",
                back.state_after,
                back.zone_after,
                back.duration,
                "valid_zones offers no kernel zone; block restored to ZONE_MOVABLE",
            )
            return [off, back]
        return [off, on, back]


def read_snapshot_block_size(paths: Paths) -> int | None:
    return read_memory_config(paths.memory, ParseErrors()).block_size_bytes


def _status(p: Plan, results: list[ChangeResult], stopped: str) -> Status:
    done_steps = {r.block for r in results if r.ok}
    if not stopped and all(r.ok for r in results) and all(s.block in done_steps for s in p.steps):
        return Status.DONE
    if any(r.ok for r in results):
        return Status.PARTIAL
    return Status.FAILED
