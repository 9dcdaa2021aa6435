"""Replaying events through the policy in time order: rule matching, every
guard the past can decide, the staged rollout and the fleet budget.

The guards run in the executor's order (controller/executor.py):
node_label, paused, cooldown, the plan (reserve, ratio, empty_target,
max_blocks_per_action), quarantine, max_blocks_per_hour, dry_run; then the
fleet's rollout and budget.  What history cannot tell is assumed, and listed
in UNKNOWABLE (the report prints it): no pause file, no quarantine (every
write is assumed to succeed), no etcd or gate outage, and each action holds
a budget slot for ``action_duration`` seconds.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..config import Config, Rule
from ..engine import node_id
from ..fleet.rollout import selected
from ..policy import PlanRefused, Request, rule_request
from .model import Decision, Event, HostState
from .planning import blocks_planned

HOUR = 3600.0

UNKNOWABLE = (
    "kernel refusals (EBUSY, EPERM, ...): every write is assumed to succeed, so no block reaches quarantine",
    "pause files: no host is assumed paused",
    "etcd or Prometheus gate outages, and the gate's expressions (fleet.gate, rules[].gate): not evaluated",
    "how long actions take: each holds a budget slot for --assume.action-duration",
    "Alertmanager's re-notifications: an occurrence refused when it started firing is not retried",
    "valid_zones of single blocks and blocks offlined deliberately: the plan counts blocks by node and zone",
)


@dataclass
class _HostGuards:
    last_action: dict[str, float] = field(default_factory=dict)
    changes: deque = field(default_factory=deque)  # (ts, blocks)

    def blocks_since(self, since: float) -> int:
        while self.changes and self.changes[0][0] < since:
            self.changes.popleft()
        return sum(n for _, n in self.changes)


class _Window:
    """Starts in a sliding hour and slots held at once (one budget)."""

    def __init__(self, max_concurrent: int | None, per_hour: int | None) -> None:
        self.max_concurrent, self.per_hour = max_concurrent, per_hour
        self.starts: deque[float] = deque()
        self.last_start = float("-inf")  # waiters are served in order: starts never go back in time
        self.ends: list[float] = []  # heap of the end times of the actions holding a slot

    def free_at(self, t: float) -> float:
        """The earliest time >= t at which a slot is free (nothing is dropped: a probe
        later than the start finally chosen must not free slots for the next action)."""
        if self.max_concurrent is None:
            return t
        held = sorted(e for e in self.ends if e > t)
        if len(held) < self.max_concurrent:
            return t
        return held[len(held) - self.max_concurrent]

    def hour_full(self, t: float) -> bool:
        while self.starts and self.starts[0] <= t - HOUR:
            self.starts.popleft()
        return self.per_hour is not None and len(self.starts) >= self.per_hour

    def take(self, t: float, duration: float) -> None:
        while self.ends and self.ends[0] <= t:
            heapq.heappop(self.ends)
        heapq.heappush(self.ends, t + duration)
        self.starts.append(t)
        self.last_start = t


class Simulator:
    """Feed events in time order (``run``); decisions come out in the same order."""

    def __init__(self, cfg: Config, action_duration: float = 30.0) -> None:
        self.cfg = cfg
        self.duration = action_duration
        self.hosts: dict[str, _HostGuards] = {}
        b = cfg.fleet.budget
        self.fleet = _Window(b.max_concurrent, b.max_actions_per_hour) if b is not None else None
        self.wait = b.wait if b is not None else 0.0
        self.rule_windows = {
            r.name: _Window(r.budget.max_concurrent, r.budget.max_actions_per_hour) for r in cfg.rules if r.budget
        }
        self.running: list[float] = []  # end times of the actions running (peak of concurrency)
        self.peak = 0
        self.peak_at = 0.0

    def match(self, ev: Event) -> Rule | None:
        labels = ev.label_map
        for rule in self.cfg.rules:
            if rule.matches(ev.alertname, labels) and rule.on_resolved == ev.resolved:
                return rule
        return None

    def run(self, events: Iterable[Event], state_of: Callable[[Event], HostState | None]) -> Iterator[Decision]:
        for ev in events:
            rule = self.match(ev)
            if rule is not None:
                yield self.decide(ev, rule, state_of(ev))

    def request(self, rule: Rule, node: int | None) -> Request:
        return rule_request(rule, self.cfg.guards, node)

    def decide(self, ev: Event, rule: Rule, state: HostState | None) -> Decision:
        def refused(guard: str, detail: str = "", blocks: int = 0) -> Decision:
            return Decision(ev.at, ev.host, rule.name, rule.action, "refused", guard, blocks, detail, ev.at)

        g = self.cfg.guards
        node = None
        if rule.node_label:
            node = node_id(ev.label_map.get(rule.node_label))
            if node is None:
                return refused("node_label", f"no numeric {rule.node_label!r} label")
        hg = self.hosts.setdefault(ev.host, _HostGuards())
        cooldown = rule.cooldown if rule.cooldown is not None else g.cooldown
        last = hg.last_action.get(rule.name)
        if last is not None and cooldown > 0 and ev.at < last + cooldown:
            return refused("cooldown", f"acted {ev.at - last:.0f}s before")
        req = self.request(rule, node)
        try:
            n = blocks_planned(req, state)
        except PlanRefused as e:
            return refused(e.guard, e.detail)
        used = hg.blocks_since(ev.at - HOUR)
        if n > g.max_blocks_per_hour - used:
            return refused("max_blocks_per_hour", f"{n} planned, {g.max_blocks_per_hour - used} left", n)
        if g.dry_run:
            return Decision(ev.at, ev.host, rule.name, rule.action, "dry_run", "dry_run", n, "", ev.at)
        if not selected(ev.host, rule.name, rule.rollout):
            return Decision(ev.at, ev.host, rule.name, rule.action, "dry_run", "rollout", n, "", ev.at)
        start, why = self._budget(ev.at, rule.name)
        if start is None:
            return refused("budget", why, n)
        hg.last_action[rule.name] = start
        hg.changes.append((start, n))
        self._running(start)
        return Decision(start, ev.host, rule.name, rule.action, "act", "", n, "", ev.at)

    def _budget(self, t: float, rule: str) -> tuple[float | None, str]:
        """When the action would start under the fleet budget (waiting at most fleet.budget.wait), or None."""
        windows = [w for w in (self.fleet, self.rule_windows.get(rule)) if w is not None]
        if not windows:
            return t, ""
        start = max(t, *(w.last_start for w in windows))
        for _ in range(64):  # each round moves start to a later slot release; bounded
            later = max(w.free_at(start) for w in windows)
            if later == start:
                break
            start = later
        if start - t > self.wait:
            return None, f"no free slot within fleet.budget.wait ({self.wait:.0f}s)"
        if any(w.hour_full(start) for w in windows):
            return None, "max_actions_per_hour reached"
        for w in windows:
            w.take(start, self.duration)
        return start, ""

    def _running(self, start: float) -> None:
        while self.running and self.running[0] <= start:
            heapq.heappop(self.running)
        heapq.heappush(self.running, start + self.duration)
        if len(self.running) > self.peak:
            self.peak, self.peak_at = len(self.running), start
